"""PERCIST reference regions on the PET grid: the liver sphere and the blood-pool cylinder.

:func:`percist_references` places a 3 cm sphere in the right lobe of the liver mask and a
1 x 2 cm cylinder in the descending thoracic aorta, and measures the PET values inside
(see its docstring for the rules); :mod:`petcorpus.organs` calls it with the organ masks
mapped to the PET grid.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from petcorpus.errors import GeometryMismatchError
from petcorpus.volume import Volume

__all__ = [
    "PERCIST_MAX_COV",
    "PERCIST_MAX_PEAK",
    "PercistReference",
    "percist_problems",
    "percist_references",
]

#: A liver reference is unusable above this sd / mean, or with a maximum above
#: ``PERCIST_MAX_PEAK`` × its mean (a hot spot, e.g. an unlabelled lesion, inside).
PERCIST_MAX_COV = 0.25
PERCIST_MAX_PEAK = 2.0


@dataclasses.dataclass(frozen=True)
class PercistReference:
    """PERCIST reference values and where they were measured (PET grid).

    ``liver_centre`` / ``blood_centre`` are RAS+ mm; the masks are boolean PET-grid arrays
    (None when not placed); ``*_status`` is ``"ok"`` or why the value is NaN / a fallback.
    """

    liver_mean: float
    liver_sd: float
    liver_voxels: int
    liver_centre: tuple[float, float, float] | None
    liver_status: str
    blood_mean: float
    blood_sd: float
    blood_voxels: int
    blood_centre: tuple[float, float, float] | None
    blood_status: str
    liver_mask: np.ndarray | None = dataclasses.field(default=None, repr=False)
    blood_mask: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def as_row(self) -> dict[str, object]:
        """The numbers only (no masks), for a table row."""
        out = dataclasses.asdict(self)
        out.pop("liver_mask")
        out.pop("blood_mask")
        for k in ("liver_centre", "blood_centre"):
            c = out.pop(k)
            for axis, v in zip("xyz", c if c is not None else (math.nan,) * 3, strict=True):
                out[f"{k}_{axis}"] = v
        return out


def _bbox(mask: np.ndarray) -> tuple[slice, slice, slice]:
    """The smallest box holding ``mask``."""
    out = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        out.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return out[0], out[1], out[2]


def _world_box(
    vol: Volume, box: tuple[slice, slice, slice]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RAS+ mm of the voxel centres of ``box`` as three broadcastable arrays."""
    i = np.arange(box[0].start, box[0].stop, dtype=np.float64)[:, None, None]
    j = np.arange(box[1].start, box[1].stop, dtype=np.float64)[None, :, None]
    k = np.arange(box[2].start, box[2].stop, dtype=np.float64)[None, None, :]
    a = vol.affine
    x, y, z = (a[r, 0] * i + a[r, 1] * j + a[r, 2] * k + a[r, 3] for r in range(3))
    return x, y, z


def _liver_sphere(
    pet: Volume, liver: np.ndarray, radius_mm: float
) -> tuple[np.ndarray | None, tuple[float, float, float] | None, str]:
    if not liver.any():
        return None, None, "no liver mask"
    # Work in the liver's bounding box: the sphere lies inside the liver by construction.
    box = _bbox(liver)
    lv = liver[box]
    # Pad with background so the field-of-view edge counts as outside the liver.
    dist = ndimage.distance_transform_edt(np.pad(lv, 1), sampling=pet.spacing)[1:-1, 1:-1, 1:-1]
    x, y, z = _world_box(pet, box)
    xb = np.broadcast_to(x, lv.shape)
    right = lv & (xb >= float(xb[lv].mean()))  # RAS+: +x = patient's right
    status = "ok"
    cand = right & (dist > radius_mm)
    if not cand.any():
        cand = lv & (dist > radius_mm)
        status = "sphere not in the right half; placed in the whole liver"
    if not cand.any():
        return None, None, f"liver too small for a {2 * radius_mm:g} mm sphere"
    best = dist[cand].max()
    pts = np.argwhere(cand & (dist >= best - 1e-9))
    ref = np.argwhere(right if right.any() else lv).mean(axis=0)
    local = pts[np.argmin(np.sum((pts - ref) ** 2, axis=1))]
    centre_ijk = local + np.array([b.start for b in box])
    c = pet.voxel_to_world(centre_ijk)
    d2 = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2
    sphere = np.zeros(liver.shape, dtype=bool)
    sphere[box] = np.broadcast_to(d2 <= radius_mm**2, lv.shape)
    return sphere, (float(c[0]), float(c[1]), float(c[2])), status


def _blood_cylinder(
    pet: Volume,
    aorta: np.ndarray,
    liver: np.ndarray | None,
    radius_mm: float,
    length_mm: float,
) -> tuple[np.ndarray | None, tuple[float, float, float] | None, str]:
    if not aorta.any():
        return None, None, "no aorta mask"
    dirz = pet.direction[:, 2]
    if abs(abs(dirz[2]) - 1.0) > 1e-3:
        return None, None, "PET slices are not axial"
    zk = (pet.affine[2, 2] * np.arange(pet.shape[2]) + pet.affine[2, 3]).astype(np.float64)
    ks = np.flatnonzero(aorta.any(axis=(0, 1)))
    top = zk[ks].max()
    below_arch = ks[zk[ks] <= top - 20.0]
    thoracic = below_arch
    status = "ok"
    if liver is not None and liver.any():
        liver_top = zk[np.flatnonzero(liver.any(axis=(0, 1)))].max()
        thoracic = below_arch[zk[below_arch] > liver_top]
    if thoracic.size * abs(pet.spacing[2]) < length_mm:
        thoracic = below_arch if below_arch.size else ks
        status = "descending thoracic aorta not found above the liver; used aorta below the arch"
    kc = int(thoracic[np.argsort(zk[thoracic])[thoracic.size // 2]])
    box = _bbox(aorta)
    ao = aorta[box]
    x, y, z = _world_box(pet, box)
    kl = kc - box[2].start
    comp, n = ndimage.label(ao[:, :, kl])
    if n == 0:  # pragma: no cover - kc was chosen among slices holding aorta
        return None, None, "no aorta in the chosen slice"
    xs = np.broadcast_to(x[:, :, min(kl, x.shape[2] - 1)], ao.shape[:2])
    ys = np.broadcast_to(y[:, :, min(kl, y.shape[2] - 1)], ao.shape[:2])
    cents = [(ys[comp == c].mean(), xs[comp == c].mean(), c) for c in range(1, n + 1)]
    cy, cx, _ = min(cents)  # most posterior component (RAS+: +y = anterior)
    cz = float(zk[kc])
    r_eff = max(radius_mm, 0.5 * math.hypot(pet.spacing[0], pet.spacing[1]))
    cyl = ((x - cx) ** 2 + (y - cy) ** 2 <= r_eff**2) & (np.abs(z - cz) <= length_mm / 2)
    inside = np.broadcast_to(cyl, ao.shape) & ao
    if not inside.any():
        return None, None, "blood-pool cylinder misses the aorta"
    mask = np.zeros(aorta.shape, dtype=bool)
    mask[box] = inside
    return mask, (float(cx), float(cy), cz), status


def percist_references(
    pet: Volume,
    liver: npt.ArrayLike | None,
    aorta: npt.ArrayLike | None,
    *,
    exclude: npt.ArrayLike | None = None,
    liver_diameter_mm: float = 30.0,
    blood_diameter_mm: float = 10.0,
    blood_length_mm: float = 20.0,
) -> PercistReference:
    """PERCIST liver and blood-pool reference values on the PET grid.

    Liver: a sphere of ``liver_diameter_mm`` (3 cm) whose voxel centres all lie in the liver
    mask (minus ``exclude``, e.g. lesions): candidate centres are liver voxels whose Euclidean
    distance (mm, anisotropic) to the nearest non-liver voxel exceeds the radius; among those
    in the patient's right half of the liver (RAS x >= the liver's mean x) the deepest is
    taken (ties: nearest the right half's centroid). Fallback: the whole liver.

    Blood pool: a vertical cylinder of ``blood_diameter_mm`` x ``blood_length_mm`` in the
    descending thoracic aorta, intersected with the aorta mask: slices of the aorta at least
    2 cm below its top (the arch) and above the liver dome; the middle such slice; its most
    posterior aorta component's centroid is the axis. On coarse grids the radius is widened to
    half an in-plane voxel diagonal so each slice holds at least one voxel.
    """
    values = np.asarray(pet.array)
    lv = None if liver is None else np.asarray(liver, dtype=bool)
    ao = None if aorta is None else np.asarray(aorta, dtype=bool)
    ex = None if exclude is None else np.asarray(exclude, dtype=bool)
    for name, m in (("liver", lv), ("aorta", ao), ("exclude", ex)):
        if m is not None and m.shape != pet.shape:
            msg = f"{name} mask {m.shape} is not on the PET grid {pet.shape}"
            raise GeometryMismatchError(msg)
    lv_place = lv & ~ex if lv is not None and ex is not None else lv
    if lv_place is not None:
        sphere, lc, ls = _liver_sphere(pet, lv_place, liver_diameter_mm / 2)
    else:
        sphere, lc, ls = None, None, "no liver mask"
    if ao is not None:
        blood, bc, bs = _blood_cylinder(pet, ao, lv, blood_diameter_mm / 2, blood_length_mm)
    else:
        blood, bc, bs = None, None, "no aorta mask"

    def summary(m: np.ndarray | None) -> tuple[float, float, int]:
        if m is None:
            return math.nan, math.nan, 0
        v = values[m].astype(np.float64)
        return float(v.mean()), float(v.std()), int(v.size)

    lm, lsd, ln = summary(sphere)
    bm, bsd, bn = summary(blood)
    ref = PercistReference(lm, lsd, ln, lc, ls, bm, bsd, bn, bc, bs, sphere, blood)
    problems = percist_problems(ref, ex, values) if sphere is not None else []
    if problems:  # never reported as ok (see percist_problems)
        ref = dataclasses.replace(ref, liver_status="unusable: " + "; ".join(problems))
    return ref


def percist_problems(
    ref: PercistReference, lesions: np.ndarray | None = None, values: np.ndarray | None = None
) -> list[str]:
    """Why a PERCIST liver reference cannot be used (empty: usable).

    Unusable: it was not placed; the sphere overlaps the lesion mask; its sd / mean exceeds
    :data:`PERCIST_MAX_COV`; or (given the PET ``values``) its maximum exceeds
    :data:`PERCIST_MAX_PEAK` × its mean (a hot spot, e.g. an unlabelled lesion, inside).
    """
    if ref.liver_mask is None or not math.isfinite(ref.liver_mean):
        return [f"no liver reference ({ref.liver_status})"]
    out = []
    sphere = ref.liver_mask
    if lesions is not None and np.shape(lesions) == sphere.shape:
        n = int(np.count_nonzero(sphere & (np.asarray(lesions) > 0)))
        if n:
            out.append(f"the liver sphere overlaps the lesion mask ({n} voxels)")
    cov = ref.liver_sd / ref.liver_mean if ref.liver_mean > 0 else math.inf
    if cov > PERCIST_MAX_COV:
        out.append(
            f"liver reference {ref.liver_mean:.2f} ± {ref.liver_sd:.2f}: sd/mean {cov:.2f} "
            f"above {PERCIST_MAX_COV}"
        )
    if values is not None and np.shape(values) == sphere.shape and ref.liver_mean > 0:
        peak = float(np.asarray(values)[sphere].max()) / ref.liver_mean
        if peak > PERCIST_MAX_PEAK:
            out.append(f"a hot spot inside the liver sphere (max {peak:.1f}× its mean)")
    return out
