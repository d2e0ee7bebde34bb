"""Surface metrics for many labels at once: ASSD, HD, HD95, normalised surface Dice.

Surface definition
------------------
The surface of a mask is its set of **border voxels**: ``mask XOR erode(mask)``, eroded
once with the structuring element ``scipy.ndimage.generate_binary_structure(3,
connectivity)`` and voxels outside the array counted as background (scipy's
``border_value=0``). Distances are Euclidean, in mm, **between voxel centres**
(``index x spacing``, so anisotropic voxels are exact), from each border voxel of one mask
to the nearest border voxel of the other.

- ``connectivity=1`` (default; 6-neighbour cross) is what MONAI does
  (``monai.metrics.utils.get_mask_edges`` with ``spacing=None``, then
  ``get_surface_distance(distance_metric="euclidean", spacing=...)``, as used by
  ``compute_average_surface_distance``, ``compute_hausdorff_distance`` and
  ``compute_surface_dice(use_subvoxels=False)``) and what medpy does with its default
  ``connectivity=1``.
- ``connectivity=3`` (26-neighbour cube) equals medpy with ``connectivity=3``: a thinner,
  face-and-corner surface.
- DeepMind's ``surface-distance`` weights *surfels* (faces between voxels, with areas); that
  is a different definition and is not implemented here.

Metrics, with ``d_pg`` the distances from predicted border voxels to the ground-truth
surface and ``d_gp`` the reverse:

- ``assd``: mean of all distances of both directions pooled
  (MONAI ``compute_average_surface_distance(symmetric=True)``);
  ``asd_pred_to_gt`` / ``asd_gt_to_pred``: the directed means.
- ``hd``: ``max(max d_pg, max d_gp)``.
- ``hd95``: with ``hd_mode="max"`` (default), ``max(P95(d_pg), P95(d_gp))`` (MONAI
  ``compute_hausdorff_distance(percentile=95, directed=False)``); with ``hd_mode="pooled"``
  the 95th percentile of both directions pooled (medpy ``hd95``). Percentiles interpolate
  linearly (numpy's default, torch.quantile's default).
- ``nsd``: ``(#{d_pg <= tau} + #{d_gp <= tau}) / (#border_pred + #border_gt)`` at the
  tolerance ``tau`` mm (MONAI ``compute_surface_dice(use_subvoxels=False)``).

Empty cases: label absent from both maps: every distance metric and ``nsd`` are nan.
Absent from one map only: ``assd``, ``hd``, ``hd95`` and the directed means are ``inf``
(MONAI gives inf too) and ``nsd`` is 0.

Speed
-----
Bounding boxes of all labels come from one ``scipy.ndimage.find_objects`` pass per map;
each label is then cropped to the union of its two boxes plus one voxel of zero padding
(which is exactly what the full-volume computation sees there), and gets one distance
transform per side (ground truth and prediction) over that crop.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from petcorpus.metrics.overlap import _int_labels

__all__ = [
    "SurfaceMetrics",
    "border_voxels",
    "surface_distances",
    "surface_metrics",
    "surface_metrics_from_distances",
]

HdMode = Literal["max", "pooled"]
Backend = Literal["scipy", "edt"]


@dataclasses.dataclass(frozen=True)
class SurfaceMetrics:
    """Surface agreement of one label (distances in mm).

    See the module docstring for the definitions and the empty-case values.
    """

    label: int
    assd: float
    asd_pred_to_gt: float
    asd_gt_to_pred: float
    hd: float
    hd95: float
    nsd: float
    tolerance_mm: float
    gt_border_voxels: int
    pred_border_voxels: int

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def _spacing(spacing: Sequence[float] | npt.ArrayLike) -> np.ndarray:
    sp = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing must be three positive numbers (mm), got {spacing!r}")
    return sp


def border_voxels(mask: npt.ArrayLike, connectivity: int = 1) -> np.ndarray:
    """Border voxels of a binary mask: ``mask XOR erode(mask)`` (outside = background).

    >>> m = np.zeros((5, 5, 5), bool); m[1:4, 1:4, 1:4] = True
    >>> int(border_voxels(m).sum()), int(border_voxels(m, connectivity=3).sum())
    (26, 26)
    """
    m = np.asarray(mask, dtype=bool)
    if connectivity not in (1, 2, 3):
        raise ValueError(f"connectivity must be 1, 2 or 3, got {connectivity}")
    st = ndimage.generate_binary_structure(3, connectivity)
    return m ^ ndimage.binary_erosion(m, structure=st, border_value=0)


def _border_padded(m: np.ndarray, connectivity: int) -> np.ndarray:
    """Border voxels of a mask whose outermost layer is all background (a padded crop):
    the same as :func:`border_voxels`, by shifted ANDs instead of a generic erosion."""
    core = (slice(1, -1),) * 3
    interior = m[core].copy()
    for d in itertools.product((-1, 0, 1), repeat=3):
        n = sum(map(abs, d))
        if n == 0 or n > connectivity:
            continue
        interior &= m[tuple(slice(1 + o, m.shape[a] - 1 + o) for a, o in enumerate(d))]
    out = m.copy()
    out[core] &= ~interior
    return out


def _directed(
    border_from: np.ndarray, border_to: np.ndarray, sp: np.ndarray, backend: Backend = "scipy"
) -> np.ndarray:
    """Distances (mm) from every voxel of ``border_from`` to the nearest of ``border_to``."""
    if not border_from.any():
        return np.empty(0, dtype=np.float64)
    if not border_to.any():
        return np.full(int(border_from.sum()), np.inf)
    if backend == "edt":
        import edt

        dist = edt.edt(~border_to, anisotropy=tuple(sp), black_border=False, parallel=0)
        return np.asarray(dist[border_from], dtype=np.float64)
    # scipy: the feature transform (nearest border voxel of every voxel), then distances
    # only where they are needed, with scipy's own formula (bit-identical to its
    # ``return_distances`` output, without a float64 volume).
    ft = ndimage.distance_transform_edt(
        ~border_to, sampling=sp, return_distances=False, return_indices=True
    )
    q = np.nonzero(border_from)
    d2 = np.zeros(q[0].size, dtype=np.float64)
    for ax in range(3):
        diff = (ft[ax][q] - q[ax]).astype(np.float64)
        diff *= sp[ax]
        d2 += diff * diff
    return np.sqrt(d2)


def surface_distances(
    gt: npt.ArrayLike,
    pred: npt.ArrayLike,
    spacing: Sequence[float] | npt.ArrayLike,
    connectivity: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances of two binary masks on the same grid.

    Returns
    -------
    d_pred_to_gt, d_gt_to_pred : 1-D float64 arrays (mm)
        One value per border voxel of the first-named mask, in C order of the voxels; a
        direction whose target surface is empty gives ``inf`` values.
    """
    sp = _spacing(spacing)
    g = np.asarray(gt) != 0
    p = np.asarray(pred) != 0
    if g.shape != p.shape:
        raise ValueError(f"gt and pred shapes differ: {g.shape} vs {p.shape}")
    union = g | p
    if not union.any():
        return np.empty(0), np.empty(0)
    others = [tuple(a for a in range(3) if a != ax) for ax in range(3)]
    idx = [np.flatnonzero(union.any(axis=o)) for o in others]
    sl = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx)
    gc = np.pad(g[sl], 1)
    pc = np.pad(p[sl], 1)
    bg = border_voxels(gc, connectivity)
    bp = border_voxels(pc, connectivity)
    return _directed(bp, bg, sp), _directed(bg, bp, sp)


def surface_metrics_from_distances(
    d_pred_to_gt: np.ndarray,
    d_gt_to_pred: np.ndarray,
    label: int = 1,
    tolerance_mm: float = 2.0,
    percentile: float = 95.0,
    hd_mode: HdMode = "max",
) -> SurfaceMetrics:
    """Summarise directed distances into :class:`SurfaceMetrics` (definitions above)."""
    n_p, n_g = d_pred_to_gt.size, d_gt_to_pred.size
    if n_p == 0 and n_g == 0:
        nan = math.nan
        return SurfaceMetrics(label, nan, nan, nan, nan, nan, nan, tolerance_mm, 0, 0)
    if n_p == 0 or n_g == 0:
        inf = math.inf
        return SurfaceMetrics(label, inf, inf, inf, inf, inf, 0.0, tolerance_mm, n_g, n_p)
    both = np.concatenate([d_pred_to_gt, d_gt_to_pred])
    if hd_mode == "max":
        hd95 = max(
            float(np.percentile(d_pred_to_gt, percentile)),
            float(np.percentile(d_gt_to_pred, percentile)),
        )
    elif hd_mode == "pooled":
        hd95 = float(np.percentile(both, percentile))
    else:
        raise ValueError(f"hd_mode must be 'max' or 'pooled', got {hd_mode!r}")
    return SurfaceMetrics(
        label=label,
        assd=float(both.mean()),
        asd_pred_to_gt=float(d_pred_to_gt.mean()),
        asd_gt_to_pred=float(d_gt_to_pred.mean()),
        hd=float(both.max()),
        hd95=hd95,
        nsd=float(np.count_nonzero(both <= tolerance_mm)) / both.size,
        tolerance_mm=tolerance_mm,
        gt_border_voxels=n_g,
        pred_border_voxels=n_p,
    )


def _boxes(lab: np.ndarray, top: int) -> list[tuple[slice, ...] | None]:
    if lab.dtype.itemsize > 4 or lab.dtype.kind not in "iu":
        lab = lab.astype(np.int32)
    boxes = ndimage.find_objects(lab, max_label=top)
    return list(boxes) + [None] * (top - len(boxes))


def surface_metrics(
    gt: npt.ArrayLike,
    pred: npt.ArrayLike,
    spacing: Sequence[float] | npt.ArrayLike,
    labels: Sequence[int] | None = None,
    tolerance_mm: float = 2.0,
    percentile: float = 95.0,
    connectivity: int = 1,
    hd_mode: HdMode = "max",
    backend: Backend = "scipy",
    workers: int | None = None,
) -> dict[int, SurfaceMetrics]:
    """ASSD, HD, HD95 and NSD for every label of two label maps on the same grid.

    Parameters
    ----------
    gt, pred : (I, J, K) integer array-like
        Label maps (0 = background); a binary mask is label 1.
    spacing : (3,) float
        Voxel size in mm along i, j, k.
    labels : sequence of int, optional
        Labels to report; default every nonzero label present in either map.
    tolerance_mm : float
        Tolerance of the normalised surface Dice.
    percentile : float
        Percentile of the robust Hausdorff distance (95 gives HD95).
    connectivity : {1, 2, 3}
        Structuring element of the erosion that defines the border (1 = MONAI, medpy).
    hd_mode : {"max", "pooled"}
        How the percentile combines the two directions ("max" = MONAI, "pooled" = medpy).
    backend : {"scipy", "edt"}
        Distance transform: ``scipy`` (default; float64, bit-identical to the brute-force
        definition) or ``edt`` (the multi-threaded ``edt`` package, float32 distances:
        relative error ~1e-7, as MONAI's float32 results; about 3x faster).
    workers : int, optional
        Labels measured concurrently in threads (scipy's and edt's transforms release the
        GIL); default: one per core. Results do not depend on it.

    Returns
    -------
    dict of int to SurfaceMetrics
    """
    if backend not in ("scipy", "edt"):
        raise ValueError(f"backend must be 'scipy' or 'edt', got {backend!r}")
    if connectivity not in (1, 2, 3):
        raise ValueError(f"connectivity must be 1, 2 or 3, got {connectivity}")
    sp = _spacing(spacing)
    g = _int_labels(gt, "gt")
    p = _int_labels(pred, "pred")
    if g.shape != p.shape:
        raise ValueError(f"gt and pred shapes differ: {g.shape} vs {p.shape}")
    top = int(max(g.max(initial=0), p.max(initial=0)))
    if labels is not None:
        top = max([top, *(int(v) for v in labels)])
    gb = _boxes(g, top) if top else []
    pb = _boxes(p, top) if top else []
    if labels is None:  # labels present: those with a bounding box in either map
        wanted = [i + 1 for i in range(top) if gb[i] is not None or pb[i] is not None]
    else:
        wanted = [int(v) for v in labels]

    def one(lab: int) -> SurfaceMetrics:
        boxes = [b for b in ((gb[lab - 1], pb[lab - 1]) if lab > 0 else ()) if b is not None]
        if not boxes:
            return surface_metrics_from_distances(
                np.empty(0), np.empty(0), lab, tolerance_mm, percentile, hd_mode
            )
        sl = tuple(
            slice(min(b[ax].start for b in boxes), max(b[ax].stop for b in boxes))
            for ax in range(3)
        )
        gc = np.pad(g[sl] == lab, 1)
        pc = np.pad(p[sl] == lab, 1)
        bg = _border_padded(gc, connectivity)
        bp = _border_padded(pc, connectivity)
        return surface_metrics_from_distances(
            _directed(bp, bg, sp, backend),
            _directed(bg, bp, sp, backend),
            lab,
            tolerance_mm,
            percentile,
            hd_mode,
        )

    if workers is None:
        workers = os.cpu_count() or 1
    if workers > 1 and len(wanted) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, wanted))
    else:
        results = [one(lab) for lab in wanted]
    return dict(zip(wanted, results, strict=True))
