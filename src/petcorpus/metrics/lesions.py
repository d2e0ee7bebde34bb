"""Lesion statistics from an SUV image and a lesion mask.

A lesion is a connected component of the mask (cc3d, connectivity 18 by default, as in the
autoPET metrics). Per lesion:

- ``suv_max``: highest SUV in the lesion; ``suv_mean``: mean SUV of its voxels;
- ``suv_peak``: mean SUV inside a sphere of 1 cm³ (radius ``(3/(4π))^(1/3)`` cm = 6.2035 mm)
  centred on the lesion's hottest voxel, as PERCIST defines it. Voxels are chosen by their
  **centre**: every voxel whose centre lies within the radius of the hottest voxel's centre
  (Euclidean in mm, anisotropic spacing honoured), whether or not it belongs to the lesion,
  and only voxels inside the image. Ties for the hottest voxel go to the first in C order.
  (PERCIST's search for the sphere position with the highest mean is not done.)
- ``mtv_ml``: voxels x voxel volume; ``tlg``: ``suv_mean x mtv_ml``;
- ``centroid_{x,y,z}_mm``: mean of the voxel centres, in RAS+ mm (the volume's affine).

Per study: lesion count, total MTV, total TLG and ``dmax_mm``, the largest distance between
two lesion centroids (0 for one lesion, nan for none).

Everything per lesion comes from one labelling pass and ``np.bincount`` over the lesion
voxels, never a loop over lesions touching the full volume (the peak sphere is a small
neighbourhood per lesion).
"""

from __future__ import annotations

import dataclasses
import math

import cc3d
import numpy as np
import numpy.typing as npt

from petcorpus.errors import GeometryMismatchError
from petcorpus.metrics.autopet import cc_connectivity
from petcorpus.volume import Volume

__all__ = [
    "PEAK_RADIUS_MM",
    "LesionStats",
    "StudyLesionSummary",
    "lesion_statistics",
    "study_summary",
]

#: Radius (mm) of a sphere of 1 cm³ = 1000 mm³.
PEAK_RADIUS_MM = float((3000.0 / (4.0 * math.pi)) ** (1.0 / 3.0))


@dataclasses.dataclass(frozen=True)
class LesionStats:
    """Statistics of one lesion (one connected component of the mask)."""

    lesion: int  # 1-based, in cc3d label order
    voxels: int
    mtv_ml: float
    suv_max: float
    suv_mean: float
    suv_peak: float
    tlg: float
    centroid_x_mm: float
    centroid_y_mm: float
    centroid_z_mm: float
    hottest_i: int
    hottest_j: int
    hottest_k: int

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class StudyLesionSummary:
    """Per-study totals over its lesions."""

    lesion_count: int
    total_mtv_ml: float
    total_tlg: float
    dmax_mm: float

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def _sphere_offsets(spacing: np.ndarray, radius_mm: float) -> np.ndarray:
    """Integer (di, dj, dk) offsets whose voxel centres lie within ``radius_mm``."""
    half = np.floor(radius_mm / spacing).astype(int)
    grids = np.meshgrid(*(np.arange(-h, h + 1) for h in half), indexing="ij")
    offs = np.stack([g.ravel() for g in grids], axis=1)
    d2 = ((offs * spacing) ** 2).sum(axis=1)
    return offs[d2 <= radius_mm**2 + 1e-9]


def lesion_statistics(
    suv: Volume,
    mask: Volume | npt.ArrayLike,
    connectivity: int = 18,
    peak_radius_mm: float = PEAK_RADIUS_MM,
) -> list[LesionStats]:
    """Statistics of every lesion of a mask over an SUV image.

    Parameters
    ----------
    suv : Volume
        SUV image (its affine gives voxel size, volume and centroid positions).
    mask : Volume or (I, J, K) array-like
        Lesion mask on the same grid (nonzero = lesion).
    connectivity : {6, 18, 26}
        Connectivity that separates lesions.
    peak_radius_mm : float
        Radius of the SUVpeak sphere (default: 1 cm³).

    Returns
    -------
    list of LesionStats
        Numbered in C order of each lesion's first voxel (index i slowest), whatever the
        memory layout of the input.
    """
    if isinstance(mask, Volume):
        if not suv.same_grid(mask):
            raise GeometryMismatchError(
                f"mask grid {mask.shape} does not match the SUV grid {suv.shape}"
            )
        m = mask.array != 0
    else:
        m = np.asarray(mask) != 0
        if m.shape != suv.shape:
            raise GeometryMismatchError(
                f"mask shape {m.shape} does not match the SUV shape {suv.shape}"
            )
    values = np.asarray(suv.array)
    # cc3d numbers components in memory order: make it C order so the lesion numbering
    # does not depend on how the array was loaded (nibabel gives Fortran order).
    m = np.ascontiguousarray(m)
    lab, n = cc3d.connected_components(
        m, connectivity=cc_connectivity(connectivity), return_N=True
    )
    if n == 0:
        return []
    # Only lesion voxels are visited from here on (in C order).
    vox = np.nonzero(m)
    lab_at = lab[vox].astype(np.int64)
    vals_at = values[vox].astype(np.float64)
    counts = np.bincount(lab_at, minlength=n + 1)[1:]
    sums = np.bincount(lab_at, weights=vals_at, minlength=n + 1)[1:]
    maxima = np.full(n, -np.inf)
    np.maximum.at(maxima, lab_at - 1, vals_at)
    # Hottest voxel: the first (C order) voxel of each lesion holding the lesion's maximum.
    at_max = vals_at == maxima[lab_at - 1]
    firsts = np.flatnonzero(at_max)
    _, first_of_label = np.unique(lab_at[firsts], return_index=True)
    hottest = np.stack([v[firsts[first_of_label]] for v in vox], axis=1).astype(np.int64)
    # Centroids: mean voxel index per lesion, then the affine.
    centre_idx = np.stack(
        [np.bincount(lab_at, weights=v, minlength=n + 1)[1:] / counts for v in vox], axis=1
    )
    centroids = suv.voxel_to_world(centre_idx)
    spacing = suv.spacing
    offs = _sphere_offsets(spacing, peak_radius_mm)
    shape = np.array(values.shape)
    voxel_ml = suv.voxel_volume_ml
    out: list[LesionStats] = []
    for c in range(n):
        pts = hottest[c] + offs
        keep = np.all((pts >= 0) & (pts < shape), axis=1)
        pts = pts[keep]
        peak = float(values[pts[:, 0], pts[:, 1], pts[:, 2]].astype(np.float64).mean())
        mean = float(sums[c] / counts[c])
        mtv = float(counts[c] * voxel_ml)
        out.append(
            LesionStats(
                lesion=c + 1,
                voxels=int(counts[c]),
                mtv_ml=mtv,
                suv_max=float(maxima[c]),
                suv_mean=mean,
                suv_peak=peak,
                tlg=mean * mtv,
                centroid_x_mm=float(centroids[c, 0]),
                centroid_y_mm=float(centroids[c, 1]),
                centroid_z_mm=float(centroids[c, 2]),
                hottest_i=int(hottest[c, 0]),
                hottest_j=int(hottest[c, 1]),
                hottest_k=int(hottest[c, 2]),
            )
        )
    return out


def study_summary(lesions: list[LesionStats]) -> StudyLesionSummary:
    """Count, total MTV, total TLG and Dmax (largest centroid-to-centroid distance, mm)."""
    if not lesions:
        return StudyLesionSummary(0, 0.0, 0.0, math.nan)
    c = np.array([[x.centroid_x_mm, x.centroid_y_mm, x.centroid_z_mm] for x in lesions])
    d = np.sqrt(((c[:, None, :] - c[None, :, :]) ** 2).sum(axis=-1))
    return StudyLesionSummary(
        lesion_count=len(lesions),
        total_mtv_ml=float(sum(x.mtv_ml for x in lesions)),
        total_tlg=float(sum(x.tlg for x in lesions)),
        dmax_mm=float(d.max()),
    )
