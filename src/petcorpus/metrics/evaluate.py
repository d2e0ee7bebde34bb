"""File-level evaluation: match ground-truth and predicted masks in folders, compute the
metrics, write per-case tables and a summary. The I/O edge of :mod:`petcorpus.metrics`.

Folders are read through the layouts (:func:`petcorpus.layouts.flat.mask_cases`), for both
ground truth and prediction: the autoPET layout (a ``SEG`` mask, or a ``PRED`` in a
prediction folder; the case id is ``<subject>/<study>``) or a flat folder of NIfTI masks
(the case id is the file name without extension).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Iterable
from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from petcorpus.errors import GeometryMismatchError, PetcorpusError, Reason
from petcorpus.layouts.autopet import AutopetCase, AutopetCorpus
from petcorpus.layouts.base import Case
from petcorpus.layouts.flat import FlatCase, find_prediction, mask_cases, mask_name
from petcorpus.layouts.nnunet import release_case_ids
from petcorpus.metrics.autopet import (
    AutopetMetrics,
    Edition,
    aggregate_autopet,
    autopet_metrics,
    voxel_volume_source,
)
from petcorpus.metrics.lesions import lesion_statistics, study_summary
from petcorpus.metrics.overlap import overlap_metrics
from petcorpus.metrics.surface import surface_metrics
from petcorpus.volume import Volume

__all__ = [
    "EvaluationResult",
    "autopet_metrics_nifti",
    "evaluate_folders",
    "lesion_tables",
    "write_evaluation",
]

log = logging.getLogger(__name__)

MetricSet = Literal["autopet", "organs", "all"]


def _paired(
    gt_case: Case, pred_case: Case, resample: bool, p_name: str | None = None
) -> tuple[Volume, Volume, float, float]:
    """Both masks, the prediction on the ground truth's grid, and the voxel volume each file
    states (:meth:`~petcorpus.layouts.base.Case.voxel_ml`; the prediction's is the ground
    truth's once resampled)."""
    g_name, p_name = mask_name(gt_case), p_name or mask_name(pred_case)
    gt, g_ml = gt_case.volume(g_name), gt_case.voxel_ml(g_name)
    pred, p_ml = pred_case.volume(p_name), pred_case.voxel_ml(p_name)
    if not gt.same_grid(pred):
        if not resample:
            raise GeometryMismatchError(
                f"grids differ: ground truth {gt_case.source(g_name)} is {gt!r} but prediction "
                f"{pred_case.source(p_name)} is {pred!r}; resample the prediction (--resample, "
                "nearest neighbour) or fix the files",
                path=pred_case.source(p_name),
            )
        from petcorpus.resample import resample_to

        pred = resample_to(pred, gt, interpolation="nearest")
        p_ml = g_ml  # the prediction now lives on the ground truth's grid
    return gt, pred, g_ml, p_ml


def autopet_metrics_nifti(
    gt_path: str | PathLike[str],
    pred_path: str | PathLike[str],
    edition: Edition = "III",
    resample: bool = False,
) -> AutopetMetrics:
    """autoPET metrics of two NIfTI masks, the voxel volume from the header the edition's
    script reads (:func:`~petcorpus.metrics.autopet.voxel_volume_source`)."""
    gt, pred, g_ml, p_ml = _paired(FlatCase(gt_path), FlatCase(pred_path), resample)
    ml = g_ml if voxel_volume_source(edition) == "gt" else p_ml
    return autopet_metrics(gt.array, pred.array, ml, edition=edition)


@dataclasses.dataclass
class EvaluationResult:
    """Per-case rows and the summary of :func:`evaluate_folders`."""

    autopet: pd.DataFrame  # one row per case
    organs: pd.DataFrame  # one row per case and label
    summary: dict[str, object]


def _nanmean(values: Iterable[float]) -> float:
    arr = np.asarray(list(values), dtype=np.float64)
    arr = arr[~np.isnan(arr) & ~np.isinf(arr)] if arr.size else arr
    return float(arr.mean()) if arr.size else math.nan


def evaluate_folders(
    gt_dir: str | PathLike[str],
    pred_dir: str | PathLike[str],
    metrics: MetricSet = "autopet",
    edition: Edition = "III",
    resample: bool = False,
    tolerance_mm: float = 2.0,
    progress: Callable[[str], None] | None = None,
    workers: int | None = None,
    only_predicted: bool = False,
) -> EvaluationResult:
    """Evaluate every ground-truth case against the prediction of the same id.

    A study of the autoPET layout is paired with its prediction by
    :func:`~petcorpus.layouts.flat.find_prediction` when no prediction has its key: an
    nnU-Net prediction folder (``<case>.nii.gz``) is read with the case ids of a
    ``petcorpus export-nnunet`` export (``<subject>_<study>``) or of the challenge release
    the study was imported from (its sidecar says which).

    Parameters
    ----------
    gt_dir, pred_dir : path
        Folders in autoPET or flat layout.
    metrics : {"autopet", "organs", "all"}
        ``autopet``: binary lesion metrics (mask != 0); ``organs``: per-label Dice, IoU,
        volumes, ASSD, HD, HD95, NSD; ``all``: both.
    edition : {"I", "III", "IV"}
        autoPET edition for the empty-ground-truth rules and the voxel volume.
    resample : bool
        Resample a prediction on another grid onto the ground truth's (nearest neighbour)
        instead of refusing it.
    tolerance_mm : float
        Tolerance of the normalised surface Dice.
    workers : int
        Threads for the per-label surface metrics (results do not depend on it).
    only_predicted : bool
        Score only the ground-truth cases that have a prediction (an nnU-Net fold's
        validation folder, the test set), as nnU-Net's ``-chill``; default: a missing
        prediction is an error.

    Raises
    ------
    PetcorpusError
        A ground-truth case has no prediction (reason ``NO_SERIES``), a file is unreadable,
        or grids differ without ``resample`` (``GeometryMismatchError`` naming both files).
    """
    if metrics not in ("autopet", "organs", "all"):
        raise ValueError(f"metrics must be autopet, organs or all, got {metrics!r}")
    gt_cases = mask_cases(gt_dir)
    pred_cases = mask_cases(pred_dir)
    pairs: dict[str, tuple[Case, str]] = {}
    for key, gt_case in gt_cases.items():
        if key in pred_cases:
            pairs[key] = (pred_cases[key], mask_name(pred_cases[key]))
        elif isinstance(gt_case, AutopetCase):
            found = find_prediction(
                pred_dir,
                gt_case.subject,
                gt_case.study,
                aliases=release_case_ids(gt_case.metadata),
            )
            if found is not None:
                pairs[key] = found
    missing = sorted(set(gt_cases) - set(pairs))
    if only_predicted:
        gt_cases = {k: v for k, v in gt_cases.items() if k in pairs}
        if not gt_cases:
            raise PetcorpusError(
                "no prediction matches a ground-truth case", path=pred_dir,
                reason=Reason.NO_SERIES,
            )  # fmt: skip
    elif missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise PetcorpusError(
            f"{len(missing)} ground-truth case(s) have no prediction: {shown}",
            path=pred_dir,
            reason=Reason.NO_SERIES,
        )
    used = {c.source(n) for c, n in pairs.values()}
    extra = sorted(k for k, c in pred_cases.items() if c.source(mask_name(c)) not in used)
    if extra:
        log.warning("%d prediction(s) without ground truth ignored: %s", len(extra), extra[:5])
    ap_rows: list[dict[str, object]] = []
    organ_rows: list[dict[str, object]] = []
    for case, gt_case in gt_cases.items():
        if progress is not None:
            progress(case)
        gt, pred, g_ml, p_ml = _paired(gt_case, pairs[case][0], resample, pairs[case][1])
        if metrics in ("autopet", "all"):
            ml = g_ml if voxel_volume_source(edition) == "gt" else p_ml
            m = autopet_metrics(gt.array, pred.array, ml, edition=edition)
            ap_rows.append({"case": case, **m.as_dict()})
        if metrics in ("organs", "all"):
            sp = gt.spacing
            ov = overlap_metrics(gt.array, pred.array, spacing=sp)
            sm = surface_metrics(
                gt.array, pred.array, spacing=sp, tolerance_mm=tolerance_mm, workers=workers
            )
            for lab, o in ov.items():
                s = sm[lab].as_dict()
                s.pop("label")
                organ_rows.append({"case": case, **o.as_dict(), **s})
    ap = pd.DataFrame(ap_rows)
    organs = pd.DataFrame(organ_rows)
    summary: dict[str, object] = {
        "edition": edition,
        "metrics": metrics,
        "n_cases": len(gt_cases),
        "aggregation": "nan-mean over cases (as the autoPET challenge)",
    }
    if ap_rows:
        summary["autopet"] = aggregate_autopet(
            [{k: v for k, v in r.items() if k != "case"} for r in ap_rows]  # type: ignore[misc]
        )
    if organ_rows:
        per_label: dict[str, dict[str, float]] = {}
        for lab, grp in organs.groupby("label"):
            per_label[str(lab)] = {
                k: _nanmean(grp[k])
                for k in ("dice", "iou", "volume_difference_ml", "assd", "hd", "hd95", "nsd")
            }
        summary["organs"] = {
            "mean_over_labels": {
                k: _nanmean(v[k] for v in per_label.values())
                for k in ("dice", "assd", "hd95", "nsd")
            },
            "per_label": per_label,
            "tolerance_mm": tolerance_mm,
            "note": "inf distances (label missing on one side) are left out of the means",
        }
    return EvaluationResult(autopet=ap, organs=organs, summary=summary)


def _json_safe(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_evaluation(result: EvaluationResult, out_csv: str | PathLike[str]) -> list[Path]:
    """Write ``out_csv`` (autoPET rows, or organ rows when only organs were evaluated),
    ``<stem>_organs.csv`` (when both) and ``<stem>.json`` (summary; nan/inf as null)."""
    out = Path(out_csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if not result.autopet.empty:
        result.autopet.to_csv(out, index=False)
        written.append(out)
    if not result.organs.empty:
        organs_path = out if result.autopet.empty else out.with_name(f"{out.stem}_organs.csv")
        result.organs.to_csv(organs_path, index=False)
        written.append(organs_path)
    summary_path = out.with_suffix(".json")
    summary_path.write_text(json.dumps(_json_safe(result.summary), indent=2) + "\n")
    written.append(summary_path)
    return written


def lesion_tables(
    corpus: str | PathLike[str], progress: Callable[[str], None] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Lesion statistics of every study with a SEG (and its SUV) of a corpus in the autoPET
    layout.

    Returns
    -------
    lesions, studies : DataFrame
        One row per lesion (subject, study, then :class:`LesionStats` fields) and one per
        study (subject, study, then :class:`StudyLesionSummary` fields).
    """
    root = Path(corpus)
    cases = [c for c in AutopetCorpus(root).cases() if c.has("SEG")] if root.is_dir() else []
    if not cases:
        raise PetcorpusError(
            "no study with a SEG found (autoPET layout)", path=root, reason=Reason.NO_SERIES
        )
    lesion_rows: list[dict[str, object]] = []
    study_rows: list[dict[str, object]] = []
    for case in cases:
        subject, study = case.subject, case.study
        if progress is not None:
            progress(case.key)
        if not case.has("SUV"):
            raise PetcorpusError("no SUV beside the SEG", path=case.source("SUV"))
        suv = case.volume("SUV")
        seg = case.volume("SEG")
        if not suv.same_grid(seg):
            raise GeometryMismatchError(
                f"SEG grid {seg!r} differs from SUV grid {suv!r} ({case.source('SUV')})",
                path=case.source("SEG"),
            )
        stats = lesion_statistics(suv, seg.array)
        lesion_rows += [{"subject": subject, "study": study, **s.as_dict()} for s in stats]
        study_rows.append({"subject": subject, "study": study, **study_summary(stats).as_dict()})
    return pd.DataFrame(lesion_rows), pd.DataFrame(study_rows)
