"""What the report shows, as plain data: per-study rows, catalog facts, failures, metrics.

Nothing here draws or writes HTML. Study folders are found by :func:`find_studies` (the one
place the report looks at the corpus layout), catalog facts come from
:class:`~petcorpus.catalog.Catalog` opened read-only, lesion numbers from
:mod:`petcorpus.metrics.lesions`, and pictures from :mod:`petcorpus.report.plots`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petcorpus import viz
from petcorpus.catalog import CATALOG_NAME, Catalog, FailureRecord
from petcorpus.errors import GeometryMismatchError, PetcorpusError
from petcorpus.layouts import flat
from petcorpus.layouts.autopet import AutopetCase, AutopetCorpus
from petcorpus.metrics.lesions import PEAK_RADIUS_MM, lesion_statistics, study_summary
from petcorpus.report.plots import StudyOptions, StudyPictures
from petcorpus.volume import Volume

__all__ = [
    "LESION_SOURCE",
    "CatalogInfo",
    "LesionSummary",
    "StudyEntry",
    "collect_study",
    "failure_rows",
    "find_studies",
    "lesion_summary",
    "match_case",
    "metrics_mtv",
    "read_catalog",
    "read_metrics",
    "sidecar_value",
]

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
LESION_SOURCE = "petcorpus.metrics.lesions (cc3d, 18-connectivity)"
#: Image files of a study folder, in the layout's order.
#: Metrics CSV columns that hold the ground-truth MTV, first match wins.
MTV_COLUMNS = ("gt_volume_ml", "mtv_ml", "gt_mtv_ml", "mtv", "gt_ml")


# --------------------------------------------------------------------------------------------
# Lesions
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LesionSummary:
    """Lesion burden of one study.

    Attributes
    ----------
    count : int
        18-connected components of the mask.
    mtv_ml : float
        Metabolic tumour volume: mask voxels x voxel volume (ml).
    tlg : float
        Total lesion glycolysis: sum of SUV over the mask x voxel volume (SUV*ml).
    suv_max : float
        Highest SUV inside the mask (nan for an empty mask).
    source : str
        Which code computed it.
    """

    count: int
    mtv_ml: float
    tlg: float
    suv_max: float
    source: str = LESION_SOURCE


def lesion_summary(suv: Volume, mask: Volume) -> LesionSummary:
    """Count lesions and compute MTV, TLG and SUVmax with :mod:`petcorpus.metrics.lesions`.

    The statistics run on the mask's bounding box grown by the SUVpeak radius: the numbers
    are those of the full volume, and a whole-body grid is not labelled for a few small
    lesions. MTV is voxels x voxel volume, TLG the sum of SUV over the mask x voxel volume.

    Raises
    ------
    GeometryMismatchError
        The mask is not on the SUV grid (shape here, affine in
        :func:`~petcorpus.metrics.lesions.lesion_statistics`).

    >>> m = np.zeros((4, 4, 4), np.uint8); m[0, 0, 0] = m[3, 3, 3] = 1
    >>> s = lesion_summary(Volume(m * 2.5, np.eye(4)), Volume(m, np.eye(4)))
    >>> s.count, s.mtv_ml, round(s.tlg, 12), s.suv_max
    (2, 0.002, 0.005, 2.5)
    """
    if mask.shape != suv.shape:
        raise GeometryMismatchError(f"lesion mask {mask.shape} and SUV {suv.shape} differ")
    box = _mask_box(mask, margin_mm=PEAK_RADIUS_MM + 1.0)
    if box is None:
        return LesionSummary(0, 0.0, 0.0, math.nan)
    stats = lesion_statistics(_crop(suv, box), _crop(mask, box), connectivity=18)
    summ = study_summary(stats)
    return LesionSummary(
        count=int(summ.lesion_count),
        mtv_ml=float(summ.total_mtv_ml),
        tlg=float(summ.total_tlg),
        suv_max=max((x.suv_max for x in stats), default=math.nan),
    )


def _mask_box(mask: Volume, margin_mm: float) -> tuple[slice, slice, slice] | None:
    """Bounding box of ``mask > 0`` grown by ``margin_mm`` (clipped), or None when empty."""
    m = np.asarray(mask.array) > 0
    box = []
    for axis, sp in enumerate(mask.spacing):
        others = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(m.any(axis=others))
        if idx.size == 0:
            return None
        pad = math.ceil(margin_mm / float(sp))
        box.append(slice(max(0, idx[0] - pad), min(m.shape[axis], idx[-1] + pad + 1)))
    return (box[0], box[1], box[2])


def _crop(vol: Volume, box: tuple[slice, slice, slice]) -> Volume:
    """The sub-volume ``vol[box]`` with its affine moved so world positions are unchanged."""
    shift = np.eye(4)
    shift[:3, 3] = [b.start for b in box]
    return Volume(np.asarray(vol.array)[box], vol.affine @ shift)


# --------------------------------------------------------------------------------------------
# Catalog (optional, read-only)
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class CatalogInfo:
    """What the report takes from ``catalog.sqlite``; every part may be empty."""

    subjects: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    study_subject: dict[str, str] = dataclasses.field(default_factory=dict)  # uid -> subject
    study_vendor: dict[str, str] = dataclasses.field(default_factory=dict)  # uid -> vendor
    study_diagnosis: dict[str, str] = dataclasses.field(default_factory=dict)
    study_status: dict[str, str] = dataclasses.field(default_factory=dict)  # uid -> status
    path_study: dict[str, str] = dataclasses.field(default_factory=dict)  # "subj/study" -> uid
    failures: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    qc_checked: int = 0  # studies checked by the last ``petcorpus qc`` (0: never run)
    qc_flags: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # with pictures
    notes: list[str] = dataclasses.field(default_factory=list)
    present: bool = False


def read_catalog(out_dir: str | Path) -> CatalogInfo:
    """Read subjects, studies, vendors, artifact paths and failures from the catalog.

    The catalog is opened read-only through :class:`~petcorpus.catalog.Catalog`. No file →
    an empty :class:`CatalogInfo` (``present`` false). A file the catalog cannot open or
    read (not a petcorpus catalog, a newer schema, damaged) is noted in ``notes`` and the
    report goes on from the study folders alone.
    """
    info = CatalogInfo()
    if not (Path(out_dir) / CATALOG_NAME).exists():
        return info
    try:
        with Catalog.open(out_dir, readonly=True) as cat:
            subjects = cat.subjects_table()
            studies = cat.studies_table()
            files = {str(r["study_uid"]): cat.artifacts(r["study_uid"]) for r in studies}
            failures = cat.failures_table()
            info.qc_checked = len(cat.qc_studies())
            info.qc_flags = cat.qc_flags(pictures=True)
    except PetcorpusError as exc:
        info.notes.append(f"catalog not used: {exc}")
        return info
    info.present = True
    info.subjects = {str(r["subject_id"]): r for r in subjects}
    for r in studies:
        uid = str(r["study_uid"])
        for field, key in (
            (info.study_status, "status"),
            (info.study_subject, "subject_id"),
            (info.study_diagnosis, "diagnosis"),
            (info.study_vendor, "vendor"),
        ):
            if r.get(key):
                field[uid] = str(r[key])
    for uid, records in files.items():
        for a in records:
            parts = a.path.split("/")
            if len(parts) >= 3:
                info.path_study[f"{parts[0]}/{parts[1]}"] = uid
    info.failures = failures
    return info


# --------------------------------------------------------------------------------------------
# Studies on disk
# --------------------------------------------------------------------------------------------
def find_studies(out_dir: str | Path) -> list[Path]:
    """Study folders ``<out>/<subject>/<study>/`` of the autoPET layout (the layout decides:
    :meth:`petcorpus.layouts.autopet.AutopetCorpus.cases`)."""
    return [case.folder for case in AutopetCorpus(out_dir).cases()]


@dataclasses.dataclass
class StudyEntry:
    """One row of the report."""

    key: str  # "<subject>/<study>"
    subject: str
    study: str
    study_uid: str | None = None
    sex: str = UNKNOWN
    age: Any = None
    diagnosis: str = UNKNOWN
    site: str = UNKNOWN
    vendor: str = UNKNOWN
    suv: dict[str, Any] = dataclasses.field(default_factory=dict)
    lesions: LesionSummary | None = None
    files: list[str] = dataclasses.field(default_factory=list)
    thumb_png: bytes | None = None
    figure_png: bytes | None = None
    prediction_png: bytes | None = None
    prediction_note: str | None = None
    error: str | None = None
    error_class: str | None = None
    reason: str | None = None

    @property
    def anchor(self) -> str:
        return "s-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in self.key)

    def fail(self, exc: BaseException, out_dir: Path) -> None:
        """Mark the study failed with ``exc`` (class, reason code, message naming the file
        relative to the corpus); pictures and numbers drawn so far are dropped."""
        rec = FailureRecord.from_exception(self.study_uid, "report", exc)
        where = rec.path
        if where is not None:
            p = Path(where)
            where = p.relative_to(out_dir).as_posix() if p.is_relative_to(out_dir) else where
        self.error = f"{where}: {rec.message}" if where else rec.message
        self.error_class, self.reason = rec.error_class, rec.reason
        self.lesions = self.thumb_png = self.figure_png = self.prediction_png = None


def _first(*values: Any) -> Any:
    for v in values:
        if v not in (None, ""):
            return v
    return None


def sidecar_value(v: Any) -> Any:
    """A sidecar input may be a plain value or ``{"value": ..., "source": tag, "file": ...}``."""
    if isinstance(v, Mapping) and "value" in v:
        return v["value"]
    return v


def _dig(d: Mapping[str, Any], *keys: str) -> Any:
    """``d[k]`` for the first key present at top level, in ``suv.inputs`` or ``clinical``."""
    places: list[Mapping[str, Any]] = [d]
    for sub in ("clinical", "subject_info", "patient"):
        if isinstance(d.get(sub), Mapping):
            places.append(d[sub])
    suv = d.get("suv")
    if isinstance(suv, Mapping) and isinstance(suv.get("inputs"), Mapping):
        places.append(suv["inputs"])
    for place in places:
        for k in keys:
            v = sidecar_value(place.get(k))
            if v not in (None, ""):
                return v
    return None


def _describe(e: StudyEntry, sidecar: Mapping[str, Any], cat: CatalogInfo) -> None:
    """Subject and study facts: the catalog first, then the sidecar, else ``unknown``."""
    e.study_uid = _first(cat.path_study.get(e.key), sidecar.get("study_instance_uid"))
    subj = cat.subjects.get(e.subject, {})
    uid = e.study_uid or ""
    e.sex = str(_first(subj.get("sex"), _dig(sidecar, "sex", "PatientSex")) or UNKNOWN)
    e.age = _first(subj.get("age"), _dig(sidecar, "age", "PatientAge"))
    e.diagnosis = str(
        _first(cat.study_diagnosis.get(uid), subj.get("diagnosis"), _dig(sidecar, "diagnosis"))
        or UNKNOWN
    )
    e.site = str(_first(subj.get("site"), _dig(sidecar, "site", "Data-Source")) or UNKNOWN)
    e.vendor = str(
        _first(cat.study_vendor.get(uid), _dig(sidecar, "vendor", "manufacturer", "Manufacturer"))
        or UNKNOWN
    )
    suv = sidecar.get("suv")
    e.suv = dict(suv) if isinstance(suv, Mapping) else {}


def _entry(study_dir: Path) -> StudyEntry:
    subject, study = study_dir.parent.name, study_dir.name
    return StudyEntry(key=f"{subject}/{study}", subject=subject, study=study)


def collect_study(study_dir: Path, *, cat: CatalogInfo, options: StudyOptions) -> StudyEntry:
    """One study's row: facts, lesion numbers and pictures.

    Never raises for the study's own problems: any error (an unreadable file, a SEG off the
    SUV grid, a bug) is recorded on the entry (:meth:`StudyEntry.fail`), so the study is
    listed under Failures while the rest of the report renders.
    """
    e = _entry(study_dir)
    subject, study, out_dir = e.subject, e.study, study_dir.parent.parent
    case = AutopetCase(study_dir)
    e.files = [case.path(n).name for n in case.names() if n != "PRED"]
    try:
        sidecar = viz.read_sidecar(study_dir)
    except Exception as exc:
        _describe(e, {}, cat)
        e.fail(exc, out_dir)
        return e
    _describe(e, sidecar, cat)
    try:
        images = viz.read_study_dir(study_dir, with_ct=options.with_ct)
        if images.suv is None:  # pragma: no cover - read_study_dir raises instead
            return e
        seg = images.seg
        if seg is not None:
            # read_study_dir accepted the SEG as on the SUV grid (its tolerance decides);
            # from here on it carries the SUV's affine, so no second, stricter check applies.
            seg = images.suv.with_array(seg.array)
            e.lesions = lesion_summary(images.suv, seg)
        pictures = StudyPictures(images.suv, seg, options)
        e.thumb_png = pictures.thumbnail()
        e.figure_png = pictures.figure(ct=images.ct)
        found = (
            flat.find_prediction(options.predictions, subject, study)
            if options.predictions
            else None
        )
        if found is not None:
            pred_case, pred_name = found
            label = Path(pred_case.source(pred_name)).name
            try:
                e.prediction_png = pictures.comparison(pred_case.volume(pred_name))
                e.prediction_note = label
            except (PetcorpusError, ValueError, OSError) as exc:
                e.prediction_note = f"prediction {label} not shown: {exc}"
    except Exception as exc:
        log.debug("report: %s failed", e.key, exc_info=True)
        e.fail(exc, out_dir)
    return e


def failed_entry(study_dir: Path, exc: BaseException, cat: CatalogInfo) -> StudyEntry:
    """The row of a study whose worker process died (the pool's exception)."""
    e = _entry(study_dir)
    _describe(e, {}, cat)
    e.fail(exc, study_dir.parent.parent)
    return e


def failure_rows(cat: CatalogInfo, entries: Sequence[StudyEntry]) -> list[dict[str, Any]]:
    """The Failures table: those the catalog recorded, then the studies the report could not
    read or draw; each with ``study``, ``stage``, ``error_class``, ``reason``, ``message``."""
    uid_key = {e.study_uid: e.key for e in entries if e.study_uid}
    rows: list[dict[str, Any]] = []
    for f in cat.failures:
        uid = f.get("study_uid")
        if not uid:
            label = "(corpus)"
        elif uid in uid_key:
            label = uid_key[uid]
        elif uid in cat.study_subject:
            label = f"{cat.study_subject[uid]} (study {uid})"
        else:
            label = str(uid)
        rows.append({**f, "study": label})
    for e in entries:
        if e.error is not None:
            rows.append(
                {
                    "study": e.key,
                    "stage": "report",
                    "error_class": e.error_class,
                    "reason": e.reason,
                    "message": e.error,
                }
            )
    return rows


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------
def read_metrics(path: str | Path) -> Any:
    """Read a per-case metrics CSV (``case``, ``dice``, ``fp_volume_ml``, ``fn_volume_ml``...).

    Column names are matched case-insensitively; missing metric columns are filled with nan.

    Raises
    ------
    PetcorpusError
        The file is missing, unreadable, or has no ``case`` column.
    """
    import pandas as pd

    p = Path(path)
    try:
        df = pd.read_csv(p)
    except (OSError, ValueError) as exc:
        raise PetcorpusError(f"cannot read metrics CSV: {exc}", path=p) from exc
    df.columns = [str(c).strip().lower() for c in df.columns]
    if "case" not in df.columns:
        raise PetcorpusError("metrics CSV has no 'case' column", path=p)
    df["case"] = df["case"].astype(str)
    for col in ("dice", "fp_volume_ml", "fn_volume_ml"):
        if col not in df.columns:
            df[col] = np.nan
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def match_case(case: str, entries: Sequence[StudyEntry]) -> StudyEntry | None:
    """The study a metrics row names (``subject/study``, study, subject, ``subject_study``
    or study UID)."""
    c = case.strip().strip("/").replace("\\", "/")
    for e in entries:
        if c in (e.key, e.study, e.subject, f"{e.subject}_{e.study}", e.study_uid):
            return e
    return None


def metrics_mtv(df: Any, entries: Sequence[StudyEntry]) -> np.ndarray:
    """Ground-truth MTV (ml) per metrics row: a CSV column if there is one, else the study's
    lesion summary (nan where neither is known)."""
    col = next((c for c in MTV_COLUMNS if c in df.columns), None)
    if col is not None:
        return np.asarray(df[col].to_numpy(dtype=float))
    mtv = np.full(len(df), np.nan)
    for i, case in enumerate(df["case"]):
        e = match_case(str(case), entries)
        if e is not None and e.lesions is not None:
            mtv[i] = e.lesions.mtv_ml
    return mtv
