"""The official autoPET metrics: Dice, false-positive and false-negative volume (ml).

Definitions, from the challenges' published evaluation scripts (autoPET I ``val_script.py``,
autoPET III ``evaluation-metrics/evaluation_metrics.py``, autoPET IV
``evaluation_metrics/evaluation_metrics.py``):

- connected components of ground truth and prediction with cc3d, connectivity 18;
- **Dice** ``2|G∩P| / (|G|+|P|)`` over the whole foreground;
- **false-positive volume**: voxels of predicted components that touch no ground-truth voxel,
  times the voxel volume;
- **false-negative volume**: voxels of ground-truth components that touch no predicted voxel,
  times the voxel volume;
- the cohort score is the nan-mean of each column (pandas ``DataFrame.mean``).

Where the editions differ (empty ground truth, which header gives the voxel volume):

======= ============================ ============================== ======================
edition Dice, ground truth empty     FN volume, ground truth empty  voxel volume (pixdim)
======= ============================ ============================== ======================
I       0 (nan if prediction empty)  0                              prediction header
III     nan                          nan                            ground-truth header
IV      nan                          nan                            prediction header
======= ============================ ============================== ======================

The false-positive volume is the same in all editions (0 for an empty prediction). The
voxel volume is ``pixdim[1] * pixdim[2] * pixdim[3] / 1000`` of the named NIfTI header,
as the scripts read it.

The published scripts loop over components, building a full-volume mask per component
(O(components x voxels)). Here each mask is labelled once and the overlaps are counted
with ``np.bincount`` over the labels at the other mask's voxels: the same numbers, in time
independent of the number of components. :func:`compare_masks` turns the same labelling
into masks of matched, missed and false-positive components (for pictures).

Masks are binarised as ``mask != 0``; for the 0/1 masks the challenge uses this equals the
scripts' products of float arrays.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Literal, cast

import cc3d
import numpy as np
import numpy.typing as npt

from petcorpus.errors import GeometryMismatchError, PetcorpusError

if TYPE_CHECKING:
    from petcorpus.volume import Volume

__all__ = [
    "EDITIONS",
    "AutopetMetrics",
    "Edition",
    "MaskComparison",
    "aggregate_autopet",
    "autopet_metrics",
    "compare_masks",
    "component_overlaps",
    "voxel_volume_source",
]

Edition = Literal["I", "III", "IV"]
EDITIONS: tuple[str, ...] = ("I", "III", "IV")

#: cc3d connectivity of the challenge (faces + edges).
AUTOPET_CONNECTIVITY = 18


@dataclasses.dataclass(frozen=True)
class AutopetMetrics:
    """autoPET metrics of one case, with the raw counts behind them.

    Attributes
    ----------
    dice : float
        Foreground Dice (nan per the edition's empty-ground-truth rule).
    fp_volume_ml, fn_volume_ml : float
        False-positive / false-negative volume in ml (the challenge's FPV and FNV).
    fp_voxels, fn_voxels : float
        The same as voxel counts (nan where the volume is nan).
    gt_voxels, pred_voxels, tp_voxels : int
        Foreground voxels of ground truth, prediction and both.
    gt_lesions, pred_lesions : int
        Number of 18-connected components of ground truth and prediction.
    lesion_tp : int
        Ground-truth components touched by the prediction (detected lesions).
    lesion_fn : int
        Ground-truth components not touched (missed lesions).
    lesion_fp : int
        Predicted components touching no ground truth (false detections).
    lesion_f1 : float
        Extra, not a challenge metric: ``2 tp / (2 tp + fp + fn)`` from the three counts
        above; nan when both masks are empty.
    """

    dice: float
    fp_volume_ml: float
    fn_volume_ml: float
    fp_voxels: float
    fn_voxels: float
    gt_voxels: int
    pred_voxels: int
    tp_voxels: int
    gt_lesions: int
    pred_lesions: int
    lesion_tp: int
    lesion_fn: int
    lesion_fp: int
    lesion_f1: float

    def as_dict(self) -> dict[str, float | int]:
        """Fields as a plain dict (column order of the CSV)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _Overlap:
    n_gt: int  # components
    n_pred: int
    gt_sizes: np.ndarray  # (n_gt,) voxels per component
    pred_sizes: np.ndarray
    gt_hit: np.ndarray  # (n_gt,) bool: component touches the other mask
    pred_hit: np.ndarray
    tp_voxels: int
    box: tuple[slice, ...]  # the bounding box of the union, where the labels lie
    gt_labels: np.ndarray  # cc3d labels of each mask over ``box``
    pred_labels: np.ndarray


def cc_connectivity(connectivity: int) -> Literal[6, 18, 26]:
    """``connectivity`` checked for 3-D connected components (6, 18 or 26 neighbours)."""
    if connectivity in (6, 18, 26):
        return cast(Literal[6, 18, 26], connectivity)
    raise ValueError(f"3-D connectivity must be 6, 18 or 26, got {connectivity!r}")


def _as_mask(a: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a 3-D array, got shape {arr.shape}")
    return arr if arr.dtype == np.bool_ else arr != 0


def component_overlaps(
    gt: npt.ArrayLike, pred: npt.ArrayLike, connectivity: int = AUTOPET_CONNECTIVITY
) -> _Overlap:
    """Label both masks once and count, per component, its size and whether it overlaps the
    other mask (one cc3d pass per mask, bincounts over the foreground voxels for the rest)."""
    g = _as_mask(gt, "gt")
    p = _as_mask(pred, "pred")
    if g.shape != p.shape:
        raise ValueError(f"gt and pred shapes differ: {g.shape} vs {p.shape}")
    union = g | p
    # Crop both masks to the bounding box of their union: components, sizes and overlaps
    # are unchanged, cc3d has less to scan.
    box = []
    for ax in range(3):
        hits = np.flatnonzero(union.any(axis=tuple(a for a in range(3) if a != ax)))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1) if hits.size else slice(0, 0))
    sl = tuple(box)
    g = np.ascontiguousarray(g[sl])
    p = np.ascontiguousarray(p[sl])
    g_lab, n_g = cc3d.connected_components(
        g, connectivity=cc_connectivity(connectivity), return_N=True
    )
    p_lab, n_p = cc3d.connected_components(
        p, connectivity=cc_connectivity(connectivity), return_N=True
    )
    # Everything else only looks at foreground voxels (of either mask).
    fg = np.flatnonzero(union[sl])
    gv = g_lab.reshape(-1)[fg].astype(np.int64)
    pv = p_lab.reshape(-1)[fg].astype(np.int64)
    both = (gv > 0) & (pv > 0)
    g_sizes = np.bincount(gv, minlength=n_g + 1)[1:]
    p_sizes = np.bincount(pv, minlength=n_p + 1)[1:]
    g_hit = np.bincount(gv[both], minlength=n_g + 1)[1:] > 0
    p_hit = np.bincount(pv[both], minlength=n_p + 1)[1:] > 0
    return _Overlap(
        n_gt=int(n_g),
        n_pred=int(n_p),
        gt_sizes=g_sizes,
        pred_sizes=p_sizes,
        gt_hit=g_hit,
        pred_hit=p_hit,
        tp_voxels=int(np.count_nonzero(both)),
        box=sl,
        gt_labels=g_lab,
        pred_labels=p_lab,
    )


def autopet_metrics(
    gt: npt.ArrayLike,
    pred: npt.ArrayLike,
    voxel_volume_ml: float,
    edition: Edition = "III",
) -> AutopetMetrics:
    """The autoPET metrics of one case.

    Parameters
    ----------
    gt, pred : (I, J, K) array-like
        Ground-truth and predicted lesion masks on the same grid (nonzero = lesion).
    voxel_volume_ml : float
        Volume of one voxel in ml. The challenge scripts take it from a NIfTI header's
        pixdim (see :func:`voxel_volume_source` for which file per edition).
    edition : {"I", "III", "IV"}
        Which challenge's empty-ground-truth rules to apply (module docstring).

    Returns
    -------
    AutopetMetrics

    Examples
    --------
    The challenge's worked example: two 4³ ground-truth cubes, the prediction one of them
    shifted by one voxel along each axis.

    >>> gt = np.zeros((16, 16, 16), np.uint8)
    >>> gt[2:6, 2:6, 2:6] = 1; gt[9:13, 9:13, 9:13] = 1
    >>> pred = np.zeros_like(gt); pred[3:7, 3:7, 3:7] = 1
    >>> m = autopet_metrics(gt, pred, voxel_volume_ml=0.001)
    >>> m.dice, m.fp_voxels, m.fn_voxels
    (0.28125, 0.0, 64.0)
    """
    if edition not in EDITIONS:
        raise ValueError(f"edition must be one of {EDITIONS}, got {edition!r}")
    if not (voxel_volume_ml > 0 and math.isfinite(voxel_volume_ml)):
        raise ValueError(f"voxel_volume_ml must be positive and finite, got {voxel_volume_ml}")
    ov = component_overlaps(gt, pred)
    n_gt_vox = int(ov.gt_sizes.sum())
    n_pred_vox = int(ov.pred_sizes.sum())
    fp_vox: float = float(ov.pred_sizes[~ov.pred_hit].sum())
    fn_vox: float = float(ov.gt_sizes[~ov.gt_hit].sum())
    denom = n_gt_vox + n_pred_vox
    dice = 2.0 * ov.tp_voxels / denom if denom else math.nan
    if n_gt_vox == 0 and edition in ("III", "IV"):
        dice = math.nan
        fn_vox = math.nan
    lesion_tp = int(ov.gt_hit.sum())
    lesion_fn = ov.n_gt - lesion_tp
    lesion_fp = int((~ov.pred_hit).sum())
    f1_den = 2 * lesion_tp + lesion_fp + lesion_fn
    return AutopetMetrics(
        dice=float(dice),
        fp_volume_ml=fp_vox * voxel_volume_ml,
        fn_volume_ml=fn_vox * voxel_volume_ml,
        fp_voxels=fp_vox,
        fn_voxels=fn_vox,
        gt_voxels=n_gt_vox,
        pred_voxels=n_pred_vox,
        tp_voxels=ov.tp_voxels,
        gt_lesions=ov.n_gt,
        pred_lesions=ov.n_pred,
        lesion_tp=lesion_tp,
        lesion_fn=lesion_fn,
        lesion_fp=lesion_fp,
        lesion_f1=2.0 * lesion_tp / f1_den if f1_den else math.nan,
    )


def voxel_volume_source(edition: Edition) -> Literal["gt", "pred"]:
    """Which file's header pixdim the edition's script uses for the voxel volume.

    >>> voxel_volume_source("III"), voxel_volume_source("IV")
    ('gt', 'pred')
    """
    if edition not in EDITIONS:
        raise ValueError(f"edition must be one of {EDITIONS}, got {edition!r}")
    # I and IV read both files into `voxel_vol` in turn, so the prediction's value wins;
    # III keeps the ground truth's.
    return "gt" if edition == "III" else "pred"


def aggregate_autopet(
    results: Iterable[AutopetMetrics | Mapping[str, float]],
) -> dict[str, float]:
    """Cohort scores: the nan-mean of every numeric column, as the challenge aggregates.

    A column that is nan for every case gives nan. ``n_cases`` is added.
    """
    rows = [r.as_dict() if isinstance(r, AutopetMetrics) else dict(r) for r in results]
    out: dict[str, float] = {"n_cases": float(len(rows))}
    if not rows:
        return out
    for key in AutopetMetrics.__dataclass_fields__:
        vals = np.array([float(r[key]) for r in rows if key in r], dtype=np.float64)
        finite = vals[~np.isnan(vals)]
        out[key] = float(finite.mean()) if finite.size else math.nan
    return out


# -- the components as masks (pictures) ------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MaskComparison:
    """Connected components of ground truth and prediction, classed autoPET's way.

    Attributes
    ----------
    matched_gt, missed_gt : Volume
        uint8 masks: ground-truth components touched / not touched by the prediction (FN).
    matched_pred, false_pos : Volume
        uint8 masks: predicted components touching ground truth / touching none (FP).
    n_gt, n_pred, n_fn, n_fp : int
        Component counts.
    fn_volume_ml, fp_volume_ml : float
        Volumes of the missed and false-positive components (autoPET FNV, FPV).
    """

    matched_gt: Volume
    missed_gt: Volume
    matched_pred: Volume
    false_pos: Volume
    n_gt: int
    n_pred: int
    n_fn: int
    n_fp: int
    fn_volume_ml: float
    fp_volume_ml: float


Connectivity = Literal[6, 18, 26]


def compare_masks(gt: Volume, pred: Volume, connectivity: Connectivity = 18) -> MaskComparison:
    """Split ground truth and prediction into components; class matched, FN and FP.

    Raises
    ------
    GeometryMismatchError
        If the two masks are not on the same grid.
    """
    if not gt.same_grid(pred, atol=1e-3):
        raise GeometryMismatchError(
            f"prediction grid {pred.shape} {pred.orientation} differs from the ground truth "
            f"{gt.shape} {gt.orientation}; resample the prediction to the PET grid first"
        )
    if connectivity not in (6, 18, 26):
        raise PetcorpusError(f"connectivity must be 6, 18 or 26, got {connectivity!r}")
    g = np.asarray(gt.array) > 0
    p = np.asarray(pred.array) > 0
    ov = component_overlaps(g, p, connectivity)

    def full(labels: np.ndarray, hit: np.ndarray) -> np.ndarray:
        """Voxels of the components with ``hit`` set, on the whole grid."""
        out = np.zeros(g.shape, dtype=bool)
        out[ov.box] = np.concatenate(([False], hit))[labels]
        return out

    g_hit = full(ov.gt_labels, ov.gt_hit)
    p_hit = full(ov.pred_labels, ov.pred_hit)
    missed = g & ~g_hit
    fp = p & ~p_hit
    ml = gt.voxel_volume_ml
    u8 = np.uint8
    return MaskComparison(
        matched_gt=gt.with_array(g_hit.astype(u8)),
        missed_gt=gt.with_array(missed.astype(u8)),
        matched_pred=gt.with_array(p_hit.astype(u8)),
        false_pos=gt.with_array(fp.astype(u8)),
        n_gt=ov.n_gt,
        n_pred=ov.n_pred,
        n_fn=ov.n_gt - int(ov.gt_hit.sum()),
        n_fp=ov.n_pred - int(ov.pred_hit.sum()),
        fn_volume_ml=float(missed.sum() * ml),
        fp_volume_ml=float(fp.sum() * ml),
    )
