"""Safe unpacking of downloaded zip archives.

Every member is checked before anything is written: no absolute paths or drive letters,
no ``..`` components, no symbolic links that point outside the target, no device or
special files, total declared size under a cap and no member whose compression ratio
betrays a zip bomb. Members are then streamed with a byte budget (headers can lie) into a
temporary name beside their final one and renamed into place, so an interrupted unpack
leaves no half-written file under a final name.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from petcorpus.errors import DownloadError, Reason

__all__ = ["UnpackLimits", "safe_extract"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class UnpackLimits:
    """Caps against zip bombs.

    Parameters
    ----------
    max_total_bytes : int
        Largest total expanded size accepted for one archive.
    max_ratio : float
        Largest expanded/compressed ratio accepted for a member larger than
        ``ratio_floor_bytes`` (NIfTI .nii.gz and DICOM compress far less than 100:1).
    ratio_floor_bytes : int
        Members smaller than this are exempt from the ratio check.
    """

    max_total_bytes: int = 2 << 40  # 2 TiB
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 1 << 20


def _unsafe(archive: Path, member: str, why: str) -> DownloadError:
    return DownloadError(
        f"refusing to unpack: member {member!r} {why}", path=archive, reason=Reason.UNSAFE_ARCHIVE
    )


def _member_path(archive: Path, info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename.replace("\\", "/")
    p = PurePosixPath(name)
    if name.startswith("/") or p.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise _unsafe(archive, info.filename, "has an absolute path")
    if ".." in p.parts:
        raise _unsafe(archive, info.filename, "has a '..' component")
    return p


def _mode(info: zipfile.ZipInfo) -> int:
    return (info.external_attr >> 16) & 0xFFFF if info.create_system == 3 else 0


def _check(archive: Path, zf: zipfile.ZipFile, target: Path, limits: UnpackLimits):
    plan: list[tuple[zipfile.ZipInfo, PurePosixPath, str, str | None]] = []
    total = 0
    root = target.resolve()
    for info in zf.infolist():
        rel = _member_path(archive, info)
        if not rel.parts or rel.parts == (".",):
            continue
        mode = _mode(info)
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            link = zf.read(info).decode("utf-8", "replace")
            resolved = (root / rel.parent / link).resolve()
            if os.path.isabs(link) or not resolved.is_relative_to(root):
                raise _unsafe(archive, info.filename, f"is a link to {link!r} outside the target")
            plan.append((info, rel, "link", link))
            continue
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _unsafe(archive, info.filename, "is a device or special file")
        if info.is_dir():
            plan.append((info, rel, "dir", None))
            continue
        total += info.file_size
        if total > limits.max_total_bytes:
            raise _unsafe(
                archive,
                info.filename,
                f"takes the expanded size over the cap of {limits.max_total_bytes} bytes",
            )
        if info.file_size > limits.ratio_floor_bytes:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_ratio:
                raise _unsafe(
                    archive,
                    info.filename,
                    f"expands {ratio:.0f}:1 (cap {limits.max_ratio:.0f}:1), a zip bomb",
                )
        plan.append((info, rel, "file", None))
    return plan


def safe_extract(
    archive: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    limits: UnpackLimits | None = None,
) -> list[Path]:
    """Extract ``archive`` under ``target`` after checking every member.

    Parameters
    ----------
    archive : str or PathLike
        A zip file.
    target : str or PathLike
        Folder to extract into (created if missing); nothing is written outside it.
    limits : UnpackLimits, optional
        Size and ratio caps.

    Returns
    -------
    list of Path
        The regular files written, in archive order.

    Raises
    ------
    DownloadError
        With reason ``UNSAFE_ARCHIVE`` naming the member, before anything is written, or
        reason ``CORRUPT_FILE`` when the archive is not a valid zip or a member fails its CRC.
    """
    archive = Path(archive)
    target = Path(target)
    limits = limits or UnpackLimits()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(
            f"not a valid zip archive ({exc})", path=archive, reason=Reason.CORRUPT_FILE
        ) from exc
    written: list[Path] = []
    with zf:
        target.mkdir(parents=True, exist_ok=True)
        plan = _check(archive, zf, target, limits)
        budget = limits.max_total_bytes
        for info, rel, kind, link in plan:
            out = target.joinpath(*rel.parts)
            if kind == "dir":
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            if kind == "link":
                tmp = out.with_name(out.name + ".unpack-tmp")
                tmp.unlink(missing_ok=True)
                os.symlink(link, tmp)
                os.replace(tmp, out)
                continue
            tmp = out.with_name(out.name + ".unpack-tmp")
            try:
                with zf.open(info) as src, open(tmp, "wb") as dst:
                    declared = info.file_size
                    got = 0
                    while chunk := src.read(_CHUNK):
                        got += len(chunk)
                        if got > declared or got > budget:
                            raise _unsafe(
                                archive, info.filename, "expands beyond its declared size"
                            )
                        dst.write(chunk)
                budget -= got
                os.replace(tmp, out)
            except zipfile.BadZipFile as exc:
                tmp.unlink(missing_ok=True)
                raise DownloadError(
                    f"member {info.filename!r} is corrupt ({exc})",
                    path=archive,
                    reason=Reason.CORRUPT_FILE,
                ) from exc
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            written.append(out)
    return written


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove a folder tree if it exists (used for staging folders)."""
    shutil.rmtree(path, ignore_errors=True)
