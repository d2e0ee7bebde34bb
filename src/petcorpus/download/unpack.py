"""Safe unpacking of downloaded archives (zip and tar, plain or compressed).

Every member is checked on the archive's own names before anything is written:

- no absolute path, drive letter or ``..`` component; no device, fifo or other special file;
- no link, symbolic or hard (zip symlinks are marked by ``S_IFLNK`` in ``external_attr``),
  unless ``allow_links=True``; then a link is accepted only if its full resolution, following
  the other links of the same archive, stays inside the target, and no member is ever written
  through a link (a member whose parent chain holds a link is refused);
- an archive-wide cap on the expanded size: at most ``max_ratio`` times the archive's size on
  disk (archives expanding to no more than ``ratio_floor_bytes`` are exempt), at most
  ``max_total_bytes`` if set, and never more than the free space of the target's disk minus
  ``disk_margin_bytes``. The declared sizes are summed before extracting and the caps are
  enforced again while streaming, since a header can lie.

Members are written into a fresh staging folder beside the target (same disk), each parent
folder checked on disk for links, and the staging folder is renamed into place at the end.
A refused or failed archive leaves nothing behind: no staging folder, no partial file, no
parent folder created for it.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from petcorpus.atomic import TEMP_PREFIX
from petcorpus.errors import DownloadError, PetcorpusError, Reason, UnsafeArchiveError

__all__ = ["UnpackLimits", "remove_tree", "safe_extract"]

_CHUNK = 1 << 20
_MAX_LINK_TEXT = 4096
_MAX_HOPS = 40  # symbolic links followed in one resolution, as Linux's MAXSYMLINKS
_DRIVE = re.compile(r"^[A-Za-z]:")

# what a damaged archive raises while being read (gzip and bz2 raise OSError)
_READ_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    EOFError,
    OSError,
    zlib.error,
    lzma.LZMAError,
    RuntimeError,  # zipfile: an encrypted member
    NotImplementedError,  # zipfile: an unsupported compression method
)

Kind = Literal["file", "dir", "symlink", "hardlink"]


@dataclass(frozen=True, kw_only=True)
class UnpackLimits:
    """Caps on what one archive may expand to (against zip bombs and full disks).

    Parameters
    ----------
    max_ratio : float
        Largest ratio of the archive's total expanded size to its size on disk. The
        corpora's archives expand far less (DICOM 2-10:1, NIfTI .nii.gz about 1:1); the
        deflate format itself cannot exceed about 1,030:1.
    ratio_floor_bytes : int
        Archives whose total expanded size is at most this are exempt from ``max_ratio``
        (a DICOM SEG of mostly empty frames compresses over 200:1 but stays small).
    max_total_bytes : int, optional
        Largest total expanded size in bytes, whatever the ratio; None for no fixed cap.
    disk_margin_bytes : int
        Space to leave free on the target's disk: the expanded size may not exceed the free
        space minus this margin.
    """

    max_ratio: float = 200.0
    ratio_floor_bytes: int = 64 << 20  # 64 MiB
    max_total_bytes: int | None = None
    disk_margin_bytes: int = 1 << 30  # 1 GiB

    def __post_init__(self) -> None:
        if not self.max_ratio > 0:
            raise ValueError(f"max_ratio must be > 0, got {self.max_ratio}")
        if self.max_total_bytes is not None and self.max_total_bytes < 0:
            raise ValueError(f"max_total_bytes must be >= 0, got {self.max_total_bytes}")


@dataclass(frozen=True)
class _Member:
    name: str  # as written in the archive, for messages
    parts: tuple[str, ...]  # normalised path inside the target
    kind: Kind
    size: int  # declared expanded size (files only)
    link: str | None  # symlink text, or a hard link's target name
    handle: Any  # ZipInfo or TarInfo


@dataclass(frozen=True)
class _Cap:
    budget: int  # bytes the archive may expand to
    why: str  # what the cap is, for the message


def _unsafe(archive: Path, member: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"refusing to unpack: member {member!r} {why}", path=archive)


def _corrupt(archive: Path, why: str, exc: BaseException) -> DownloadError:
    return DownloadError(f"{why} ({exc})", path=archive, reason=Reason.CORRUPT_FILE)


def _is_absolute(name: str) -> bool:
    return name.startswith("/") or bool(_DRIVE.match(name))


def _parts(archive: Path, name: str) -> tuple[str, ...]:
    """The member's path components, refusing absolute paths and ``..``."""
    if "\x00" in name:
        raise _unsafe(archive, name, "has a NUL character in its name")
    posix = name.replace("\\", "/")  # a backslash is a separator on Windows: refuse tricks
    if _is_absolute(posix):
        raise _unsafe(archive, name, "has an absolute path or a drive letter")
    parts = tuple(p for p in posix.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _unsafe(archive, name, "has a '..' component")
    return parts


# -- reading the two archive formats -------------------------------------------------------


class _Reader:
    """Members and data of a zip or tar archive, behind one small interface."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        try:
            if zipfile.is_zipfile(archive):
                self._zip = zipfile.ZipFile(archive)
            elif tarfile.is_tarfile(archive):
                self._tar = tarfile.TarFile.open(archive, "r:*")
            else:
                raise DownloadError(
                    "not a zip or tar archive", path=archive, reason=Reason.CORRUPT_FILE
                )
        except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
            if isinstance(exc, DownloadError):
                raise
            raise _corrupt(archive, "not a valid archive", exc) from exc

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._tar is not None:
            self._tar.close()

    def members(self) -> list[_Member]:
        try:
            if self._zip is not None:
                return [m for i in self._zip.infolist() if (m := self._zip_member(i))]
            assert self._tar is not None
            return [m for t in self._tar.getmembers() if (m := self._tar_member(t))]
        except PetcorpusError:
            raise
        except _READ_ERRORS as exc:
            raise _corrupt(self.archive, "cannot list the archive", exc) from exc

    def _zip_member(self, info: zipfile.ZipInfo) -> _Member | None:
        parts = _parts(self.archive, info.filename)
        if not parts:
            return None
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            return _Member(info.filename, parts, "symlink", 0, self._zip_link(info), info)
        if info.create_system == 3 and kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _unsafe(self.archive, info.filename, "is a device, fifo or other special file")
        if info.is_dir() or kind == stat.S_IFDIR:
            return _Member(info.filename, parts, "dir", 0, None, info)
        return _Member(info.filename, parts, "file", info.file_size, None, info)

    def _zip_link(self, info: zipfile.ZipInfo) -> str:
        assert self._zip is not None
        try:
            with self._zip.open(info) as fh:
                data = fh.read(_MAX_LINK_TEXT + 1)
        except _READ_ERRORS as exc:
            raise _corrupt(self.archive, f"member {info.filename!r} is corrupt", exc) from exc
        if len(data) > _MAX_LINK_TEXT:
            raise _unsafe(self.archive, info.filename, "is a link with an over-long target")
        return data.decode("utf-8", "replace")

    def _tar_member(self, info: tarfile.TarInfo) -> _Member | None:
        parts = _parts(self.archive, info.name)
        if not parts:
            return None
        if info.issym():
            return _Member(info.name, parts, "symlink", 0, info.linkname, info)
        if info.islnk():
            return _Member(info.name, parts, "hardlink", 0, info.linkname, info)
        if info.isdir():
            return _Member(info.name, parts, "dir", 0, None, info)
        if info.isreg():
            return _Member(info.name, parts, "file", info.size, None, info)
        raise _unsafe(self.archive, info.name, "is a device, fifo or other special file")

    def open(self, member: _Member) -> IO[bytes]:
        fh: IO[bytes] | None
        try:
            if self._zip is not None:
                fh = self._zip.open(member.handle)
            else:
                assert self._tar is not None
                fh = self._tar.extractfile(member.handle)
        except _READ_ERRORS as exc:
            raise _corrupt(self.archive, f"member {member.name!r} is corrupt", exc) from exc
        if fh is None:  # pragma: no cover - regular members always have data
            raise _corrupt(self.archive, f"member {member.name!r} has no data", OSError())
        return fh


# -- checks on the archive's own names, before anything is written -------------------------


def _resolve(
    start: tuple[str, ...], text: str, symlinks: dict[tuple[str, ...], str]
) -> tuple[str, ...] | None:
    """Where ``text``, read from folder ``start``, leads inside the target following the
    archive's symlinks like the kernel does; None if it leaves the target (or loops)."""
    cur = list(start)
    stack = list(reversed(text.replace("\\", "/").split("/")))
    if _is_absolute(text.replace("\\", "/")):
        return None
    hops = 0
    while stack:
        part = stack.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not cur:
                return None
            cur.pop()
            continue
        cur.append(part)
        target = symlinks.get(tuple(cur))
        if target is not None:
            hops += 1
            if hops > _MAX_HOPS or _is_absolute(target.replace("\\", "/")):
                return None
            cur.pop()
            stack.extend(reversed(target.replace("\\", "/").split("/")))
    return tuple(cur)


def _check_names(archive: Path, members: list[_Member], allow_links: bool) -> None:
    """Refuse links (unless allowed and inside), writes through links, kind conflicts."""
    links = [m for m in members if m.kind in ("symlink", "hardlink")]
    if links and not allow_links:
        m = links[0]
        what = "a symbolic link" if m.kind == "symlink" else "a hard link"
        raise _unsafe(
            archive,
            m.name,
            f"is {what} (to {m.link!r}); archives holding links are refused "
            "(allow_links=True or --allow-links accepts links that stay inside the target)",
        )
    symlinks = {m.parts: m.link or "" for m in members if m.kind == "symlink"}
    link_names = {m.parts for m in links}
    kinds: dict[tuple[str, ...], Kind] = {}
    folders: set[tuple[str, ...]] = set()  # every proper prefix of a member seen so far
    earlier: dict[tuple[str, ...], str] = {}  # the symlinks seen so far
    for m in members:
        for i in range(1, len(m.parts)):
            prefix = m.parts[:i]
            if prefix in link_names:
                where = "/".join(prefix)
                raise _unsafe(archive, m.name, f"would be written through the link {where!r}")
            if kinds.get(prefix) == "file":
                raise _unsafe(archive, m.name, f"is inside {'/'.join(prefix)!r}, a file")
        seen = kinds.get(m.parts)
        if seen is not None and (seen != m.kind or m.kind in ("symlink", "hardlink")):
            raise _unsafe(archive, m.name, f"appears twice (as a {seen} and as a {m.kind})")
        if m.kind != "dir" and m.parts in folders:
            raise _unsafe(archive, m.name, f"is a {m.kind} but also a folder of other members")
        if m.kind == "symlink" and _resolve(m.parts[:-1], m.link or "", symlinks) is None:
            why = f"is a link to {m.link!r}, which leads outside the target (or loops)"
            raise _unsafe(archive, m.name, why)
        if m.kind == "hardlink":  # resolved as the writer will: through earlier links
            target = _resolve((), m.link or "", earlier)
            if target is None or kinds.get(target) != "file":
                raise _unsafe(
                    archive, m.name, f"is a hard link to {m.link!r}, not an earlier file inside"
                )
        kinds[m.parts] = m.kind
        if m.kind == "symlink":
            earlier[m.parts] = m.link or ""
        folders.update(m.parts[:i] for i in range(1, len(m.parts)))


def _free_space(folder: Path) -> int:
    for p in (folder, *folder.parents):
        if p.exists():
            return shutil.disk_usage(p).free
    return shutil.disk_usage(Path.cwd()).free  # pragma: no cover


def _cap(archive: Path, target_parent: Path, limits: UnpackLimits) -> _Cap:
    """The archive-wide budget: the smallest of the ratio, fixed and free-disk caps."""
    size = archive.stat().st_size
    by_ratio = max(int(limits.max_ratio * size), limits.ratio_floor_bytes)
    caps = [
        _Cap(
            by_ratio,
            f"{limits.max_ratio:g} times the archive's {size} bytes ({by_ratio} bytes): a zip "
            "bomb? (raise the cap with --max-ratio or UnpackLimits.max_ratio)",
        )
    ]
    if limits.max_total_bytes is not None:
        caps.append(_Cap(limits.max_total_bytes, f"the cap of {limits.max_total_bytes} bytes"))
    free = _free_space(target_parent)
    room = max(0, free - limits.disk_margin_bytes)
    caps.append(
        _Cap(
            room,
            f"the {free} bytes free on the target's disk minus a margin of "
            f"{limits.disk_margin_bytes} bytes",
        )
    )
    return min(caps, key=lambda c: c.budget)


def _check_sizes(archive: Path, members: list[_Member], cap: _Cap) -> None:
    total = 0
    for m in members:
        total += m.size
        if total > cap.budget:
            raise _unsafe(
                archive, m.name, f"takes the expanded size to {total} bytes, over {cap.why}"
            )


# -- writing into the staging folder -------------------------------------------------------


class _Writer:
    """Writes checked members under ``stage``, never through a link (checked on disk)."""

    def __init__(self, archive: Path, reader: _Reader, stage: Path, cap: _Cap) -> None:
        self.archive, self.reader, self.stage, self.cap = archive, reader, stage, cap
        self.left = cap.budget
        self._dirs: set[tuple[str, ...]] = {()}
        self._symlinks: dict[tuple[str, ...], str] = {}

    def _folder(self, m: _Member, parts: tuple[str, ...]) -> Path:
        """Create (or check) the folder ``parts``; refuse a link or a file on the way."""
        path = self.stage
        for i, part in enumerate(parts, start=1):
            path = path / part
            if parts[:i] in self._dirs:
                continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                path.mkdir()
            else:
                if stat.S_ISLNK(st.st_mode):
                    why = f"would be written through the link {path}"
                    raise _unsafe(self.archive, m.name, why)
                if not stat.S_ISDIR(st.st_mode):
                    why = f"needs a folder where {path} is a file"
                    raise _unsafe(self.archive, m.name, why)
            self._dirs.add(parts[:i])
        return path

    def write(self, m: _Member) -> Path | None:
        if m.kind == "dir":
            self._folder(m, m.parts)
            return None
        out = self._folder(m, m.parts[:-1]) / m.parts[-1]
        if m.kind == "symlink":
            os.symlink(m.link or "", out)
            self._symlinks[m.parts] = m.link or ""
            return None
        if m.kind == "hardlink":  # to an earlier file, checked by _check_names
            src = self.stage.joinpath(*_resolve((), m.link or "", self._symlinks) or ())
            try:
                os.link(src, out, follow_symlinks=False)
            except OSError:
                shutil.copyfile(src, out, follow_symlinks=False)
            return out
        self._copy(m, out)
        return out

    def _copy(self, m: _Member, out: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            out.unlink()  # a duplicate member: the later one wins
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(out, flags, 0o666)
        got = 0
        with open(fd, "wb") as dst, self.reader.open(m) as src:
            while chunk := self._read(m, src):
                got += len(chunk)
                if got > m.size:
                    why = f"holds more than its declared {m.size} bytes"
                    raise _unsafe(self.archive, m.name, why)
                if got > self.left:
                    why = f"takes the expanded size over {self.cap.why}"
                    raise _unsafe(self.archive, m.name, why)
                dst.write(chunk)
        self.left -= got

    def _read(self, m: _Member, src: IO[bytes]) -> bytes:
        try:
            return src.read(_CHUNK)
        except _READ_ERRORS as exc:
            raise _corrupt(self.archive, f"member {m.name!r} is corrupt", exc) from exc


# -- moving the staging folder into place --------------------------------------------------


def _plan_merge(archive: Path, stage: Path, target: Path, moves: list[tuple[Path, Path]]) -> None:
    """Plan moving ``stage``'s entries into an existing ``target``; refuse links on disk."""
    for entry in sorted(stage.iterdir()):
        dest = target / entry.name
        try:
            st = os.lstat(dest)
        except FileNotFoundError:
            moves.append((entry, dest))
            continue
        is_dir = entry.is_dir() and not entry.is_symlink()
        if stat.S_ISLNK(st.st_mode) and is_dir:
            raise UnsafeArchiveError(
                f"refusing to unpack into {dest}: it is a link already there, and nothing is "
                "written through a link",
                path=archive,
            )
        if stat.S_ISDIR(st.st_mode) and is_dir:
            _plan_merge(archive, entry, dest, moves)
        elif stat.S_ISDIR(st.st_mode):
            raise UnsafeArchiveError(f"cannot unpack a file over the folder {dest}", path=archive)
        else:
            moves.append((entry, dest))  # replaces a file or a link itself, not its target


def _install(archive: Path, stage: Path, target: Path) -> None:
    if not os.path.lexists(target):
        os.rename(stage, target)
        return
    moves: list[tuple[Path, Path]] = []
    _plan_merge(archive, stage, target, moves)
    for src, dest in moves:
        os.replace(src, dest)
    shutil.rmtree(stage)  # only the emptied folders are left


def safe_extract(
    archive: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    limits: UnpackLimits | None = None,
    allow_links: bool = False,
) -> list[Path]:
    """Extract a zip or tar ``archive`` under ``target`` after checking every member.

    Parameters
    ----------
    archive : str or PathLike
        A zip file, or a tar file (plain, gzip, bzip2 or xz).
    target : str or PathLike
        Folder to extract into (created if missing, merged into if it exists); nothing is
        written outside it.
    limits : UnpackLimits, optional
        Caps on the expanded size (default ``UnpackLimits()``: 200:1 of the archive's size
        beyond 64 MiB, and the free disk minus 1 GiB).
    allow_links : bool
        Accept symbolic and hard links whose resolution stays inside ``target``; by default
        any link refuses the archive.

    Returns
    -------
    list of Path
        The regular files written (under ``target``), in archive order.

    Raises
    ------
    UnsafeArchiveError
        A :class:`DownloadError` with reason ``UNSAFE_ARCHIVE`` naming the archive and the
        member; nothing is left behind.
    DownloadError
        With reason ``CORRUPT_FILE`` when the archive is not a valid zip or tar or a member
        fails its CRC; nothing is left behind.
    """
    archive = Path(archive)
    target = Path(target)
    limits = limits or UnpackLimits()
    home = target.resolve()  # DEST is the user's: follow its own links, if any
    with contextlib.closing(_Reader(archive)) as reader:
        members = reader.members()
        _check_names(archive, members, allow_links)
        cap = _cap(archive, home.parent, limits)
        _check_sizes(archive, members, cap)
        return _extract(archive, reader, members, cap, home, target)


def _extract(
    archive: Path,
    reader: _Reader,
    members: list[_Member],
    cap: _Cap,
    home: Path,
    target: Path,
) -> list[Path]:
    """Write the checked members into a staging folder beside ``home``, then move it in."""
    created = [p for p in (home.parent, *home.parent.parents) if not p.exists()]
    stage: Path | None = None
    done = False
    try:
        home.parent.mkdir(parents=True, exist_ok=True)
        # the atomic writers' temporary name (.tmp-<name>-<random>), made unique by mkdtemp
        stage = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{home.name}-", dir=home.parent))
        writer = _Writer(archive, reader, stage, cap)
        rels: dict[tuple[str, ...], None] = {}
        for m in members:
            if writer.write(m) is not None:
                rels.pop(m.parts, None)
                rels[m.parts] = None
        _install(archive, stage, home)
        done = True
    except OSError as exc:
        if isinstance(exc, DownloadError):
            raise
        raise DownloadError(f"cannot unpack into {target} ({exc})", path=archive) from exc
    finally:
        if not done:
            if stage is not None:
                shutil.rmtree(stage, ignore_errors=True)
            for p in sorted(created, key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    p.rmdir()
    return [target.joinpath(*parts) for parts in rels]


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove a folder tree if it exists (used for staging folders)."""
    shutil.rmtree(path, ignore_errors=True)
