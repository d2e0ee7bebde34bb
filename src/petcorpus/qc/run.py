"""Run every check on one study (:func:`check_study`) or a corpus (:func:`qc_corpus`), and
store the result in the catalog (:func:`run_qc`)."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import BrokenExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from petcorpus._memory import keep_freed_memory
from petcorpus.errors import PetcorpusError
from petcorpus.labels import LabelTable
from petcorpus.qc.acquisition import correction_flags, outlier_flags
from petcorpus.qc.align import (
    estimate_shift,
    label_mask,
    organ_activity_share,
    region_words,
)
from petcorpus.qc.flags import QcFlag, QcReason, QcReport, StudyQc
from petcorpus.qc.labels import check_labels
from petcorpus.qc.organ_maps import case_organ_map, qc_regions
from petcorpus.qc.pictures import flag_picture, sampled
from petcorpus.qc.suv import (
    LIVER_RANGE,
    likely_cause,
    liver_region,
    percist_problems,
)
from petcorpus.volume import Volume

if TYPE_CHECKING:
    from petcorpus.layouts.base import Case, Corpus

__all__ = ["QcOptions", "check_study", "qc_corpus", "run_qc"]

log = logging.getLogger(__name__)
#: In-plane voxel size (mm) of the PET and CT copies the shift and liver checks work on:
#: the shift stays within 0.7 mm of the planted one (as at full resolution) at a quarter
#: of the memory traffic.
_FINE_MM = 4.0
#: In-plane voxel size (mm) that the liver search and the pictures sample the PET grid at.
_SAMPLE_MM = 8.0


@dataclasses.dataclass(frozen=True)
class QcOptions:
    """Limits of the checks.

    Attributes
    ----------
    shift_mm : float
        A PET/CT shift longer than this along any axis is flagged.
    organ_share : float
        A hot organ keeping less than this share of its activity inside its CT mask is
        flagged (organ masks only).
    liver_range : (float, float)
        Plausible liver SUVmean (SUVbw).
    pictures : bool
        Draw a picture for each flag.
    """

    shift_mm: float = 6.0
    organ_share: float = 0.6
    liver_range: tuple[float, float] = LIVER_RANGE
    pictures: bool = True


def _axes(vol: Volume) -> tuple[int, int, int]:
    """Voxel axes closest to RAS x (left-right), y (anterior-posterior), z (head-foot)."""
    lin = vol.affine[:3, :3]
    norms = np.linalg.norm(lin, axis=0)
    out = tuple(int(np.argmax(np.abs(lin[r, :]) / norms)) for r in range(3))
    return (out[0], out[1], out[2]) if len(set(out)) == 3 else (0, 1, 2)


def _fov_partial(lungs: np.ndarray | None, vol: Volume, si: int) -> str | None:
    """Which end of the field of view lies in the chest (lungs reach its edge), or None."""
    if lungs is None:
        return None
    per_slice = lungs.sum(axis=tuple(a for a in range(3) if a != si)).astype(float)
    if per_slice.max() < 20:
        return None
    low_is_foot = vol.affine[2, si] > 0
    ends = {
        "lower": per_slice[0 if low_is_foot else -1],
        "upper": per_slice[-1 if low_is_foot else 0],
    }
    cut = [k for k, v in ends.items() if v > 0.1 * per_slice.max()]
    return " and ".join(cut) or None


def check_study(
    suv: Volume,
    ct: Volume | None,
    seg: Volume | None = None,
    *,
    key: str = "",
    diagnosis: str | None = None,
    params: Mapping[str, Any] | None = None,
    organs: Volume | None = None,
    organ_names: Mapping[int, str] | None = None,
    percist: Any = None,
    which: str = "",
    pet_unit: Literal["SUV", "Bq/ml"] = "SUV",
    options: QcOptions | None = None,
) -> StudyQc:
    """The per-study checks (alignment, SUV, labels, corrections) of one study.

    Parameters
    ----------
    suv : Volume
        SUVbw on the PET grid (activity in Bq/ml with ``pet_unit="Bq/ml"``).
    ct : Volume, optional
        CT in HU on the PET grid (CTres); without it the alignment, liver and body checks
        are skipped.
    seg : Volume, optional
        Lesion mask.
    diagnosis : str, optional
        ``NEGATIVE`` or a disease.
    params : mapping, optional
        The PET's acquisition parameters from the catalog (``UptakeTimeS``,
        ``RadionuclideTotalDose``, ``PatientWeight``, ``SliceThickness``,
        ``CorrectedImage``, ``DecayCorrection``): copied into the measures that
        :func:`~petcorpus.qc.acquisition.outlier_flags` scores against the corpus.
    organs, organ_names : optional
        An organ label map on the PET grid and its names (ENHANCE.PET): adds the share of
        hot-organ activity inside the masks and, with a liver, the liver SUV from the mask.
        Every other labelled region of the map (named or not) is a neighbour, left out of a
        hot organ's margin (:func:`~petcorpus.qc.align.organ_activity_share`,
        ``exclude_others``).
    percist : PercistReference, optional
        A PERCIST reference to judge (:func:`~petcorpus.qc.suv.percist_problems`).
    which : str
        Names the study in label messages (patients with several studies).
    pet_unit : {"SUV", "Bq/ml"}
        The unit of ``suv``. In Bq/ml the liver is still measured (``liver_bqml``, the
        pictures' level) but its SUV range is not checked (``liver_note`` says so):
        without an SUV factor no range applies. Alignment, organ shares and labels do not
        depend on the unit.
    """
    if pet_unit not in ("SUV", "Bq/ml"):
        raise ValueError(f"pet_unit must be 'SUV' or 'Bq/ml', got {pet_unit!r}")
    opt = options or QcOptions()
    out = StudyQc(key=key)
    meas = out.measures
    lr, ap, si = _axes(suv)
    in_plane = float(min(suv.spacing[lr], suv.spacing[ap]))
    fine = max(1, round(_FINE_MM / in_plane))
    coarse = max(1, round(_SAMPLE_MM / (fine * in_plane)))
    step = fine * coarse  # sampled(sampled(v, fine), coarse) == sampled(v, step)
    pet_f = sampled(suv, fine, si, copy=True)
    pet_s = sampled(pet_f, coarse, si)
    ct_f = ct_s = None
    if ct is not None and ct.same_grid(suv, atol=1e-3):
        ct_f = sampled(ct, fine, si, copy=True)
        ct_s = sampled(ct_f, coarse, si)
    seg_on_grid = seg is not None and seg.same_grid(suv, atol=1e-3)
    les_s = (
        np.asarray(sampled(seg, step, si).array) > 0 if seg is not None and seg_on_grid else None
    )

    def picture(overlays: Any = (), view: str = "coronal", title: str | None = None,
                fill: bool = False) -> bytes | None:  # fmt: skip
        if not opt.pictures:
            return None
        return flag_picture(pet_s, overlays, view=view, title=title, level=_level(meas),
                            fill=fill)  # fmt: skip

    # 1. Liver SUV (first: its level sets the pictures' window).
    region = None
    liver_from = None
    liver = "liver_suv" if pet_unit == "SUV" else "liver_bqml"
    if organs is not None and organ_names:
        liver_ids = [i for i, n in organ_names.items() if "liver" in region_words(n)]
        lm = label_mask(np.asarray(organs.array), liver_ids) if liver_ids else None
        if lm is not None and lm.any():
            meas[liver] = float(np.mean(np.asarray(suv.array)[lm]))
            liver_from = "organ mask"
    if ct_f is not None:
        les_f = sampled(seg, fine, si).array if seg is not None and seg_on_grid else None
        region = liver_region(pet_f, ct_f, les_f, step=coarse)
        if liver_from is None and region.mask is not None:
            meas[liver] = float(np.median(np.asarray(pet_s.array)[region.mask]))
            liver_from = "anatomy (below the right lung)"
        elif liver_from is None:
            meas["liver_note"] = region.why
    if liver_from is not None:
        meas["liver_from"] = liver_from
    if pet_unit != "SUV":
        meas["pet_unit"] = pet_unit
    if liver_from is not None and pet_unit != "SUV":
        meas["liver_note"] = f"PET in {pet_unit}, not SUV: the liver SUV range is not checked"
    elif liver_from is not None:
        v = meas["liver_suv"]
        lo, hi = opt.liver_range
        if not lo <= v <= hi:
            ov: list[tuple[Any, str]] = []
            if region is not None and region.mask is not None:
                ov.append((region.mask, "fn"))
            out.flags.append(
                QcFlag("suv", QcReason.SUV_IMPLAUSIBLE,
                       f"liver SUVmean {v:.2f} outside {lo:g}–{hi:g}: {likely_cause(v)}", v,
                       picture(ov, title=f"liver SUV {v:.2f}"))
            )  # fmt: skip
    if percist is not None:
        lesions = np.asarray(seg.array) > 0 if seg is not None and seg_on_grid else None
        problems = percist_problems(percist, lesions, np.asarray(suv.array))
        meas["percist_liver_mean"] = float(percist.liver_mean)
        meas["percist_liver_sd"] = float(percist.liver_sd)
        if problems:
            ov = []
            if percist.liver_mask is not None:
                ov.append((sampled(suv.with_array(percist.liver_mask), step, si), "fn"))
            if les_s is not None:
                ov.append((les_s, "lesion"))
            out.flags.append(
                QcFlag("suv", QcReason.PERCIST_UNUSABLE,
                       "PERCIST liver reference unusable: " + "; ".join(problems),
                       float(percist.liver_mean),
                       picture(ov, title="PERCIST liver sphere"))
            )  # fmt: skip

    # 2. Alignment.
    if ct_s is not None and ct_f is not None:
        shift = estimate_shift(pet_f, ct_f)
        meas.update(shift.as_dict())
        comps = {"x": shift.x, "y": shift.y, "z": shift.z}
        worst = max(comps, key=lambda a: abs(comps[a]) if math.isfinite(comps[a]) else -1)
        if math.isfinite(comps[worst]) and abs(comps[worst]) > opt.shift_mm:
            body = ct_s.array > -400
            names = {"x": "left-right", "y": "anterior-posterior", "z": "head-foot"}
            out.flags.append(
                QcFlag("alignment", QcReason.MISALIGNED,
                       f"PET shifted {comps[worst]:+.1f} mm {names[worst]} against the CT "
                       f"(x {shift.x:+.1f}, y {shift.y:+.1f}, z {shift.z:+.1f} mm RAS)",
                       abs(comps[worst]),
                       picture([(body, "fn")], view="sagittal" if worst == "y" else "coronal",
                               title=f"PET, CT outline (blue): {comps[worst]:+.0f} mm"))
            )  # fmt: skip
    if organs is not None and organ_names:
        shares = organ_activity_share(suv, organs, organ_names, exclude_others=True)
        for organ, share in shares.items():
            meas[f"share_{organ}"] = share
        low = {o: s for o, s in shares.items() if math.isfinite(s) and s < opt.organ_share}
        if low:
            ids = [i for i, n in organ_names.items() if region_words(n) & set(low)]
            hot = label_mask(np.asarray(organs.array), ids)
            out.flags.append(
                QcFlag("alignment", QcReason.ORGAN_UPTAKE_OUTSIDE,
                       "PET activity outside its CT organ mask: " + ", ".join(
                           f"{o} {s:.0%} inside" for o, s in low.items()),
                       min(low.values()),
                       picture([(sampled(suv.with_array(hot), step, si), "fn")],
                               title="organ masks (blue)"))
            )  # fmt: skip

    # 3. Labels.
    found = check_labels(suv, ct, seg, diagnosis, which=which)
    meas["lesion_components"] = found.components
    meas["lesion_voxels"] = found.voxels
    for f in found.flags:
        ov = []
        fill = False
        if f.reason is QcReason.MASK_OUTSIDE_BODY and found.outside is not None:
            ov = [(ct_s.array > -400, "fn")] if ct_s is not None else []
            ov.append((sampled(suv.with_array(found.outside), step, si), "fp"))
        elif f.reason is QcReason.ONE_VOXEL_COMPONENT and found.single is not None:
            # Grown so that a single voxel shows at the picture's scale.
            from scipy import ndimage

            grown = ndimage.binary_dilation(found.single, iterations=max(2, step))
            ov, fill = [(sampled(suv.with_array(grown), step, si), "fp")], True
        elif les_s is not None:
            ov = [(les_s, "lesion")]
        out.flags.append(dataclasses.replace(f, picture=picture(ov, title=f.reason.value.lower(),
                                                                 fill=fill)))  # fmt: skip

    # 4. Acquisition: this study's numbers (scored against the corpus later) and corrections.
    fov = float(suv.shape[si] * abs(suv.affine[2, si]))
    meas["fov_mm"] = fov
    p = dict(params or {})
    meas["slice_mm"] = _num(p.get("SliceThickness"), float(np.linalg.norm(suv.affine[:3, si])))
    up = _num(p.get("UptakeTimeS"))
    meas["uptake_min"] = up / 60.0 if math.isfinite(up) else math.nan
    dose, weight = _num(p.get("RadionuclideTotalDose")), _num(p.get("PatientWeight"))
    meas["dose_mbq_per_kg"] = dose / 1e6 / weight if weight > 0 else math.nan
    for f in correction_flags(p.get("CorrectedImage"), p.get("DecayCorrection")):
        out.flags.append(dataclasses.replace(f, picture=picture(title="not corrected")))
    cut = _fov_partial(region.lungs if region is not None else None, pet_s, si)
    if cut is not None:
        meas["fov_cut"] = cut
        lungs_ov = (
            [(region.lungs, "fn")] if region is not None and region.lungs is not None else []
        )
        out.flags.append(
            QcFlag("acquisition", QcReason.FOV_PARTIAL,
                   f"the field of view ({fov:.0f} mm) ends in the chest: the lungs reach its "
                   f"{cut} edge", fov, picture(lungs_ov, title="lungs (blue) at the edge"))
        )  # fmt: skip
    return out


def _level(meas: Mapping[str, Any]) -> float:
    """The liver's level that sets a picture's grey window (SUV or Bq/ml), nan if unknown."""
    return float(meas.get("liver_suv", meas.get("liver_bqml", math.nan)))


def _num(v: Any, default: float = math.nan) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return f if math.isfinite(f) else default


# -- a corpus ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _CaseInfo:
    key: str
    study_uid: str | None
    diagnosis: str | None
    which: str
    params: dict[str, Any]


def _case_infos(root: Path, keys: list[str]) -> tuple[dict[str, _CaseInfo], list[str]]:
    """Catalog facts per case key (study UID, diagnosis, which study of the patient, PET
    parameters); without a catalog, the keys alone."""
    from petcorpus.catalog import CATALOG_NAME, Catalog

    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    params: dict[str, dict[str, Any]] = {}
    if (root / CATALOG_NAME).exists():
        try:
            with Catalog.open(root, readonly=True) as cat:
                rows = cat.study_folders()
                params = cat.pet_params()
        except PetcorpusError as exc:
            notes.append(f"catalog not used: {exc}")
    else:
        notes.append("no catalog: diagnoses and acquisition parameters unknown")
    by_folder = {r["folder"]: r for r in rows if r["folder"]}
    per_subject: dict[str, list[str]] = {}
    for k in keys:
        r = by_folder.get(k)
        subject = str(r["subject_id"]) if r else k.partition("/")[0]
        per_subject.setdefault(subject, []).append(k)
    infos = {}
    for subject, ks in per_subject.items():
        ks.sort(key=lambda k: (str((by_folder.get(k) or {}).get("study_date") or ""), k))
        for i, k in enumerate(ks, 1):
            r = by_folder.get(k) or {}
            which = ""
            if len(ks) > 1:
                date = r.get("study_date")
                which = f"study {i} of {len(ks)} of {subject}" + (f" ({date})" if date else "")
            uid = r.get("study_uid")
            infos[k] = _CaseInfo(k, uid, r.get("diagnosis"), which, params.get(str(uid), {}))
    return infos, notes


@dataclasses.dataclass
class _CaseVolumes:
    """What :func:`check_study` reads of one case."""

    suv: Volume
    unit: Literal["SUV", "Bq/ml"]
    ct: Volume | None
    seg: Volume | None
    organs: Volume | None = None
    organ_names: dict[int, str] | None = None


def _read_case(
    case: Case,
    labels: LabelTable | None = None,
    regions: Mapping[str, Mapping[int, str]] | None = None,
) -> _CaseVolumes:
    """SUV (or PET and its unit), CT on the PET grid, lesion mask of a case of any layout;
    with a label table and its QC regions (:func:`~petcorpus.qc.organ_maps.qc_regions`), the
    case's organ map on the PET grid."""
    from petcorpus.organs import guess_pet_unit
    from petcorpus.resample import resample_to

    pet_name = "SUV" if case.has("SUV") else "PET"
    suv = case.volume(pet_name)
    ct = None
    if case.has("CTres"):
        ct = case.volume("CTres")
    elif case.has("CT"):
        ct = resample_to(case.volume("CT"), suv, interpolation="linear", fill=-1024.0)
    seg = case.volume("SEG") if case.has("SEG") else None
    organs = None
    if labels is not None and regions:
        organs = case_organ_map(case, suv, labels, regions)
    unit: Literal["SUV", "Bq/ml"] = "SUV"
    if pet_name == "PET":  # a PET without an SUV beside it: its unit from its magnitude
        lab = None if organs is None else np.asarray(organs[0].array)
        unit = "Bq/ml" if guess_pet_unit(np.asarray(suv.array), lab) == "Bq/ml" else "SUV"
    return _CaseVolumes(suv, unit, ct, seg, *(organs or (None, None)))


def _check_case(
    case: Case,
    info: _CaseInfo,
    options: QcOptions,
    labels: LabelTable | None = None,
    regions: Mapping[str, Mapping[int, str]] | None = None,
) -> StudyQc:
    try:
        v = _read_case(case, labels, regions)
        diagnosis = info.diagnosis or _sidecar_diagnosis(case)
        res = check_study(v.suv, v.ct, v.seg, key=info.key, diagnosis=diagnosis,
                          params=info.params, organs=v.organs, organ_names=v.organ_names,
                          which=info.which, pet_unit=v.unit, options=options)  # fmt: skip
    except (PetcorpusError, OSError, ValueError) as exc:
        res = StudyQc(key=info.key)
        res.flags.append(QcFlag("labels", QcReason.UNREADABLE, f"cannot check: {exc}"))
    res.study_uid = info.study_uid
    return res


def _sidecar_diagnosis(case: Case) -> str | None:
    meta = case.metadata or {}
    v = meta.get("diagnosis") or (meta.get("clinical") or {}).get("diagnosis")
    return str(v) if v else None


# -- in worker processes -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Job:
    """One case to check in a worker: the corpus is opened there (once per run and
    process, :func:`_worker_case`), since not every layout's case can be pickled (HDF5)."""

    run: str
    layout: str
    root: str
    info: _CaseInfo
    options: QcOptions
    labels: dict[str, dict[str, str]] | None
    regions: dict[str, dict[int, str]] | None


#: In a worker: the run token → (its open corpus, its cases by key).
_OPEN: dict[str, tuple[Corpus, dict[str, Case]]] = {}
_OPEN_LOCK = threading.Lock()  # Dask runs tasks on threads


def _worker_case(job: _Job) -> Case:
    with _OPEN_LOCK:
        got = _OPEN.get(job.run)
        if got is None:
            for corpus, _ in _OPEN.values():  # an earlier run's (a long-lived Dask worker)
                corpus.close()
            _OPEN.clear()
            from petcorpus.layouts import open_corpus

            corpus = open_corpus(job.root, layout=job.layout)
            got = _OPEN[job.run] = (corpus, {c.key: c for c in corpus.cases()})
    return got[1][job.info.key]


def _check_job(job: _Job) -> StudyQc:
    """Worker: :func:`_check_case` of one case (a case that cannot be opened or read is a
    flag, as on the driver)."""
    try:
        case = _worker_case(job)
        labels = None
        if job.labels is not None:
            labels = LabelTable({g: {int(k): n for k, n in r.items()}
                                 for g, r in job.labels.items()})  # fmt: skip
    except Exception as exc:  # a batch records every failure and goes on
        res = StudyQc(key=job.info.key, study_uid=job.info.study_uid)
        res.flags.append(QcFlag("labels", QcReason.UNREADABLE, f"cannot check: {exc}"))
        return res
    return _check_case(case, job.info, job.options, labels, job.regions)


def qc_corpus(
    corpus: str | os.PathLike[str],
    *,
    options: QcOptions | None = None,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
    workers: int = 1,
) -> QcReport:
    """Run every check on every case of a corpus (any layout :func:`open_corpus` reads;
    the catalog, when the folder has one, gives diagnoses and acquisition parameters).

    A case that cannot be read is flagged ``UNREADABLE`` and the rest goes on. The
    acquisition quantities are scored against the corpus after all cases
    (:func:`~petcorpus.qc.acquisition.outlier_flags`); an outlier's picture needs its PET
    again, which is then re-read.

    With organ masks (an ENHANCE.PET corpus: its group label images, names from its
    ``labels.json``), the groups holding the hot organs and the liver are mapped onto the
    PET grid (:mod:`~petcorpus.qc.organ_maps`) and :func:`check_study` gets them: the share
    of each hot organ's activity inside its mask, the liver from its mask. A PET without an
    SUV beside it is taken as Bq/ml or SUV by its magnitude
    (:func:`~petcorpus.organs.guess_pet_unit`); in Bq/ml the liver SUV range is not checked.

    ``workers`` > 1 checks the cases in that many processes (the build's
    :class:`~petcorpus.pipeline.Runner`); the result is the same as with one. ``progress``
    wraps the case keys and is advanced as each case finishes.
    """
    from petcorpus.layouts import open_corpus
    from petcorpus.pipeline import Runner

    opt = options or QcOptions()
    root = Path(corpus)
    with open_corpus(root) as c:
        cases = {case.key: case for case in c.cases()}
        infos, notes = _case_infos(root, list(cases))
        labels = getattr(c, "labels", None)
        regions: dict[str, dict[int, str]] | None = None
        if isinstance(labels, LabelTable):
            regions, more = qc_regions(labels)
            notes += more
        else:
            labels = None
        show = iter((progress or (lambda it: it))(list(cases)))
        done: dict[str, StudyQc] = {}
        n = min(workers, len(cases))
        if n <= 1:
            # The build's memory habit on the driver: each study's volumes reuse the last
            # one's pages instead of faulting fresh ones in (as Runner does for workers=1).
            keep_freed_memory()
            try:
                for k in show:
                    done[k] = _check_case(cases[k], infos[k], opt, labels, regions)
            finally:
                keep_freed_memory(False)
        else:
            run = uuid.uuid4().hex
            table = None if labels is None else labels.to_json()
            jobs = [_Job(run, c.layout, str(root), infos[k], opt, table, regions) for k in cases]
            try:
                with Runner(workers=n, preload=(__name__,)) as runner:
                    for res in runner.map_unordered(_check_job, jobs):
                        done[res.key] = res
                        next(show, None)
            except BrokenExecutor as exc:  # a worker died (memory?): its cases are flagged
                died = QcFlag("labels", QcReason.UNREADABLE, f"cannot check: worker died ({exc})")
                for k in cases.keys() - done.keys():
                    done[k] = StudyQc(key=k, study_uid=infos[k].study_uid, flags=[died])
            for _ in show:  # the display ends at the total
                pass
        results = [done[k] for k in cases]
        flags, zs, more = outlier_flags({r.key: r.measures for r in results})
        notes += more
        for r in results:
            r.measures.update(zs[r.key])
            if not flags[r.key]:
                continue
            pic = None
            if opt.pictures:
                try:
                    suv = _read_case(cases[r.key]).suv
                    si = _axes(suv)[2]
                    pic = flag_picture(sampled(suv, 2, si), title="acquisition outlier",
                                       level=_level(r.measures))  # fmt: skip
                except (PetcorpusError, OSError, ValueError):
                    pic = None
            r.flags += [dataclasses.replace(f, picture=pic) for f in flags[r.key]]
    return QcReport(results, notes)


def run_qc(
    corpus: str | os.PathLike[str],
    *,
    options: QcOptions | None = None,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
    workers: int = 1,
) -> QcReport:
    """:func:`qc_corpus`, then store the result in ``corpus/catalog.sqlite`` (created when
    absent), replacing the previous one. (Not a build: no row in the ``runs`` table, whose
    latest row says what the last build skipped.)"""
    from petcorpus.catalog import Catalog

    report = qc_corpus(corpus, options=options, progress=progress, workers=workers)
    with Catalog.open(corpus) as cat:
        cat.record_qc(report.studies)
    return report
