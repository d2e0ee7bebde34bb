"""autoPET and PSMA from NCI's Imaging Data Commons (IDC): official index, public bucket.

IDC mirrors TCIA's FDG-PET-CT-Lesions and PSMA-PET-CT-Lesions collections (IDC ids
``fdg_pet_ct_lesions`` and ``psma_pet_ct_lesions``). Its official index is the
``idc-index-data`` package (``petcorpus[idc]``): a parquet table with one row per series
(``collection_id``, ``PatientID``, ``StudyInstanceUID``, ``SeriesInstanceUID``,
``Modality``, ``instanceCount``, ``series_size_MB`` in units of 10^6 bytes,
``series_aws_url`` = ``s3://<bucket>/<crdc_series_uuid>/*``...). Planning and
``--dry-run`` read only that file, so they work offline.

Each series is one prefix of a public bucket that answers anonymous HTTPS (path-style,
``https://s3.amazonaws.com/<bucket>/...``, the endpoint idc-index uses):

- ``GET <endpoint>/<bucket>?list-type=2&prefix=<uuid>/`` (S3 ListObjectsV2, XML, at most
  1000 keys a page, then ``continuation-token``) lists its files with size and ETag; the
  ETag of an object uploaded in one part is its MD5 (one with a ``-`` is not, and is not
  checked);
- ``GET <endpoint>/<bucket>/<key>`` (with ``Range`` to resume) fetches one file.

The files go through the transfer engine (resume, retries, ledger, size and MD5 checks)
into ``DEST/.petcorpus-download/idc/<uuid>/``; once the whole series is there it is moved
into the TCIA-style tree that ``scan`` and ``build`` read (:func:`~petcorpus.download.tree.
place_series`, the same as for TCIA) and recorded in the ledger.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from petcorpus._optional import import_optional
from petcorpus.download.ledger import Ledger
from petcorpus.download.transfer import (
    FileSpec,
    RetryPolicy,
    TransferReport,
    fetch_all,
    http_get_bytes,
)
from petcorpus.download.tree import STAGE, place_series, select_series, series_done, series_key
from petcorpus.errors import CorruptFileError, DownloadError, PetcorpusError, Reason

__all__ = [
    "IDC_COLLECTIONS",
    "IDC_ENDPOINT",
    "IdcPlan",
    "S3Object",
    "download_idc",
    "fetch_series",
    "list_prefix",
    "plan_idc",
    "read_index",
]

log = logging.getLogger(__name__)

#: the S3 endpoint idc-index uses for IDC's AWS buckets (path-style URLs)
IDC_ENDPOINT = "https://s3.amazonaws.com"
#: petcorpus target → IDC collection_id
IDC_COLLECTIONS = {"autopet": "fdg_pet_ct_lesions", "psma": "psma_pet_ct_lesions"}
_COLUMNS = (
    "collection_id",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "instanceCount",
    "series_size_MB",
    "series_aws_url",
)
_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def _endpoint(endpoint: str | None) -> str:
    url = endpoint or os.environ.get("PETCORPUS_IDC_ENDPOINT") or IDC_ENDPOINT
    return url.rstrip("/")


def index_file(index: str | os.PathLike[str] | None = None) -> Path:
    """The parquet index: ``index`` if given, else the one ``idc-index-data`` installs."""
    if index is not None:
        return Path(index)
    mod = import_optional(
        "idc_index_data", extra="idc", package="idc-index-data", purpose="--source idc"
    )
    return Path(mod.IDC_INDEX_PARQUET_FILEPATH)


def index_version(index: str | os.PathLike[str] | None = None) -> str | None:
    """The ``idc-index-data`` version that wrote the index (from its parquet metadata)."""
    pq = import_optional("pyarrow.parquet", extra="idc", package="pyarrow", purpose="--source idc")
    try:
        meta = pq.read_schema(index_file(index)).metadata or {}
    except (OSError, ValueError):
        return None
    raw = meta.get(b"idc_index_data_version")
    return raw.decode().split("-")[0] if raw else None


def read_index(
    collection: str, *, index: str | os.PathLike[str] | None = None
) -> list[dict[str, Any]]:
    """One dict per series of ``collection`` in IDC's index, sorted by patient, study, series.

    Analysis results that other groups added to the collection (``analysis_result_id``
    set) are left out: these are the collection's own series.

    Raises
    ------
    CorruptFileError
        The file is not a parquet table with the index's columns.
    DownloadError
        The index holds no series of ``collection`` (reason ``NO_SERIES``).
    """
    pq = import_optional("pyarrow.parquet", extra="idc", package="pyarrow", purpose="--source idc")
    path = index_file(index)
    try:
        names = set(pq.read_schema(path).names)
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
        raise CorruptFileError(f"not a parquet index ({exc})", path=path) from exc
    missing = [c for c in _COLUMNS if c not in names]
    if missing:
        raise CorruptFileError(f"not an IDC index: no column {', '.join(missing)}", path=path)
    columns = [*_COLUMNS, *(["analysis_result_id"] if "analysis_result_id" in names else [])]
    table = pq.read_table(path, columns=columns, filters=[("collection_id", "=", collection)])
    rows = [r for r in table.to_pylist() if not r.get("analysis_result_id")]
    if not rows:
        raise DownloadError(
            f"no series of collection {collection!r} in this index",
            path=path,
            reason=Reason.NO_SERIES,
        )
    rows.sort(key=lambda r: (r["PatientID"], r["StudyInstanceUID"], r["SeriesInstanceUID"]))
    return rows


def series_location(row: Mapping[str, Any]) -> tuple[str, str]:
    """``(bucket, prefix)`` of a series from its ``series_aws_url`` (``s3://b/uuid/*``)."""
    url = str(row.get("series_aws_url") or "")
    parsed = urllib.parse.urlparse(url)
    prefix = parsed.path.lstrip("/").rstrip("*")
    if parsed.scheme != "s3" or not parsed.netloc or not prefix.endswith("/"):
        raise CorruptFileError(
            f"series {row.get('SeriesInstanceUID')}: series_aws_url {url!r} is not s3://BUCKET/PREFIX/*"
        )
    return parsed.netloc, prefix


@dataclass(frozen=True)
class IdcPlan:
    """The series an IDC download covers (index rows) and those already in the tree.

    ``collection_counts`` are :meth:`counts` of the whole collection, before the filters.
    """

    collection: str
    series: list[dict[str, Any]]
    done_series: frozenset[str]
    collection_counts: dict[str, int]

    @property
    def todo(self) -> list[dict[str, Any]]:
        """Rows of the series still to fetch."""
        return [r for r in self.series if r["SeriesInstanceUID"] not in self.done_series]

    @staticmethod
    def counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        """Patients, studies, series, files and bytes (from the index) of some rows."""
        return {
            "patients": len({r["PatientID"] for r in rows}),
            "studies": len({r["StudyInstanceUID"] for r in rows}),
            "series": len(rows),
            "files": sum(int(r["instanceCount"] or 0) for r in rows),
            "bytes": round(sum(float(r["series_size_MB"] or 0.0) for r in rows) * 1e6),
        }


def plan_idc(
    dest: str | os.PathLike[str],
    *,
    collection: str = IDC_COLLECTIONS["autopet"],
    subjects: Sequence[str] = (),
    modalities: Sequence[str] = (),
    limit: int | None = None,
    index: str | os.PathLike[str] | None = None,
) -> IdcPlan:
    """Select a collection's series from the index (offline) and mark those already done.

    ``subjects`` keeps only those PatientIDs, ``modalities`` those Modalities (``CT``,
    ``PT``, ``SEG``), ``limit`` the first N series in (PatientID, StudyInstanceUID,
    SeriesInstanceUID) order.
    """
    everything = read_index(collection, index=index)
    rows = select_series(everything, subjects=subjects, modalities=modalities, limit=limit)
    ledger = Ledger(dest) if Path(dest).is_dir() else None
    done = frozenset(
        str(r["SeriesInstanceUID"])
        for r in rows
        if ledger is not None and series_done(ledger, dest, str(r["SeriesInstanceUID"]))
    )
    return IdcPlan(
        collection=collection,
        series=[dict(r) for r in rows],
        done_series=done,
        collection_counts=IdcPlan.counts(everything),
    )


@dataclass(frozen=True)
class S3Object:
    """One object of a bucket listing: key, size in bytes, ETag without quotes."""

    key: str
    size: int
    etag: str

    @property
    def md5(self) -> str | None:
        """The MD5 the ETag is, for an object uploaded in one part; else None."""
        tag = self.etag.lower()
        return tag if len(tag) == 32 and all(c in "0123456789abcdef" for c in tag) else None


def list_prefix(
    bucket: str,
    prefix: str,
    *,
    endpoint: str | None = None,
    policy: RetryPolicy | None = None,
    max_keys: int | None = None,
) -> list[S3Object]:
    """All objects under ``prefix`` (S3 ListObjectsV2, anonymous, every page).

    ``max_keys`` caps a page (S3's default and maximum is 1000).
    """
    base = f"{_endpoint(endpoint)}/{urllib.parse.quote(bucket)}"
    out: list[S3Object] = []
    token: str | None = None
    while True:
        query = {"list-type": "2", "prefix": prefix}
        if max_keys is not None:
            query["max-keys"] = str(max_keys)
        if token:
            query["continuation-token"] = token
        url = f"{base}?{urllib.parse.urlencode(query)}"
        try:
            root = ET.fromstring(http_get_bytes(url, policy))
        except ET.ParseError as exc:
            raise DownloadError(f"the bucket listing is not XML ({exc})", path=url) from exc
        for item in root.iter(f"{_S3_NS}Contents"):
            try:
                key = item.findtext(f"{_S3_NS}Key") or ""
                size = int(item.findtext(f"{_S3_NS}Size") or "")
            except ValueError as exc:
                raise DownloadError(f"a listing entry has no size ({exc})", path=url) from exc
            etag = (item.findtext(f"{_S3_NS}ETag") or "").strip().strip('"')
            out.append(S3Object(key=key, size=size, etag=etag))
        token = root.findtext(f"{_S3_NS}NextContinuationToken")
        if root.findtext(f"{_S3_NS}IsTruncated") != "true" or not token:
            return out


def _specs(
    bucket: str, prefix: str, objects: Sequence[S3Object], endpoint: str | None
) -> list[FileSpec]:
    base = f"{_endpoint(endpoint)}/{urllib.parse.quote(bucket)}"
    specs = []
    for obj in objects:
        url = f"{base}/{urllib.parse.quote(obj.key)}"
        if not obj.key.startswith(prefix) or obj.key.endswith("/"):
            raise DownloadError(f"listing of {prefix} holds the key {obj.key!r}", path=url)
        try:
            specs.append(FileSpec(url, f"{STAGE}/idc/{obj.key}", size=obj.size, md5=obj.md5))
        except ValueError as exc:  # a key with .. or \ would leave DEST
            raise DownloadError(f"unsafe key {obj.key!r} ({exc})", path=url) from exc
    return specs


def fetch_series(
    row: Mapping[str, Any],
    dest: str | os.PathLike[str],
    *,
    endpoint: str | None = None,
    workers: int = 4,
    policy: RetryPolicy | None = None,
    ledger: Ledger | None = None,
    verify: bool = False,
    progress: bool = False,
) -> tuple[Path, int]:
    """List one series' prefix, fetch its files and place the series in the tree.

    Returns the series folder and the bytes transferred. Files already fetched (ledger)
    are not fetched again, and a cut file resumes where it stopped.

    Raises
    ------
    DownloadError, ChecksumError
        The listing failed, or some files failed after their retries (the first one's
        error; the files that arrived stay for the next run).
    """
    dest = Path(dest)
    ledger = ledger if ledger is not None else Ledger(dest)
    bucket, prefix = series_location(row)
    objects = list_prefix(bucket, prefix, endpoint=endpoint, policy=policy)
    if not objects:
        raise DownloadError(
            "the bucket holds no file of this series",
            path=f"s3://{bucket}/{prefix}",
            reason=Reason.NO_SERIES,
        )
    specs = _specs(bucket, prefix, objects, endpoint)
    report = fetch_all(
        specs,
        dest,
        workers=workers,
        policy=policy,
        ledger=ledger,
        verify=verify,
        progress=progress,
    )
    if report.failed:
        exc = report.failed[min(report.failed)]
        log.info("%s: %d of %d files failed", prefix, len(report.failed), len(specs))
        raise exc
    stage = dest / STAGE / "idc" / PurePosixPath(prefix).name
    files = [dest / s.relpath for s in specs]
    folder = place_series(files, dest, stage)
    uid = str(row["SeriesInstanceUID"])
    ledger.record(series_key(uid), folder=folder.relative_to(dest).as_posix(), files=len(files))
    for spec in specs:
        ledger.forget(spec.relpath)
    return folder, report.bytes_transferred


def download_idc(
    dest: str | os.PathLike[str],
    *,
    collection: str = IDC_COLLECTIONS["autopet"],
    subjects: Sequence[str] = (),
    modalities: Sequence[str] = (),
    limit: int | None = None,
    index: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
    workers: int = 4,
    policy: RetryPolicy | None = None,
    verify: bool = False,
    progress: bool = False,
) -> TransferReport:
    """Download a collection from IDC into a TCIA-style DICOM tree under ``dest``.

    Series are fetched one after another, the files of a series ``workers`` at a time;
    each appears in ``dest/<PatientID>/<study folder>/<series folder>/1-NNN.dcm`` once
    complete and verified. A re-run skips finished series without contacting the bucket.

    Returns
    -------
    TransferReport
        One entry per series, named ``idc/<crdc_series_uuid>``: done, skipped (already
        complete) or failed with its error; the batch goes on after a failure.
    """
    dest = Path(dest)
    plan = plan_idc(
        dest,
        collection=collection,
        subjects=subjects,
        modalities=modalities,
        limit=limit,
        index=index,
    )
    ledger = Ledger(dest)
    report = TransferReport()
    for row in plan.series:
        name = f"idc/{PurePosixPath(str(row['series_aws_url']).rstrip('*')).name}"
        if row["SeriesInstanceUID"] in plan.done_series:
            report.skipped.append(name)
            continue
        try:
            _, received = fetch_series(
                row,
                dest,
                endpoint=endpoint,
                workers=workers,
                policy=policy,
                ledger=ledger,
                verify=verify,
                progress=progress,
            )
        except PetcorpusError as exc:
            report.failed[name] = exc
            continue
        report.done.append(name)
        report.bytes_transferred += received
    return report
