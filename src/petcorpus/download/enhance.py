"""ENHANCE.PET: the file table (one place, overridable) and the downloader.

The corpus has moved host several times, so every URL comes from one *file table*, a small
JSON document users can write or fetch themselves and pass with ``--table`` (or the
``PETCORPUS_ENHANCE_TABLE`` environment variable); ``--base-url`` (or
``PETCORPUS_ENHANCE_URL``) swaps only the host. ``petcorpus download enhance-table`` prints
the built-in table as a starting point. Format::

    {"release": "v2", "base_url": "https://host/path",
     "files": [{"name": "CT-details.xlsx", "kind": "metadata",
                "url": "optional absolute URL (else base_url/name)",
                "size": null, "sha256": null, "md5": null, "group": null}, ...]}

or, for a per-case layout (the first release on the AWS Open Data bucket)::

    {"release": "v1", "base_url": "https://enhance-pet-1-6k.s3.us-west-2.amazonaws.com",
     "layout": "per-case", "cases": 1597}

Releases:

- ``v2`` (current, 1,683 cases, ~266 GB): 13 files: ``CT-details.xlsx``,
  ``PT-details.xlsx``, ``labels.json``, one label zip per group and three image zips. The
  names of the image zips and the host are not pinned here (no public code gave them at the
  time of writing): pass a table or a base URL.
- ``v1`` (1,597 cases): per-case NIfTI files on the public AWS bucket
  ``enhance-pet-1-6k`` (``imaging-data/images/{CT,PT}/NNNN.nii.gz``,
  ``imaging-data/ground-truth/<Group>/NNNN.nii.gz``) plus the three metadata files.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petcorpus.download.ledger import Ledger
from petcorpus.download.transfer import (
    FileSpec,
    RetryPolicy,
    TransferReport,
    fetch_all,
)
from petcorpus.download.unpack import UnpackLimits, remove_tree, safe_extract
from petcorpus.errors import CorruptFileError, DownloadError, PetcorpusError, Reason
from petcorpus.labels import GROUPS

__all__ = [
    "ENHANCE_GROUPS",
    "CountReport",
    "builtin_table",
    "check_counts",
    "download_enhance",
    "enhance_specs",
    "load_table",
    "validate_table",
]

#: The seven label groups, one zip each (the one list lives in petcorpus.labels).
ENHANCE_GROUPS = GROUPS
_METADATA = ("CT-details.xlsx", "PT-details.xlsx", "labels.json")
_V1_BASE = "https://enhance-pet-1-6k.s3.us-west-2.amazonaws.com"
_V1_CASES = 1597
_STAGE = ".petcorpus-download"


def builtin_table(release: str = "v2") -> dict[str, Any]:
    """The built-in file table of a release (a fresh dict; see the module docstring)."""
    if release == "v1":
        return {"release": "v1", "base_url": _V1_BASE, "layout": "per-case", "cases": _V1_CASES}
    if release != "v2":
        raise ValueError(f"release must be 'v1' or 'v2', got {release!r}")
    files: list[dict[str, Any]] = [{"name": n, "kind": "metadata"} for n in _METADATA]
    files += [{"name": f"{g}.zip", "kind": "labels", "group": g} for g in ENHANCE_GROUPS]
    files += [{"name": f"images-{i}.zip", "kind": "images"} for i in (1, 2, 3)]
    return {"release": "v2", "base_url": None, "files": files}


def load_table(
    path: str | os.PathLike[str] | None = None,
    *,
    release: str = "v2",
    base_url: str | None = None,
) -> dict[str, Any]:
    """The file table: ``path`` (or ``$PETCORPUS_ENHANCE_TABLE``), else the built-in one.

    ``base_url`` (or ``$PETCORPUS_ENHANCE_URL``) replaces the table's host.
    """
    path = path or os.environ.get("PETCORPUS_ENHANCE_TABLE") or None
    if path:
        try:
            table = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise CorruptFileError(
                f"cannot read the ENHANCE file table ({exc})", path=path
            ) from exc
        validate_table(table, source=path)
    else:
        table = builtin_table(release)
    base_url = base_url or os.environ.get("PETCORPUS_ENHANCE_URL") or None
    if base_url:
        _check_url(base_url, "--base-url (or PETCORPUS_ENHANCE_URL)", None)
        table = {**table, "base_url": base_url}
    return table


_URL_SCHEMES = ("http", "https", "file")
_DRIVE = re.compile(r"^[A-Za-z]:")
_HEX = re.compile(r"^[0-9a-fA-F]+$")


def _bad_entry(source: str | os.PathLike[str] | None, what: str) -> PetcorpusError:
    return PetcorpusError(
        f"bad ENHANCE file table: {what}", path=source, reason=Reason.INVALID_VALUE
    )


def _check_url(url: object, what: str, source: str | os.PathLike[str] | None) -> None:
    ok = isinstance(url, str) and url.isprintable() and " " not in url
    if ok:
        parts = urllib.parse.urlsplit(str(url))
        ok = parts.scheme in _URL_SCHEMES and (parts.scheme == "file" or bool(parts.netloc))
    if not ok:
        raise _bad_entry(
            source, f"{what} has the URL {url!r}; expected http://, https:// or file://"
        )


def _check_name(name: object, where: str, source: str | os.PathLike[str] | None) -> str:
    """A file name of the table: a plain name that stays in DEST."""
    if (
        not isinstance(name, str)
        or not name.strip()
        or name in (".", "..")
        or any(c in name for c in "/\\\0")
        or _DRIVE.match(name)
        or not name.isprintable()
    ):
        raise _bad_entry(
            source,
            f"{where} is named {name!r}; a name must be a plain file name "
            "(no '/', '\\', '..', drive letter or control character)",
        )
    return name


def validate_table(table: object, *, source: str | os.PathLike[str] | None = None) -> None:
    """Check an ENHANCE file table before anything is fetched.

    File names and groups must be plain names (no path separator, ``..``, drive letter or
    control character; no duplicate file), URLs ``http(s)://`` or ``file://``, sizes non-negative
    integers and checksums hex strings.

    Raises
    ------
    PetcorpusError
        With reason ``INVALID_VALUE``, one line naming ``source`` (the table file) and the
        entry.
    """
    if not isinstance(table, dict) or ("files" not in table and "layout" not in table):
        raise _bad_entry(source, "an ENHANCE file table is a JSON object with 'files' or 'layout'")
    if table.get("base_url") is not None:
        _check_url(table["base_url"], "'base_url'", source)
    if "files" not in table:
        if table["layout"] != "per-case":
            raise _bad_entry(source, f"unknown layout {table['layout']!r}; expected 'per-case'")
        for key, low, high in (("cases", 1, None), ("case_digits", 1, 9)):
            value = table.get(key)
            if value is not None and (
                not isinstance(value, int) or value < low or (high is not None and value > high)
            ):
                raise _bad_entry(source, f"{key!r} must be an integer >= {low}, got {value!r}")
        return
    files = table["files"]
    if not isinstance(files, list):
        raise _bad_entry(source, "'files' must be a list of entries")
    seen: set[str] = set()
    for i, f in enumerate(files, start=1):
        where = f"entry {i}"
        if not isinstance(f, dict):
            raise _bad_entry(source, f"{where} is not an object with a 'name'")
        name = _check_name(f.get("name"), where, source)
        where = f"entry {i} ({name!r})"
        if name in seen:
            raise _bad_entry(source, f"{where} appears twice")
        seen.add(name)
        if f.get("url") is not None:
            _check_url(f["url"], where, source)
        if f.get("group") is not None:  # unpacked labels go to ground-truth/<group>/
            _check_name(f["group"], f"{where}'s group", source)
        if not isinstance(f.get("kind", ""), str):
            raise _bad_entry(source, f"{where} has the kind {f['kind']!r}; expected a string")
        size = f.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise _bad_entry(source, f"{where} has the size {size!r}; expected bytes >= 0")
        for algo, width in (("sha256", 64), ("md5", 32)):
            digest = f.get(algo)
            if digest is not None and not (
                isinstance(digest, str) and len(digest) == width and _HEX.match(digest)
            ):
                raise _bad_entry(
                    source, f"{where} has the {algo} {digest!r}; expected {width} hex digits"
                )


def _files(table: dict[str, Any], cases: int | None) -> list[dict[str, Any]]:
    if table.get("layout") == "per-case":
        n = int(table.get("cases", _V1_CASES))
        n = min(n, cases) if cases is not None else n
        digits = int(table.get("case_digits", 4))
        files: list[dict[str, Any]] = [{"name": m, "kind": "metadata"} for m in _METADATA]
        ids = [f"{i:0{digits}d}" for i in range(1, n + 1)]
        for mod in ("CT", "PT"):
            files += [
                {"name": f"imaging-data/images/{mod}/{c}.nii.gz", "kind": "images"} for c in ids
            ]
        for g in ENHANCE_GROUPS:
            files += [
                {"name": f"imaging-data/ground-truth/{g}/{c}.nii.gz", "kind": "labels", "group": g}
                for c in ids
            ]
        return files
    return list(table["files"])


def _selected(f: dict[str, Any], only: Sequence[str]) -> bool:
    if not only:
        return True
    keys = {str(f.get("kind", "")).lower(), str(f.get("group") or "").lower()}
    return bool(keys & {o.lower() for o in only})


def enhance_specs(
    table: dict[str, Any],
    *,
    only: Sequence[str] = (),
    cases: int | None = None,
) -> list[FileSpec]:
    """The files of ``table`` selected by ``only`` (metadata, labels, images or group names).

    Raises
    ------
    DownloadError
        When a file has no URL and the table no base URL (the v2 host is not pinned).
    ValueError
        When ``only`` names nothing known.
    """
    known = {"metadata", "labels", "images", *(g.lower() for g in ENHANCE_GROUPS)}
    unknown = [o for o in only if o.lower() not in known]
    if unknown:
        raise ValueError(f"--only takes metadata, labels, images or a group name; got {unknown}")
    base = (table.get("base_url") or "").rstrip("/")
    specs = []
    for f in _files(table, cases):
        if not _selected(f, only):
            continue
        url = f.get("url")
        if not url:
            if not base:
                raise DownloadError(
                    f"no URL for {f['name']}: the {table.get('release', '?')} host is not "
                    "pinned; pass --base-url URL or --table FILE.json (docs/download.md)"
                )
            url = f"{base}/{urllib.parse.quote(f['name'])}"
        specs.append(FileSpec(url, f["name"], f.get("size"), f.get("sha256"), f.get("md5")))
    return specs


def _kind_of(table: dict[str, Any], name: str) -> dict[str, Any]:
    for f in table.get("files", []):
        if f["name"] == name:
            return f
    return {"name": name, "kind": "metadata"}


def _unpack_one(
    zip_path: Path,
    dest: Path,
    meta: dict[str, Any],
    limits: UnpackLimits | None,
    allow_links: bool = False,
) -> int:
    """Unpack one ENHANCE zip into ``imaging-data/{images,ground-truth}``; returns files."""
    kind = meta.get("kind")
    root = dest / "imaging-data" / ("ground-truth" if kind == "labels" else "images")
    stage = dest / _STAGE / "unpack" / zip_path.name
    remove_tree(stage)
    files = safe_extract(zip_path, stage, limits=limits, allow_links=allow_links)
    group = meta.get("group")
    for f in files:
        parts = f.relative_to(stage).parts
        if kind == "labels" and group:  # masks are flat per group: <Group>/NNNN.nii.gz
            parts = (group, parts[-1])
        else:  # keep from the last CT*/PT* folder (images) or after an anchor folder
            anchor = "ground-truth" if kind == "labels" else "images"
            modal = [i for i, p in enumerate(parts[:-1]) if p[:2].upper() in ("CT", "PT")]
            if kind != "labels" and modal:
                parts = parts[modal[-1] :]
            elif anchor in parts:
                parts = parts[len(parts) - parts[::-1].index(anchor) :]
        out = root.joinpath(*parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, out)
    remove_tree(stage)
    return len(files)


@dataclass
class CountReport:
    """Masks per group against the cases that have images (one mask per case per group)."""

    cases: int
    groups: dict[str, int] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    extra: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every group present has exactly one mask per case."""
        return not any(self.missing.values()) and not any(self.extra.values())


_CASE = re.compile(r"^(.+?)\.nii(\.gz)?$")


def _ids(folder: Path) -> set[str]:
    return {m.group(1) for p in folder.glob("*.nii*") if (m := _CASE.match(p.name))}


def check_counts(dest: str | os.PathLike[str]) -> CountReport:
    """Count masks per group under ``dest/imaging-data`` and compare them to the cases.

    Cases are the IDs of the CT images (``images/CT*/NNNN.nii.gz``); with no images, the
    union of the groups' IDs.
    """
    data = Path(dest) / "imaging-data"
    ct: set[str] = set()
    for folder in sorted((data / "images").glob("CT*")):
        ct |= _ids(folder)
    groups = {
        g: _ids(data / "ground-truth" / g)
        for g in ENHANCE_GROUPS
        if (data / "ground-truth" / g).is_dir()
    }
    cases = ct if ct else set().union(*groups.values())
    report = CountReport(cases=len(cases))
    for g, ids in groups.items():
        report.groups[g] = len(ids)
        report.missing[g] = sorted(cases - ids)
        report.extra[g] = sorted(ids - cases)
    return report


def download_enhance(
    dest: str | os.PathLike[str],
    *,
    release: str = "v2",
    only: Sequence[str] = (),
    table: str | os.PathLike[str] | dict[str, Any] | None = None,
    base_url: str | None = None,
    cases: int | None = None,
    unpack: bool = False,
    keep_zips: bool = True,
    workers: int = 4,
    policy: RetryPolicy | None = None,
    verify: bool = False,
    progress: bool = False,
    limits: UnpackLimits | None = None,
    allow_links: bool = False,
) -> TransferReport:
    """Download ENHANCE.PET into ``dest`` under the files' own names; optionally unpack.

    Parameters
    ----------
    dest : str or PathLike
        Target folder (created).
    release : {"v2", "v1"}
        Which built-in table to use when ``table`` is not given.
    only : sequence of str
        Any of ``metadata``, ``labels``, ``images`` or group names; empty means all.
    table : path or dict, optional
        A file table overriding the built-in one.
    base_url : str, optional
        Replaces the table's host.
    cases : int, optional
        Per-case layout only: fetch the first ``cases`` cases.
    unpack : bool
        Unpack the zips safely into ``imaging-data/{images,ground-truth}``.
    keep_zips : bool
        Keep the zips after unpacking (a re-run then skips them by the ledger either way).
    limits : UnpackLimits, optional
        Caps on what each zip may expand to (see :func:`~petcorpus.download.safe_extract`).
    allow_links : bool
        Accept links inside the zips that stay inside their folder (refused by default).

    Returns
    -------
    TransferReport
    """
    dest = Path(dest)
    tbl = (
        table if isinstance(table, dict) else load_table(table, release=release, base_url=base_url)
    )
    if isinstance(table, dict):
        validate_table(table)
        if base_url:
            _check_url(base_url, "base_url", None)
            tbl = {**tbl, "base_url": base_url}
    specs = enhance_specs(tbl, only=only, cases=cases)
    ledger = Ledger(dest)
    # unpacked zips count as complete even when deleted (--delete-zips)
    already = [s for s in specs if ledger.get(f"unpacked:{s.relpath}")]
    specs = [s for s in specs if s not in already]

    def after(spec: FileSpec, path: Path) -> None:
        if not (unpack and path.suffix == ".zip"):
            return
        n = _unpack_one(path, dest, _kind_of(tbl, spec.relpath), limits, allow_links)
        ledger.record(f"unpacked:{spec.relpath}", files=n)
        if not keep_zips:
            path.unlink()

    report = fetch_all(
        specs,
        dest,
        workers=workers,
        policy=policy,
        ledger=ledger,
        verify=verify,
        progress=progress,
        on_done=after,
    )
    report.skipped.extend(s.relpath for s in already)
    # zips fetched earlier without --unpack: unpack them now
    if unpack:
        for rel in list(report.skipped):
            if rel.endswith(".zip") and not ledger.get(f"unpacked:{rel}"):
                spec = next(s for s in specs if s.relpath == rel)
                try:
                    after(spec, dest / rel)
                except PetcorpusError as exc:
                    report.failed[rel] = exc
    return report
