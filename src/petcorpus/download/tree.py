"""The TCIA-style DICOM tree that every DICOM download source (TCIA, IDC) writes.

``<PatientID>/<MM-DD-YYYY>-NA-<StudyDescription>-<5 digits>/
<SeriesNumber>.000000-<SeriesDescription>-<5 digits>/1-NNN.dcm``, the folder names built
from the series' own DICOM header (:func:`series_folder_names`), the file names from
InstanceNumber (:func:`tcia_file_names`). A series is assembled in a staging folder and
renamed into place (:func:`place_series`), so it is complete under its final name or
absent; the ledger then records it under :func:`series_key` and a re-run skips it
(:func:`series_done`). :func:`select_series` applies the user's filters to series rows that
carry NBIA's / IDC's column names (``PatientID``, ``Modality``).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from petcorpus.download.ledger import Ledger
from petcorpus.download.unpack import remove_tree
from petcorpus.errors import CorruptFileError, DownloadError, Reason

__all__ = [
    "STAGE",
    "place_series",
    "select_series",
    "series_done",
    "series_folder_names",
    "series_key",
    "tcia_file_names",
]

_Row = TypeVar("_Row", bound=Mapping[str, Any])

#: the staging folder inside DEST (partial downloads, series being assembled)
STAGE = ".petcorpus-download"


def _clean(text: str, limit: int = 64) -> str:
    text = re.sub(r"[\\/:*?\"<>|\x00-\x1f]", "_", str(text)).strip(" .")
    return text[:limit] or "NA"


def _five_digits(uid: str) -> str:
    return str(int(hashlib.sha1(uid.encode()).hexdigest(), 16) % 90000 + 10000)


def series_folder_names(ds: Any) -> tuple[str, str, str]:
    """``(subject, study folder, series folder)`` in TCIA's naming, from one header.

    The 5-digit suffixes are derived from the Study and Series Instance UIDs, so every
    series of a study lands in the same study folder and names are stable across runs.
    """
    subject = _clean(getattr(ds, "PatientID", "") or "NA")
    date = str(getattr(ds, "StudyDate", "") or "")
    day = f"{date[4:6]}-{date[6:8]}-{date[:4]}" if len(date) == 8 else "NA"
    study_desc = _clean(getattr(ds, "StudyDescription", "") or "NA")
    study = f"{day}-NA-{study_desc}-{_five_digits(str(ds.StudyInstanceUID))}"
    number = getattr(ds, "SeriesNumber", None)
    number = int(number) if number not in (None, "") else 0
    series_desc = _clean(getattr(ds, "SeriesDescription", "") or "NA")
    series = f"{number}.000000-{series_desc}-{_five_digits(str(ds.SeriesInstanceUID))}"
    return subject, study, series


def tcia_file_names(files: Sequence[Path]) -> list[str]:
    """``1-NNN.dcm`` names: kept when the files have them already, else by InstanceNumber
    (by order of the file names when it is missing or repeated)."""
    import pydicom

    tcia = all(re.fullmatch(r"\d+-\d+\.dcm", f.name) for f in files)
    if tcia and len({f.name for f in files}) == len(files):
        return [f.name for f in files]
    numbers: list[int | None] = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["InstanceNumber"])
        n = getattr(ds, "InstanceNumber", None)
        numbers.append(int(n) if n not in (None, "") else None)
    if None in numbers or len(set(numbers)) != len(numbers):
        order = sorted(range(len(files)), key=lambda i: files[i].name)
        numbers = [0] * len(files)
        for rank, i in enumerate(order, start=1):
            numbers[i] = rank
    ranks = [int(n or 0) for n in numbers]  # no None is left here
    width = max(3, len(str(max(ranks))))
    return [f"1-{n:0{width}d}.dcm" for n in ranks]


def place_series(
    files: Sequence[Path], dest: str | os.PathLike[str], stage: str | os.PathLike[str]
) -> Path:
    """Move one series' DICOM files (all inside ``stage``) into the tree under ``dest``.

    The folders are named from the first file's header, the files ``1-NNN.dcm``; the
    series is gathered in ``stage/flat`` and renamed into place, replacing an existing
    folder of the same series. ``stage`` is removed. Returns the series folder.

    Raises
    ------
    DownloadError
        ``files`` is empty (reason ``NO_SERIES``).
    CorruptFileError
        The first file is not DICOM.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    dest, stage = Path(dest), Path(stage)
    if not files:
        remove_tree(stage)
        raise DownloadError("the series holds no .dcm file", path=stage, reason=Reason.NO_SERIES)
    try:
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError) as exc:
        remove_tree(stage)
        raise CorruptFileError(f"not DICOM ({exc})", path=files[0]) from exc
    subject, study, series = series_folder_names(ds)
    final = dest / subject / study / series
    final.parent.mkdir(parents=True, exist_ok=True)
    flat = stage / "flat"
    remove_tree(flat)
    flat.mkdir(parents=True)
    for f, name in zip(files, tcia_file_names(files), strict=True):
        os.replace(f, flat / name)
    if final.exists():
        remove_tree(final)
    os.replace(flat, final)
    remove_tree(stage)
    return final


def series_key(uid: str) -> str:
    """The ledger key of a series placed in the tree."""
    return f"series:{uid}"


def series_done(ledger: Ledger, dest: str | os.PathLike[str], uid: str) -> bool:
    """True when the ledger records series ``uid`` and its folder still holds its files."""
    entry = ledger.get(series_key(uid))
    if entry is None:
        return False
    folder = Path(dest) / entry["folder"]
    return sum(1 for _ in folder.glob("*.dcm")) == entry["files"]


def select_series(
    rows: Sequence[_Row],
    *,
    subjects: Sequence[str] = (),
    modalities: Sequence[str] = (),
    limit: int | None = None,
) -> list[_Row]:
    """Series rows of the given PatientIDs and Modalities (all when empty), first ``limit``.

    Rows keep their order; ``Modality`` is compared case-insensitively (``PT``, ``pt``).
    """
    out = list(rows)
    if subjects:
        wanted = set(subjects)
        out = [r for r in out if r.get("PatientID") in wanted]
    if modalities:
        mods = {m.upper() for m in modalities}
        out = [r for r in out if str(r.get("Modality") or "").upper() in mods]
    if limit is not None:
        out = out[:limit]
    return out
