"""PET/CT alignment: the shift between the CT (CTres, on the PET grid) and the PET.

:func:`estimate_shift` compares the body outline of both images. Each image gives a body
mask (CT: HU above :data:`CT_BODY_HU`; PET: uptake above a fraction of the body's median,
so a wrong SUV scale does not matter), and each mask gives its *filled* thickness per line
(first to last body voxel along a line, so lungs and bowel gas count as body in both). The
thicknesses summed over the other axes are one profile per voxel axis; a shift along an axis
moves only that axis' profile. The profiles of PET and CT are compared by normalised
cross-correlation over whole-voxel shifts up to ``max_mm``, and the best one is refined to a
fraction of a voxel by a parabola through the peak and its neighbours. Only thresholds,
first/last indices and sums touch the full grid (no interpolation, no 3-D search); a
patient table is left out by keeping the posterior-anterior range of the largest body
component (found on a 4x coarser grid).

:func:`organ_activity_share`: with organ masks drawn on CT (ENHANCE.PET), the share of the
activity above background of each high-uptake organ that falls inside its own mask.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence

import cc3d
import numpy as np

from petcorpus.errors import GeometryMismatchError
from petcorpus.volume import Volume

__all__ = [
    "CT_BODY_HU",
    "HOT_ORGANS",
    "Shift",
    "between",
    "body_mask",
    "estimate_shift",
    "label_mask",
    "line_bounds",
    "organ_activity_share",
    "region_words",
]

#: CT voxels above this (HU) are body (fat is about -100, lung about -850, air -1000).
CT_BODY_HU = -400.0
#: PET voxels above this fraction of the body's median uptake are body.
PET_BODY_FRACTION = 0.3
#: Organs whose uptake stands out on PET, matched by name in an organ label table.
HOT_ORGANS = ("brain", "bladder", "heart", "kidney")
_AXES = ("x", "y", "z")


@dataclasses.dataclass(frozen=True)
class Shift:
    """PET relative to CT: where the PET content lies, in RAS+ mm, minus where the CT's does.

    ``x`` > 0: the PET is moved to the patient's right (RAS), ``y`` > 0 anterior, ``z`` > 0
    superior. ``score`` is the lowest peak correlation of the three profiles (1 = identical
    outlines); ``nan`` components mean the outline gave no answer along that axis.
    """

    x: float
    y: float
    z: float
    score: float

    @property
    def norm(self) -> float:
        """Length of the shift vector (mm)."""
        return math.sqrt(self.x**2 + self.y**2 + self.z**2)

    def as_dict(self) -> dict[str, float]:
        return {"shift_x_mm": self.x, "shift_y_mm": self.y, "shift_z_mm": self.z,
                "shift_score": self.score}  # fmt: skip


def body_threshold(vol: Volume, kind: str) -> float:
    """The value above which a voxel is body: :data:`CT_BODY_HU` for a CT (``kind="ct"``);
    for a PET (``"pet"``, any unit) :data:`PET_BODY_FRACTION` of the median of the voxels
    above a tenth of the 99th percentile (the body's typical uptake), so it follows the
    image's scale (``inf`` for an empty image)."""
    if kind == "ct":
        return CT_BODY_HU
    sample = np.asarray(vol.array)[::4, ::4, ::2]
    hi = float(np.percentile(sample, 99))
    if not hi > 0:
        return math.inf
    return PET_BODY_FRACTION * float(np.median(sample[sample > 0.1 * hi]))


def body_mask(vol: Volume, kind: str) -> np.ndarray:
    """Boolean body mask of a CT (``kind="ct"``, HU) or PET (``"pet"``) volume
    (threshold: :func:`body_threshold`)."""
    return np.asarray(np.asarray(vol.array) > body_threshold(vol, kind))


def _main_component_range(mask: np.ndarray, axis: int, step: int = 4) -> slice:
    """Index range along ``axis`` of the largest 26-connected component of ``mask``, found
    on a ``step`` times coarser grid (a patient table is a separate component)."""
    coarse = np.ascontiguousarray(mask[::step, ::step, ::step])
    if not coarse.any():
        return slice(0, mask.shape[axis])
    labels, n = cc3d.connected_components(coarse, connectivity=26, return_N=True)
    if n <= 1:
        return slice(0, mask.shape[axis])
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    main = labels == int(np.argmax(sizes))
    others = tuple(a for a in range(3) if a != axis)
    idx = np.flatnonzero(main.any(axis=others))
    lo = max(0, int(idx[0]) * step - step)
    hi = min(mask.shape[axis], int(idx[-1]) * step + 2 * step)
    return slice(lo, hi)


def line_bounds(mask: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last ``True`` index of every line of ``mask`` along ``axis`` (kept as a
    length-1 axis); ``(n, -1)`` for a line without one.

    Two max-reductions of the mask times an index ramp in the smallest integer type that
    holds it (vectorised; ~5x faster than ``argmax`` on a flipped boolean array, and a
    uint8 ramp halves the memory traffic of the short sampled axes)."""
    n = mask.shape[axis]
    dtype = np.uint8 if n < 255 else np.int16 if n < 32_000 else np.int32
    shape = [1] * mask.ndim
    shape[axis] = n
    up = np.arange(1, n + 1, dtype=dtype).reshape(shape)
    last = np.max(mask * up, axis=axis, keepdims=True).astype(np.int32) - 1
    first = n - np.max(mask * np.flip(up, axis), axis=axis, keepdims=True).astype(np.int32)
    return first, last


def between(mask: np.ndarray, axis: int, margin: int = 0) -> np.ndarray:
    """Voxels at least ``margin`` voxels inside the first and last ``True`` of their line
    along ``axis`` (``margin=0``: the line filled from its first to its last ``True``)."""
    first, last = line_bounds(mask, axis)
    shape = [1] * mask.ndim
    shape[axis] = mask.shape[axis]
    idx = np.arange(mask.shape[axis], dtype=np.int32).reshape(shape)
    return np.asarray((idx >= first + margin) & (idx <= last - margin))


def _extent(mask: np.ndarray, axis: int) -> np.ndarray:
    """Filled thickness (voxels) of ``mask`` along ``axis``: last − first + 1, 0 if none."""
    first, last = line_bounds(mask, axis)
    return np.squeeze(np.maximum(last - first + 1, 0), axis=axis).astype(np.float64)


def _every(axis: int, step: int) -> tuple[slice, slice, slice]:
    sl = [slice(None)] * 3
    sl[axis] = slice(None, None, step)
    return (sl[0], sl[1], sl[2])


def _profiles(arr: np.ndarray, threshold: float, ap_axis: int) -> list[np.ndarray]:
    """Per voxel axis, the filled body thickness (``arr > threshold``) summed over the
    other axes. Each profile keeps its own axis at full resolution; the axes summed over
    are sampled every second voxel (a sum needs no more)."""
    others = [a for a in range(3) if a != ap_axis]
    out: list[np.ndarray] = [np.zeros(0)] * 3
    # Thickness along AP (sampled every 2nd voxel) -> profiles of the two other axes.
    m = arr[_every(ap_axis, 2)] > threshold
    keep = _main_component_range(m, ap_axis, step=2)
    sl: list[slice] = [slice(None)] * 3
    sl[ap_axis] = keep
    t_ap = _extent(m[tuple(sl)], ap_axis) * 2.0
    out[others[0]] = t_ap.sum(axis=1)
    out[others[1]] = t_ap.sum(axis=0)
    # Thickness along the first other axis (LR), both others sampled -> the AP profile.
    sl2: list[slice] = [slice(None, None, 2)] * 3
    sl2[ap_axis] = slice(keep.start * 2, keep.stop * 2)
    m2 = arr[tuple(sl2)] > threshold
    t_lr = _extent(m2, others[0]) * 2.0  # axes: the remaining two, in order
    rest = [a for a in range(3) if a != others[0]]
    prof = t_lr.sum(axis=rest.index(others[1]))
    full = np.zeros(arr.shape[ap_axis])
    full[keep.start * 2 : keep.start * 2 + prof.size] = prof
    out[ap_axis] = full
    return out


def _ncc_shift(p_pet: np.ndarray, p_ct: np.ndarray, max_shift: int) -> tuple[float, float]:
    """Shift s (voxels, sub-voxel) maximising the correlation of ``p_pet[i]`` and
    ``p_ct[i - s]`` over their overlap; and the peak correlation."""
    n = p_pet.size
    shifts = np.arange(-max_shift, max_shift + 1)
    scores = np.full(shifts.size, -np.inf)
    for j, s in enumerate(int(v) for v in shifts):
        a = p_pet[max(0, s) : n + min(0, s)]
        b = p_ct[max(0, -s) : n - max(0, s)]
        if a.size < max(8, n // 2):
            continue
        a = a - a.mean()
        b = b - b.mean()
        den = math.sqrt(float(a @ a) * float(b @ b))
        if den > 0:
            scores[j] = float(a @ b) / den
    j = int(np.argmax(scores))
    if not np.isfinite(scores[j]):
        return math.nan, math.nan
    frac = 0.0
    if 0 < j < shifts.size - 1 and np.isfinite(scores[j - 1]) and np.isfinite(scores[j + 1]):
        y0, y1, y2 = scores[j - 1], scores[j], scores[j + 1]
        den = y0 - 2 * y1 + y2
        if den < 0:
            frac = float(np.clip(0.5 * (y0 - y2) / den, -0.5, 0.5))
    return float(shifts[j]) + frac, float(scores[j])


def estimate_shift(pet: Volume, ct: Volume, *, max_mm: float = 40.0) -> Shift:
    """Shift of the PET against the CT on the same grid, from the body outlines.

    Parameters
    ----------
    pet : Volume
        PET or SUV (any unit).
    ct : Volume
        CT in HU on the PET grid (``CTres``).
    max_mm : float
        Largest shift searched along each axis.

    Returns
    -------
    Shift
        In RAS+ mm (see :class:`Shift`).

    Raises
    ------
    GeometryMismatchError
        The CT is not on the PET grid.
    """
    if not ct.same_grid(pet, atol=1e-3):
        raise GeometryMismatchError(f"CT {ct!r} is not on the PET grid {pet!r}")
    lin = pet.affine[:3, :3]
    # The voxel axis closest to anterior-posterior (RAS y).
    ap_axis = int(np.argmax(np.abs(lin[1, :]) / np.linalg.norm(lin, axis=0)))
    p_ct = _profiles(np.asarray(ct.array), body_threshold(ct, "ct"), ap_axis)
    p_pet = _profiles(np.asarray(pet.array), body_threshold(pet, "pet"), ap_axis)
    shift_vox = np.zeros(3)
    scores = []
    for ax in range(3):
        max_shift = max(1, math.ceil(max_mm / float(pet.spacing[ax])))
        s, score = _ncc_shift(p_pet[ax], p_ct[ax], max_shift)
        shift_vox[ax] = s
        scores.append(score)
    world = lin @ shift_vox
    return Shift(float(world[0]), float(world[1]), float(world[2]), float(min(scores)))


def region_words(name: str) -> set[str]:
    """Lower-case words of a region name, a plural ``s`` dropped (``kidneys`` → ``kidney``):
    an organ is matched by whole word, so ``gallbladder`` is not the bladder."""
    words = {w for w in re.split(r"[^a-z]+", name.lower()) if w}
    return words | {w[:-1] for w in words if w.endswith("s")}


def label_mask(labels: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """``np.isin(labels, ids)``, as a few comparisons when ``ids`` are few (one pass each,
    ~10x faster than ``isin``'s sort on a whole-body map)."""
    ids = list(ids)
    if not 0 < len(ids) <= 4:
        return np.isin(labels, ids)
    out = labels == ids[0]
    for i in ids[1:]:
        out |= labels == i
    return out


def organ_activity_share(
    pet: Volume,
    organs: Volume,
    names: Mapping[int, str],
    *,
    margin_mm: float = 20.0,
    exclude_others: bool = False,
) -> dict[str, float]:
    """Share of each high-uptake organ's PET activity that falls inside its CT mask.

    For each organ of :data:`HOT_ORGANS` present (labels whose name has it as a word;
    left and right kidneys together), the activity above background (the median of a
    ``margin_mm`` shell around the mask) is summed inside the mask and inside the mask
    grown by ``margin_mm``; the share is their ratio (1: all of it inside; a PET moved
    against the CT lowers it). ``organs`` must be on the PET grid. With
    ``exclude_others`` the voxels of the other labelled regions of ``organs`` (named or
    not) are left out of the margin: a neighbour's uptake (the liver beside the right
    kidney) is not this organ's activity outside its mask.
    """
    from scipy import ndimage

    if organs.shape != pet.shape:
        raise GeometryMismatchError(f"organ map {organs.shape} is not on the PET grid {pet.shape}")
    lab = np.asarray(organs.array)
    val = np.asarray(pet.array)
    if not np.issubdtype(lab.dtype, np.integer):
        lab = lab.astype(np.int64)
    # Every label's bounding box from one pass over the map; each organ is worked on in
    # the union of its labels' boxes grown by the margin only.
    wanted = {o: [i for i, n in names.items() if o in region_words(n) and i > 0]
              for o in HOT_ORGANS}  # fmt: skip
    top = max((i for ids in wanted.values() for i in ids), default=0)
    boxes = ndimage.find_objects(lab, max_label=top) if top else []
    pad = np.ceil(margin_mm / pet.spacing).astype(int) + 1
    out: dict[str, float] = {}
    for organ, ids in wanted.items():
        found = [boxes[i - 1] for i in ids if i <= len(boxes) and boxes[i - 1] is not None]
        if not found:
            continue
        lo = np.maximum([min(b[a].start for b in found) for a in range(3)] - pad, 0)
        hi = np.minimum([max(b[a].stop for b in found) for a in range(3)] + pad, lab.shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        lab_box = lab[box]
        m = label_mask(lab_box, ids)
        v = val[box].astype(np.float64)
        dist = ndimage.distance_transform_edt(~m, sampling=pet.spacing)
        grown = dist <= margin_mm
        if exclude_others:
            grown &= ~((lab_box != 0) & ~m)
        shell = grown & ~m
        bg = float(np.median(v[shell])) if shell.any() else 0.0
        excess = np.clip(v - bg, 0.0, None)
        total = float(excess[grown].sum())
        out[organ] = float(excess[m].sum()) / total if total > 0 else math.nan
    return out
