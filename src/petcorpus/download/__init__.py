"""Download the corpora (autoPET and PSMA from TCIA or IDC, ENHANCE.PET): resumable, safe.

- :mod:`~petcorpus.download.transfer`: the engine (Range resume, retries with backoff,
  checksums, ledger, concurrency, progress).
- :mod:`~petcorpus.download.unpack`: safe zip extraction (paths, links, zip bombs).
- :mod:`~petcorpus.download.tcia`: NBIA REST API and ``.tcia`` manifests → TCIA-style tree.
- :mod:`~petcorpus.download.idc`: Imaging Data Commons (official index, public bucket) → the
  same tree.
- :mod:`~petcorpus.download.tree`: that tree (folder and file names, placing a series).
- :mod:`~petcorpus.download.enhance`: the ENHANCE.PET file table and downloader.
"""

from petcorpus.download.enhance import (
    ENHANCE_GROUPS,
    CountReport,
    builtin_table,
    check_counts,
    download_enhance,
    enhance_specs,
    load_table,
)
from petcorpus.download.idc import (
    IDC_COLLECTIONS,
    IDC_ENDPOINT,
    download_idc,
    plan_idc,
    read_index,
)
from petcorpus.download.ledger import LEDGER_NAME, Ledger
from petcorpus.download.tcia import (
    AUTOPET_COLLECTION,
    NBIA_URL,
    download_autopet,
    get_series,
    plan_autopet,
    read_manifest,
    unpack_series,
)
from petcorpus.download.transfer import (
    FileSpec,
    RetryPolicy,
    TransferReport,
    fetch_all,
    fetch_file,
    probe_size,
)
from petcorpus.download.tree import series_folder_names
from petcorpus.download.unpack import UnpackLimits, safe_extract

__all__ = [
    "AUTOPET_COLLECTION",
    "ENHANCE_GROUPS",
    "IDC_COLLECTIONS",
    "IDC_ENDPOINT",
    "LEDGER_NAME",
    "NBIA_URL",
    "CountReport",
    "FileSpec",
    "Ledger",
    "RetryPolicy",
    "TransferReport",
    "UnpackLimits",
    "builtin_table",
    "check_counts",
    "download_autopet",
    "download_enhance",
    "download_idc",
    "enhance_specs",
    "fetch_all",
    "fetch_file",
    "get_series",
    "load_table",
    "plan_autopet",
    "plan_idc",
    "probe_size",
    "read_index",
    "read_manifest",
    "safe_extract",
    "series_folder_names",
    "unpack_series",
]
