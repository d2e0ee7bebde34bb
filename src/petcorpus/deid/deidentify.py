"""De-identify a DICOM tree: one file at a time, in parallel, resumable, atomic.

Each input file is read, de-identified by :func:`petcorpus.deid.dataset.deidentify_dataset`
and written atomically to a path made only of de-identified values (never an input folder
name, which may hold a name)::

    OUT/<new PatientID>/<shifted StudyDate>-<8 hex>/<Modality>-<SeriesNumber>-<8 hex>/
        <instance>-<8 hex>.dcm

The study folder follows :mod:`petcorpus.naming`'s rule for the new identity, so a build of
OUT names its studies the same way. Everything a file needs (new UIDs, new PatientID, the
patient's date shift) follows from the key and the file's own header, so the files are
independent tasks for the build's executor (:class:`petcorpus.pipeline.Runner`).

A re-run skips the files done before with the same key and settings (a ledger in OUT,
``.petcorpus-deid.json``, holds keyed hashes of the input paths, never the paths, and the
SHA-256 of each output, checked before skipping). A damaged file is named in one line and the
rest goes on. ``deid-report.json`` in OUT lists the series flagged for burned-in annotations
and what was done, without any input path or identifier.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from petcorpus.atomic import TEMP_PREFIX, atomic_write, remove_stale_temps
from petcorpus.deid.dataset import METHOD_CODES, PRIVATE_KEEP, DeidContext, deidentify_dataset
from petcorpus.deid.dates import auto_shift_days
from petcorpus.deid.phi import Matcher, identifiers_of
from petcorpus.deid.uids import keyed_digest, pseudonym
from petcorpus.errors import PetcorpusError, Reason

__all__ = [
    "LEDGER_NAME",
    "REPORT_NAME",
    "DeidReport",
    "DeidSettings",
    "FileOutcome",
    "burned_in_reason",
    "deidentify",
    "read_id_map",
]

NATIVE_SYNTAXES = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian)
LEDGER_NAME = ".petcorpus-deid.json"
REPORT_NAME = "deid-report.json"
#: ImageType values that mark a screen capture (annotations drawn into the pixels)
_BURNED_IN_TYPES = frozenset({"SCREEN SAVE", "SCREENSHOT", "CAPTURE"})


@dataclasses.dataclass(frozen=True)
class DeidSettings:
    """How files are de-identified (the same for every file of a run)."""

    key: bytes
    #: whole days for every patient, or None for a keyed per-patient shift
    date_shift: int | None = None
    #: original PatientID → new PatientID (others get a keyed pseudonym)
    id_map: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def digest(self) -> str:
        """A keyed fingerprint of the settings (a ledger entry is reused only under it)."""
        text = json.dumps([self.date_shift, sorted(self.id_map.items())])
        return keyed_digest(self.key, "settings", text).hex()[:16]

    def new_patient_id(self, patient_id: str) -> str:
        pid = patient_id.strip()
        return self.id_map.get(pid) or pseudonym(self.key, pid)

    def shift_days(self, patient_id: str) -> int:
        if self.date_shift is not None:
            return self.date_shift
        return auto_shift_days(self.key, patient_id)


@dataclasses.dataclass(frozen=True)
class FileOutcome:
    """One input file: written (``out``), passed over (``skipped``) or ``failed``."""

    src: str
    out: str | None = None
    sha256: str | None = None
    series: str | None = None
    burned_in: str | None = None
    patient: tuple[str, str] | None = None
    skipped: str | None = None
    failed: PetcorpusError | None = None


@dataclasses.dataclass
class DeidReport:
    """What a run did."""

    written: list[FileOutcome] = dataclasses.field(default_factory=list)
    resumed: int = 0
    skipped: list[FileOutcome] = dataclasses.field(default_factory=list)
    failed: list[FileOutcome] = dataclasses.field(default_factory=list)
    #: output series folder → why it may hold burned-in annotations
    burned_in: dict[str, str] = dataclasses.field(default_factory=dict)
    #: original PatientID → new PatientID (kept in memory; written only where asked)
    id_map: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def burned_in_reason(ds: Any) -> str | None:
    """Why a file may hold burned-in annotations (BurnedInAnnotation YES, or an ImageType of
    a screen capture), else None."""
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        return "BurnedInAnnotation is YES"
    image_type = ds.get("ImageType") or []
    values = [image_type] if isinstance(image_type, str) else list(image_type)
    marked = sorted({str(v).strip().upper() for v in values} & _BURNED_IN_TYPES)
    if marked:
        return f"ImageType says {marked[0]}"
    return None


def read_id_map(path: str | os.PathLike[str]) -> dict[str, str]:
    """A CSV of ``PatientID,NewPatientID`` rows (that header first) as a dict."""
    p = Path(path)
    try:
        rows = list(csv.reader(io.StringIO(p.read_text(encoding="utf-8-sig"))))
    except (OSError, UnicodeDecodeError) as exc:
        raise PetcorpusError(f"cannot read the ID map: {exc}", path=p) from exc
    if not rows or [c.strip() for c in rows[0][:2]] != ["PatientID", "NewPatientID"]:
        raise PetcorpusError("the ID map needs the header PatientID,NewPatientID", path=p)
    out: dict[str, str] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise PetcorpusError(f"line {n}: two values needed", path=p)
        out[row[0].strip()] = row[1].strip()
    return out


# -- one file (runs on a worker; never raises) ---------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Task:
    src: Path
    rel: str
    out_root: Path
    settings: DeidSettings


def _out_path(ds: Any, patient: str) -> Path:
    from petcorpus.dicom.scan import StudyInfo
    from petcorpus.naming import name_studies

    study_uid = str(ds.get("StudyInstanceUID", ""))
    date = str(ds.get("StudyDate") or "") or None
    study = StudyInfo(study_uid=study_uid, patient_id=patient, study_date=date, series=[])
    name = name_studies([study])[study_uid]
    series = hashlib.sha256(str(ds.get("SeriesInstanceUID", "")).encode()).hexdigest()[:8]
    modality = "".join(c for c in str(ds.get("Modality") or "OT") if c.isalnum()) or "OT"
    try:
        number = int(ds.get("SeriesNumber") or 0)
    except (TypeError, ValueError):
        number = 0
    sop = hashlib.sha256(str(ds.get("SOPInstanceUID", "")).encode()).hexdigest()[:8]
    try:
        instance = int(ds.get("InstanceNumber") or 0)
    except (TypeError, ValueError):
        instance = 0
    return Path(
        name.subject, name.study, f"{modality}-{number}-{series}", f"{instance:05d}-{sop}.dcm"
    )


_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _check_complete(ds: Any, path: Path) -> None:
    """An image whose pixel data are missing or short was cut short (never written out)."""
    from petcorpus.errors import CorruptFileError

    if "Rows" not in ds:
        return
    pixels = next((ds[k] for k in _PIXEL_TAGS if k in ds), None)
    if pixels is None:
        raise CorruptFileError("truncated: the file ends before its pixel data", path=path)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID", "") in NATIVE_SYNTAXES:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 16) or 16)
        expected = int(ds.Rows) * int(ds.Columns) * frames * spp * bits // 8
        if len(pixels.value or b"") < expected:
            raise CorruptFileError(
                f"truncated: {len(pixels.value or b'')} bytes of pixel data, {expected} expected",
                path=path,
            )


def _one_file(task: _Task) -> FileOutcome:
    from pydicom.filewriter import dcmwrite

    from petcorpus.dicom.header import read_scan_header
    from petcorpus.dicom.io import read_dataset
    from petcorpus.dicom.scan import DAMAGED

    try:
        # the build's reading of a header first: the same files are damaged or not DICOM
        read_scan_header(task.src)
        ds = read_dataset(task.src)
    except PetcorpusError as exc:
        if exc.message.startswith(DAMAGED):
            return FileOutcome(task.rel, failed=exc)
        return FileOutcome(task.rel, skipped=exc.message)
    try:
        if not ds.get("StudyInstanceUID") or not ds.get("SeriesInstanceUID"):
            return FileOutcome(task.rel, skipped="no StudyInstanceUID/SeriesInstanceUID")
        _check_complete(ds, task.src)
        s = task.settings
        old_pid = str(ds.get("PatientID") or "").strip()
        new_pid = s.new_patient_id(old_pid)
        clean = Matcher(identifiers_of(ds)).clean
        ctx = DeidContext(s.key, s.shift_days(old_pid), new_pid, clean)
        burned = burned_in_reason(ds)
        deidentify_dataset(ds, ctx)
        rel_out = _out_path(ds, new_pid)
        buf = io.BytesIO()
        dcmwrite(buf, ds, enforce_file_format=True)
        data = buf.getvalue()
        out = task.out_root / rel_out
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(out) as fh:
            fh.write(data)
        return FileOutcome(
            task.rel,
            out=rel_out.as_posix(),
            sha256=hashlib.sha256(data).hexdigest(),
            series=rel_out.parent.as_posix(),
            burned_in=burned,
            patient=(old_pid, new_pid),
        )
    except PetcorpusError as exc:
        return FileOutcome(task.rel, failed=exc)
    except OSError as exc:
        where = exc.filename or task.src
        err = PetcorpusError(f"cannot write: {exc.strerror or exc}", where, Reason.OUTPUT_PATH)
        return FileOutcome(task.rel, failed=err)
    except Exception as exc:  # pydicom converts values as it reads them: a damaged header
        msg = f"cannot de-identify ({type(exc).__name__}: {' '.join(str(exc).split())})"
        return FileOutcome(task.rel, failed=PetcorpusError(msg, task.src, Reason.CORRUPT_FILE))


# -- the tree ------------------------------------------------------------------------------
def _inputs(root: Path, out: Path) -> list[Path]:
    if root.is_file():
        return [root]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(TEMP_PREFIX) and (here / d) != out
        )
        files += [here / n for n in sorted(filenames) if not n.startswith(TEMP_PREFIX)]
    return files


def _stat_id(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _digest(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


def _load_ledger(out: Path) -> dict[str, Any]:
    try:
        data = json.loads((out / LEDGER_NAME).read_text(encoding="utf-8"))
        return dict(data.get("files", {}))
    except (OSError, ValueError, AttributeError):
        return {}


def _save_ledger(out: Path, files: Mapping[str, Any]) -> None:
    with atomic_write(out / LEDGER_NAME, "w") as fh:
        json.dump({"files": dict(sorted(files.items()))}, fh, indent=0)


def deidentify(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    key: bytes,
    date_shift: int | None = None,
    id_map: Mapping[str, str] | None = None,
    workers: int = 1,
    on_outcome: Callable[[FileOutcome], None] | None = None,
) -> DeidReport:
    """De-identify every DICOM file under ``src`` into ``out`` (see the module docstring).

    Parameters
    ----------
    src, out : path-like
        The input tree (or one file) and the output folder (created).
    key : bytes
        The secret key (:func:`petcorpus.deid.uids.load_key`): same key, same UIDs and IDs.
    date_shift : int, optional
        Days added to every date; default: a keyed shift per patient, 1 to 10 years back.
    id_map : mapping, optional
        Original PatientID → new PatientID; other patients get ``anon-<12 hex>``.
    workers : int
        Processes (1: in this process).
    on_outcome : callable, optional
        Called with each file's outcome as it finishes (progress).

    Returns
    -------
    DeidReport
        Written, resumed, skipped (not DICOM) and failed files, flagged series, the ID map.
    """
    from petcorpus.pipeline import Runner

    root, dest = Path(src), Path(out)
    if not root.exists():
        raise PetcorpusError("no such file or folder", path=root, reason=Reason.CORRUPT_FILE)
    dest.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest)
    settings = DeidSettings(key=key, date_shift=date_shift, id_map=dict(id_map or {}))
    tag = settings.digest()
    ledger = _load_ledger(dest)
    report = DeidReport()
    tasks = []
    base = root if root.is_dir() else root.parent
    for path in _inputs(root, dest.resolve()):
        rel = path.relative_to(base).as_posix()
        ident = keyed_digest(key, "path", rel).hex()[:32]
        entry = ledger.get(ident)
        try:
            stat = keyed_digest(key, "stat", _stat_id(path)).hex()[:16]
        except OSError:
            stat = ""
        if (
            entry
            and entry.get("stat") == stat
            and entry.get("settings") == tag
            and _digest(dest / entry["out"]) == entry.get("sha256")
        ):
            report.resumed += 1
            if entry.get("burned_in"):
                report.burned_in[entry["series"]] = entry["burned_in"]
            continue
        tasks.append(_Task(path, rel, dest, settings))
        ledger[ident] = {"stat": stat}  # filled in when done
    done = 0
    with Runner(workers=workers) as runner:
        for outcome in runner.map_unordered(_one_file, tasks):
            ident = keyed_digest(key, "path", outcome.src).hex()[:32]
            if outcome.failed is not None:
                report.failed.append(outcome)
                ledger.pop(ident, None)
            elif outcome.skipped is not None:
                report.skipped.append(outcome)
                ledger.pop(ident, None)
            else:
                report.written.append(outcome)
                if outcome.burned_in and outcome.series:
                    report.burned_in[outcome.series] = outcome.burned_in
                if outcome.patient:
                    report.id_map[outcome.patient[0]] = outcome.patient[1]
                ledger[ident] = {
                    **ledger.get(ident, {}),
                    "settings": tag,
                    "out": outcome.out,
                    "sha256": outcome.sha256,
                    "series": outcome.series,
                    "burned_in": outcome.burned_in,
                }
            done += 1
            if done % 500 == 0:
                _save_ledger(dest, {k: v for k, v in ledger.items() if "out" in v})
            if on_outcome is not None:
                on_outcome(outcome)
    _save_ledger(dest, {k: v for k, v in ledger.items() if "out" in v})
    _write_report(dest, report)
    return report


def _write_report(dest: Path, report: DeidReport) -> None:
    """``deid-report.json``: counts, options, kept private tags, flagged series (no input
    paths, no identifiers)."""
    obj = {
        "profile": [f"{c.scheme_designator} {c.value} {c.meaning}" for c in METHOD_CODES],
        "private_tags_kept": [p.name for p in PRIVATE_KEEP],
        "files_written": len(report.written),
        "files_already_done": report.resumed,
        "files_not_dicom": len(report.skipped),
        "files_failed": len(report.failed),
        "burned_in_annotation_warnings": [
            {"series": s, "reason": r} for s, r in sorted(report.burned_in.items())
        ],
    }
    with atomic_write(dest / REPORT_NAME, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")


def write_id_map(path: str | os.PathLike[str], id_map: Mapping[str, str]) -> None:
    """Write the original → new PatientID map as CSV (only where the user asks)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["PatientID", "NewPatientID"])
    for old, new in sorted(id_map.items()):
        w.writerow([old, new])
    with atomic_write(path, "w") as fh:
        fh.write(buf.getvalue())
