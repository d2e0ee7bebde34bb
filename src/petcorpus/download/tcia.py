"""autoPET from TCIA: NBIA REST API series listing, per-series zips, TCIA-style tree.

Endpoints (public collections need no login on v1; see tcia_utils ``nbia.py``):

- ``getSeries?Collection=...&format=json`` (optionally ``&PatientID=...``): one JSON
  object per series with ``SeriesInstanceUID``, ``StudyInstanceUID``, ``PatientID``,
  ``Modality``, ``SeriesNumber``, ``SeriesDescription``, ``ImageCount``, ``FileSize``...
- ``getSeriesSize?SeriesInstanceUID=...``: ``[{"TotalSizeInBytes": ..., "ObjectCount": ...}]``.
- ``getImage?NewFileNames=Yes&SeriesInstanceUID=...``: the series as a zip of ``1-NNN.dcm``.
- ``getImageWithMD5Hash?SeriesInstanceUID=...``: the same zip plus ``md5hashes.csv``
  (columns ``Filename``, ``MD5Hash``), which we check member by member.

A ``.tcia`` manifest is ``key=value`` header lines, then ``ListOfSeriesToDownload=``
followed by one SeriesInstanceUID per line.

Each series is unpacked (safely) into a staging folder, its first DICOM header names the
TCIA-style folders ``<PatientID>/<MM-DD-YYYY>-NA-<StudyDescription>-<5 digits>/
<SeriesNumber>.000000-<SeriesDescription>-<5 digits>/1-NNN.dcm`` and the folder is renamed
into place, so the tree is complete per series or absent.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import urllib.parse
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from petcorpus.download.ledger import Ledger
from petcorpus.download.transfer import (
    FileSpec,
    RetryPolicy,
    TransferReport,
    fetch_all,
    http_get_bytes,
)
from petcorpus.download.tree import (
    STAGE,
    place_series,
    select_series,
    series_done,
    series_folder_names,
    series_key,
)
from petcorpus.download.unpack import UnpackLimits, remove_tree, safe_extract
from petcorpus.errors import (
    ChecksumError,
    CorruptFileError,
    DownloadError,
    Reason,
    UnsafeArchiveError,
)

__all__ = [
    "AUTOPET_COLLECTION",
    "CLINICAL_CSV_URL",
    "NBIA_URL",
    "AutopetPlan",
    "download_autopet",
    "get_series",
    "plan_autopet",
    "read_manifest",
    "series_folder_names",
]

log = logging.getLogger(__name__)

NBIA_URL = "https://services.cancerimagingarchive.net/nbia-api/services/v1"
AUTOPET_COLLECTION = "FDG-PET-CT-Lesions"
CLINICAL_CSV_URL = (
    "https://wiki.cancerimagingarchive.net/download/attachments/93258287/"
    "Clinical%20Metadata%20FDG%20PET_CT%20Lesions.csv?api=v2"
)
CLINICAL_CSV_NAME = "Clinical Metadata FDG PET_CT Lesions.csv"
_STAGE = STAGE


def _base(nbia_url: str | None) -> str:
    url = nbia_url or os.environ.get("PETCORPUS_NBIA_URL") or NBIA_URL
    return url.rstrip("/")


def get_series(
    collection: str = AUTOPET_COLLECTION,
    *,
    subjects: Sequence[str] = (),
    nbia_url: str | None = None,
    policy: RetryPolicy | None = None,
) -> list[dict[str, Any]]:
    """List a collection's series with NBIA ``getSeries`` (one call per subject if given)."""
    base = _base(nbia_url)
    queries = [{"Collection": collection, "format": "json"}]
    if subjects:
        queries = [{**queries[0], "PatientID": s} for s in subjects]
    out: list[dict[str, Any]] = []
    for q in queries:
        url = f"{base}/getSeries?{urllib.parse.urlencode(q)}"
        raw = http_get_bytes(url, policy)
        try:
            rows = json.loads(raw) if raw.strip() else []
        except ValueError as exc:
            raise DownloadError(f"getSeries did not return JSON ({exc})", path=url) from exc
        out.extend(rows)
    return out


def read_manifest(path: str | os.PathLike[str]) -> list[str]:
    """SeriesInstanceUIDs listed in a TCIA ``.tcia`` manifest (after its header)."""
    lines = Path(path).read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("ListOfSeriesToDownload"):
            uids = [u.strip() for u in lines[i + 1 :] if u.strip()]
            break
    else:  # no header: a bare list of UIDs
        uids = [u.strip() for u in lines if u.strip() and "=" not in u]
    bad = [u for u in uids if not re.fullmatch(r"[0-9.]+", u)]
    if bad or not uids:
        raise CorruptFileError(
            f"not a .tcia manifest of SeriesInstanceUIDs (first bad line: {bad[:1]})", path=path
        )
    return uids


@dataclass
class AutopetPlan:
    """What an autoPET download will fetch: series (UID → size estimate) and extra files."""

    series: dict[str, int | None]
    specs: list[FileSpec]
    done_series: list[str]

    @property
    def estimated_bytes(self) -> int | None:
        """Sum of ``FileSize`` (DICOM bytes) over series still to fetch; None if unknown."""
        todo = [u for u in self.series if u not in set(self.done_series)]
        sizes = [self.series[u] for u in todo]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s)


def plan_autopet(
    dest: str | os.PathLike[str],
    *,
    series_list: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    subjects: Sequence[str] = (),
    modalities: Sequence[str] = (),
    collection: str = AUTOPET_COLLECTION,
    nbia_url: str | None = None,
    clinical_url: str | None = CLINICAL_CSV_URL,
    md5: bool = True,
    limit: int | None = None,
    policy: RetryPolicy | None = None,
) -> AutopetPlan:
    """Build the list of series zips (and the clinical CSV) still to fetch into ``dest``.

    The series come from ``series_list`` (a saved ``getSeries`` JSON), ``manifest`` (a
    ``.tcia`` file) or, by default, NBIA ``getSeries`` for ``collection``; ``subjects``
    keeps only those PatientIDs (manifests carry no PatientID, so it does not filter them),
    ``modalities`` only those Modalities (``CT``, ``PT``, ``SEG``; not with a manifest).
    """
    base = _base(nbia_url)
    if series_list is not None and manifest is not None:
        raise ValueError("give series_list or manifest, not both")
    if manifest is not None:
        rows: list[dict[str, Any]] = [{"SeriesInstanceUID": u} for u in read_manifest(manifest)]
    elif series_list is not None:
        try:
            rows = json.loads(Path(series_list).read_text())
        except ValueError as exc:
            raise CorruptFileError(f"not a getSeries JSON list ({exc})", path=series_list) from exc
    else:
        rows = get_series(collection, subjects=subjects, nbia_url=base, policy=policy)
    if manifest is not None and modalities:
        raise ValueError("a .tcia manifest carries no Modality: give modalities or manifest")
    rows = select_series(
        rows, subjects=() if manifest is not None else subjects, modalities=modalities, limit=limit
    )
    ledger = Ledger(dest)
    endpoint = "getImageWithMD5Hash?" if md5 else "getImage?NewFileNames=Yes&"
    series: dict[str, int | None] = {}
    specs: list[FileSpec] = []
    done: list[str] = []
    for row in rows:
        uid = str(row["SeriesInstanceUID"])
        size = row.get("FileSize")
        series[uid] = int(size) if size not in (None, "") else None
        if series_done(ledger, dest, uid):
            done.append(uid)
            continue
        q = urllib.parse.urlencode({"SeriesInstanceUID": uid})
        specs.append(FileSpec(f"{base}/{endpoint}{q}", f"{_STAGE}/series/{uid}.zip"))
    if clinical_url:
        specs.append(FileSpec(clinical_url, CLINICAL_CSV_NAME))
    return AutopetPlan(series=series, specs=specs, done_series=done)


_MAX_MD5_CSV = 16 << 20  # NBIA's lists ~100 bytes per file


def _check_md5(zip_path: Path) -> int:
    """Verify members against ``md5hashes.csv`` when present; returns members checked."""
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        if "md5hashes.csv" not in names:
            return 0
        with zf.open("md5hashes.csv") as fh:  # read with a bound: the zip is not checked yet
            text = fh.read(_MAX_MD5_CSV + 1)
        if len(text) > _MAX_MD5_CSV:
            raise UnsafeArchiveError(
                f"refusing to unpack: member 'md5hashes.csv' exceeds {_MAX_MD5_CSV} bytes",
                path=zip_path,
            )
        rows = list(csv.DictReader(io.StringIO(text.decode("utf-8-sig"))))
        for row in rows:
            name = row.get("Filename") or row.get("filename") or ""
            expected = (row.get("MD5Hash") or row.get("md5hash") or "").lower()
            if name not in names:
                raise ChecksumError(
                    f"md5hashes.csv lists {name!r}, absent from the zip", path=zip_path
                )
            with zf.open(name) as fh:  # a ZipExtFile: a BufferedIOBase, with readinto
                h = hashlib.file_digest(cast(io.BufferedIOBase, fh), "md5")
            if h.hexdigest() != expected:
                raise ChecksumError(
                    f"member {name!r} MD5 {h.hexdigest()} != {expected}", path=zip_path
                )
        return len(rows)


def unpack_series(
    zip_path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    limits: UnpackLimits | None = None,
    allow_links: bool = False,
) -> Path:
    """Verify and unpack one series zip into the TCIA-style tree under ``dest``.

    Returns the series folder. The series appears complete under its final name or not at
    all (staging folder + rename); an existing folder of the same series is replaced.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    _check_md5(zip_path)
    stage = dest / _STAGE / "unpack" / zip_path.stem
    remove_tree(stage)
    extracted = safe_extract(zip_path, stage, limits=limits, allow_links=allow_links)
    files = [p for p in extracted if p.suffix.lower() == ".dcm"]
    if not files:
        remove_tree(stage)
        raise DownloadError(
            "the series zip holds no .dcm file", path=zip_path, reason=Reason.NO_SERIES
        )
    return place_series(files, dest, stage)


def download_autopet(
    dest: str | os.PathLike[str],
    *,
    series_list: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    subjects: Sequence[str] = (),
    modalities: Sequence[str] = (),
    collection: str = AUTOPET_COLLECTION,
    nbia_url: str | None = None,
    clinical_url: str | None = CLINICAL_CSV_URL,
    md5: bool = True,
    limit: int | None = None,
    workers: int = 4,
    policy: RetryPolicy | None = None,
    verify: bool = False,
    keep_zips: bool = False,
    progress: bool = False,
    limits: UnpackLimits | None = None,
    allow_links: bool = False,
) -> TransferReport:
    """Download autoPET (or any NBIA collection) into a TCIA-style DICOM tree.

    Each series zip is fetched (resumable, retried), checked (zip CRC and, with ``md5``,
    NBIA's per-file MD5s), unpacked safely into
    ``dest/<PatientID>/<study folder>/<series folder>/1-NNN.dcm`` and recorded in the
    ledger; the zip is then deleted unless ``keep_zips``. A re-run skips finished series
    without contacting the server (except for the series listing when no ``series_list``
    or ``manifest`` is given).

    Returns
    -------
    TransferReport
        Per series zip (and the clinical CSV): done, skipped or failed with the error.
    """
    dest = Path(dest)
    plan = plan_autopet(
        dest,
        series_list=series_list,
        manifest=manifest,
        subjects=subjects,
        modalities=modalities,
        collection=collection,
        nbia_url=nbia_url,
        clinical_url=clinical_url,
        md5=md5,
        limit=limit,
        policy=policy,
    )
    ledger = Ledger(dest)

    def after(spec: FileSpec, path: Path) -> None:
        if not spec.relpath.startswith(f"{_STAGE}/series/"):
            return
        uid = Path(spec.relpath).stem
        try:
            folder = unpack_series(path, dest, limits=limits, allow_links=allow_links)
        except (ChecksumError, CorruptFileError, DownloadError, zipfile.BadZipFile) as exc:
            path.unlink(missing_ok=True)  # fetch again next time
            ledger.forget(spec.relpath)
            if isinstance(exc, zipfile.BadZipFile):
                raise DownloadError(f"corrupt series zip ({exc})", path=spec.url) from exc
            raise
        n = sum(1 for _ in folder.glob("*.dcm"))
        ledger.record(series_key(uid), folder=folder.relative_to(dest).as_posix(), files=n)
        if not keep_zips:
            path.unlink(missing_ok=True)

    report = fetch_all(
        plan.specs,
        dest,
        workers=workers,
        policy=policy,
        ledger=ledger,
        verify=verify,
        progress=progress,
        on_done=after,
    )
    report.skipped.extend(f"{_STAGE}/series/{uid}.zip" for uid in plan.done_series)
    return report
