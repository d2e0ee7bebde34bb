"""Organ PET statistics, PERCIST reference regions and lesions by organ.

Masks live on the CT grid, PET on its own grid. :func:`labels_to_grid` maps a label image
onto the PET grid by **nearest neighbour**: each PET voxel takes the label of the CT voxel
whose centre is nearest to its own centre (continuous CT index rounded half up, as ITK's
nearest-neighbour interpolator does; outside the CT field of view = 0). We chose it over
"fraction of overlap >= 0.5" because it is exact, label-preserving (no region can vanish
by ties of several labels under 50 %), and one gather per axis on axis-aligned grids.

:func:`case_organ_stats` maps and measures each group separately (over the PET box its labels
reach), so regions of overlapping groups keep all their voxels; within a group,
:func:`region_stats` computes volume (ml), mean, median, max, p95 and sd of every region in
one pass: one sort of the labelled voxels by (label, value), then ``np.add.reduceat`` for
sums and index arithmetic for order statistics. Percentiles use numpy's default (linear)
definition and sd is the population sd (``ddof=0``), so each number equals ``np.mean``,
``np.median``, ``np.max``, ``np.percentile(.., 95)``, ``np.std`` over that region's voxels.

PET units: statistics are in the units of the PET image (``unit`` column). ENHANCE.PET's
spreadsheets carry weight and height but, as far as public material shows, neither injected
activity nor injection/scan times, so SUV cannot be computed from Bq/ml from the corpus alone.
:func:`guess_pet_unit` tells SUV from Bq/ml by magnitude (median over the labelled voxels:
> 50 means Bq/ml; FDG soft tissue is SUV ~0.5-3 and thousands of Bq/ml); pass
``suv_factor`` (g/ml, the SUVbw factor) when you know it, and we never relabel Bq/ml as SUV.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import cc3d
import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import ndimage

from petcorpus.errors import GeometryMismatchError
from petcorpus.labels import GROUPS, LabelTable
from petcorpus.volume import Volume

if TYPE_CHECKING:
    from petcorpus.layouts.enhance import EnhanceCase, EnhanceCorpus

__all__ = [
    "STAT_COLUMNS",
    "PercistReference",
    "case_organ_stats",
    "corpus_organ_stats",
    "guess_pet_unit",
    "labels_to_grid",
    "lesions_by_organ",
    "percist_references",
    "region_stats",
]

#: Columns of :func:`region_stats`.
STAT_COLUMNS = ("region_id", "region", "voxels", "volume_ml", "mean", "median", "max", "p95", "sd")


# -- grid mapping --------------------------------------------------------------------------
def labels_to_grid(labels: Volume, target: Volume) -> Volume:
    """Nearest-neighbour map of a label image onto ``target``'s grid (see module docstring)."""
    m = np.linalg.inv(labels.affine) @ target.affine
    lin = m[:3, :3]
    if not np.allclose(lin, np.diag(np.diag(lin)), atol=1e-9):
        from petcorpus.resample import resample_to

        out = resample_to(labels, target, interpolation="nearest", fill=0)
        return Volume(np.asarray(out.array, dtype=labels.dtype), target.affine)
    idx = []
    valid = []
    for ax in range(3):
        cont = lin[ax, ax] * np.arange(target.shape[ax], dtype=np.float64) + m[ax, 3]
        i = np.floor(cont + 0.5).astype(np.int64)
        ok = (i >= 0) & (i < labels.shape[ax])
        idx.append(np.clip(i, 0, labels.shape[ax] - 1))
        valid.append(ok)
    src = np.asarray(labels.array)
    if src.flags.f_contiguous and not src.flags.c_contiguous:
        # NIfTI data are Fortran-ordered: gather on the C-ordered transpose (contiguous
        # innermost axis) and transpose back, ~3x faster than a strided gather.
        arr = src.T[np.ix_(idx[2], idx[1], idx[0])].T
    else:
        arr = src[np.ix_(*idx)]
    if not all(v.all() for v in valid):  # arr is a fresh array (fancy indexing)
        arr[~valid[0], :, :] = 0
        arr[:, ~valid[1], :] = 0
        arr[:, :, ~valid[2]] = 0
    return Volume(arr, target.affine)


# -- statistics ----------------------------------------------------------------------------
def region_stats(
    labels: npt.ArrayLike,
    values: npt.ArrayLike,
    voxel_ml: float,
    names: Mapping[int, str] | None = None,
) -> pd.DataFrame:
    """Per-region statistics of ``values`` in one pass over all regions.

    Parameters
    ----------
    labels : (I, J, K) integer array
        Region ids on the grid of ``values``; 0 is background.
    values : (I, J, K) array
        PET values (SUV or Bq/ml).
    voxel_ml : float
        Volume of one voxel in ml.
    names : mapping, optional
        Region id → name (ids without a name get ``""``).

    Returns
    -------
    DataFrame
        :data:`STAT_COLUMNS`, one row per region present, sorted by id.
    """
    lab = np.asarray(labels)
    val = np.asarray(values)
    if lab.shape != val.shape:
        raise GeometryMismatchError(f"labels {lab.shape} and values {val.shape} differ")
    fg = lab != 0  # boolean indexing visits both arrays in the same (C) order
    lv = lab[fg]
    vv = val[fg].astype(np.float64)
    order = np.lexsort((vv, lv))
    lv = lv[order]
    vv = vv[order]
    ids, starts, counts = np.unique(lv, return_index=True, return_counts=True)
    if ids.size == 0:
        return pd.DataFrame({c: [] for c in STAT_COLUMNS})
    sums = np.add.reduceat(vv, starts)
    mean = sums / counts
    dev = vv - np.repeat(mean, counts)
    sd = np.sqrt(np.add.reduceat(dev * dev, starts) / counts)
    ends = starts + counts - 1

    def pct(q: float) -> np.ndarray:
        pos = starts + q * (counts - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, ends)
        frac = pos - lo
        return vv[lo] + frac * (vv[hi] - vv[lo])

    nm = names or {}
    return pd.DataFrame(
        {
            "region_id": ids.astype(np.int64),
            "region": [nm.get(int(i), "") for i in ids],
            "voxels": counts.astype(np.int64),
            "volume_ml": counts * float(voxel_ml),
            "mean": mean,
            "median": pct(0.5),
            "max": vv[ends],
            "p95": pct(0.95),
            "sd": sd,
        }
    )


def guess_pet_unit(values: npt.ArrayLike, labels: npt.ArrayLike | None = None) -> str:
    """``"SUV"`` or ``"Bq/ml"`` from the magnitude of the PET values (see module docstring)."""
    v = np.asarray(values)
    sel = v[np.asarray(labels) != 0] if labels is not None else v[v > 0]
    if sel.size == 0:
        sel = v[v > 0]
    if sel.size == 0:
        return "SUV"
    sel = sel[:: max(1, sel.size // 200_000)]  # a magnitude test: a subsample is plenty
    return "Bq/ml" if float(np.median(sel)) > 50.0 else "SUV"


# -- PERCIST --------------------------------------------------------------------------------
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
    return PercistReference(lm, lsd, ln, lc, ls, bm, bsd, bn, bc, bs, sphere, blood)


# -- lesions by organ -----------------------------------------------------------------------
def lesions_by_organ(
    lesion_mask: npt.ArrayLike,
    organ_labels: npt.ArrayLike,
    voxel_ml: float,
    names: Mapping[int, str] | None = None,
    *,
    values: npt.ArrayLike | None = None,
    connectivity: Literal[6, 18, 26] = 18,
) -> pd.DataFrame:
    """Assign each lesion (connected component) to the regions it overlaps.

    Parameters
    ----------
    lesion_mask, organ_labels : (I, J, K) arrays on the same grid
        Lesions (non-zero) and region ids (0 = no region).
    voxel_ml : float
        Volume of one voxel in ml.
    names : mapping, optional
        Region id → name; id 0 is reported as ``"(none)"``.
    values : array, optional
        PET values; adds the lesion's ``suv_max`` / ``suv_mean`` (in the PET's unit).
    connectivity : {6, 18, 26}
        Lesion components (cc3d), 18 as in the autoPET metrics.

    Returns
    -------
    DataFrame
        One row per (lesion, region) pair with overlap: ``lesion`` (1..n, cc3d order),
        ``lesion_voxels``, ``lesion_ml``, ``region_id``, ``region``, ``voxels``,
        ``fraction`` (of the lesion's voxels), ``primary`` (the region with the largest
        fraction, ties to the lower id), plus ``suv_max``/``suv_mean`` when ``values``.
    """
    les = np.asarray(lesion_mask) != 0
    org = np.asarray(organ_labels)
    if les.shape != org.shape:
        raise GeometryMismatchError(f"lesion mask {les.shape} and labels {org.shape} differ")
    cc = cc3d.connected_components(les.astype(np.uint8), connectivity=connectivity)
    n = int(cc.max())
    cols = ["lesion", "lesion_voxels", "lesion_ml", "region_id", "region", "voxels",
            "fraction", "primary"]  # fmt: skip
    if values is not None:
        cols += ["suv_max", "suv_mean"]
    if n == 0:
        return pd.DataFrame({c: [] for c in cols})
    fg = cc != 0
    comp = cc[fg].astype(np.int64)
    reg = org[fg].astype(np.int64)
    nreg = int(reg.max()) + 1
    counts = np.bincount(comp * nreg + reg, minlength=(n + 1) * nreg).reshape(n + 1, nreg)
    sizes = counts.sum(axis=1)
    nm = {0: "(none)", **(names or {})}
    if values is not None:
        v = np.asarray(values)[fg].astype(np.float64)
        vmax = np.full(n + 1, -np.inf)
        np.maximum.at(vmax, comp, v)
        vmean = np.bincount(comp, weights=v, minlength=n + 1) / np.maximum(sizes, 1)
    rows = []
    for lesion in range(1, n + 1):
        hits = np.flatnonzero(counts[lesion])
        primary = int(hits[np.argmax(counts[lesion, hits])])
        for rid in hits:
            row: dict[str, object] = {
                "lesion": lesion,
                "lesion_voxels": int(sizes[lesion]),
                "lesion_ml": float(sizes[lesion] * voxel_ml),
                "region_id": int(rid),
                "region": nm.get(int(rid), ""),
                "voxels": int(counts[lesion, rid]),
                "fraction": float(counts[lesion, rid] / sizes[lesion]),
                "primary": bool(rid == primary),
            }
            if values is not None:
                row["suv_max"] = float(vmax[lesion])
                row["suv_mean"] = float(vmean[lesion])
            rows.append(row)
    return pd.DataFrame(rows, columns=cols)


# -- one case ---------------------------------------------------------------------------------
def _group_on_pet(
    labels: Volume, pet: Volume
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """A group's labels on the PET grid, only over the PET box its labelled voxels can reach.

    Returns (PET box, labels in that box) or None when the group is empty.
    """
    arr = np.asarray(labels.array)
    ks = np.flatnonzero(arr.any(axis=(0, 1)))
    if ks.size == 0:
        return None
    slab = arr[:, :, ks[0] : ks[-1] + 1]
    is_ = np.flatnonzero(slab.any(axis=(1, 2)))
    js = np.flatnonzero(slab.any(axis=(0, 2)))
    lo = np.array([is_[0], js[0], ks[0]], dtype=np.float64) - 0.5
    hi = np.array([is_[-1], js[-1], ks[-1]], dtype=np.float64) + 0.5
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1])
                        for c in (lo[2], hi[2])])  # fmt: skip
    cont = pet.world_to_voxel(labels.voxel_to_world(corners))
    start = np.maximum(np.floor(cont.min(axis=0)).astype(int) - 1, 0)
    stop = np.minimum(np.ceil(cont.max(axis=0)).astype(int) + 2, pet.shape)
    if np.any(stop <= start):
        return None
    box = (slice(start[0], stop[0]), slice(start[1], stop[1]), slice(start[2], stop[2]))
    shift = np.eye(4)
    shift[:3, 3] = start
    target = Volume(np.broadcast_to(np.uint8(0), tuple(stop - start)), pet.affine @ shift)
    return box, labels_to_grid(labels, target).array


def case_organ_stats(
    groups: Mapping[str, Volume],
    pet: Volume,
    table: LabelTable,
    *,
    pet_unit: Literal["auto", "SUV", "Bq/ml"] = "auto",
    suv_factor: float | None = None,
    lesion_mask: npt.ArrayLike | None = None,
) -> tuple[pd.DataFrame, PercistReference, str]:
    """Statistics of every region of one case, plus PERCIST references.

    ``groups`` are the group label images on the CT grid. Each group is mapped to the PET grid
    by nearest neighbour (only over the PET box its labels can reach) and measured in one pass
    over its regions. Groups are measured separately, not through the merged map, so regions
    of overlapping groups (Body-Composition's skeletal muscle and the Muscles group at L3)
    each keep all their voxels. ``region_id`` is the global id. Returns (table with
    ``group``/``local_id``/``unit`` columns added, PERCIST references, unit). With
    ``suv_factor`` a Bq/ml PET is converted to SUV. ``lesion_mask`` (PET grid) keeps lesions
    out of the PERCIST liver sphere.
    """
    if not groups:
        raise ValueError("no group label images")
    if pet_unit not in ("auto", "SUV", "Bq/ml"):
        raise ValueError(f"pet_unit must be 'auto', 'SUV' or 'Bq/ml', got {pet_unit!r}")
    first = next(iter(groups.values()))
    for g, v in groups.items():
        if not v.same_grid(first):
            raise GeometryMismatchError(f"{g} label image is not on the grid of the others")
    values = np.asarray(pet.array)
    tables = []
    masks: dict[str, np.ndarray | None] = {"liver": None, "aorta": None}
    wanted = {}
    for name in masks:
        try:
            wanted[name] = table.find(name)
        except KeyError:
            continue
    for g in GROUPS:
        if g not in groups:
            continue
        hit = _group_on_pet(groups[g], pet)
        if hit is None:
            continue
        box, sub = hit
        st = region_stats(sub, values[box], pet.voxel_volume_ml, dict(table.groups[g]))
        st.insert(1, "group", g)
        st.insert(2, "local_id", st["region_id"])
        st["region_id"] = [table.global_id(g, int(k)) for k in st["local_id"]]
        tables.append(st)
        for name, (wg, wk) in wanted.items():
            if wg == g:
                full = np.zeros(pet.shape, dtype=bool)
                full[box] = sub == wk
                masks[name] = full
    cols = ["region_id", "group", "local_id", *STAT_COLUMNS[1:]]
    stats = (
        pd.concat(tables, ignore_index=True)[cols]
        if tables
        else pd.DataFrame({c: [] for c in cols})
    )
    if pet_unit == "auto":  # the magnitude rule of guess_pet_unit, on the region medians
        unit = "Bq/ml" if len(stats) and float(np.median(stats["median"])) > 50.0 else "SUV"
    else:
        unit = pet_unit
    ref = percist_references(pet, masks["liver"], masks["aorta"], exclude=lesion_mask)
    if suv_factor is not None and unit == "Bq/ml":
        # SUV = Bq/ml x factor: every statistic here scales linearly with a positive factor.
        f = float(suv_factor)
        for col in ("mean", "median", "max", "p95", "sd"):
            stats[col] = stats[col] * f
        ref = dataclasses.replace(
            ref,
            liver_mean=ref.liver_mean * f,
            liver_sd=ref.liver_sd * f,
            blood_mean=ref.blood_mean * f,
            blood_sd=ref.blood_sd * f,
        )
        unit = "SUV"
    stats["unit"] = unit
    return stats, ref, unit


# -- a whole corpus ---------------------------------------------------------------------------
def _case_task(
    case: EnhanceCase, labels: dict[str, dict[str, str]], pet_unit: str
) -> tuple[str, pd.DataFrame | None, dict[str, object] | None, str | None]:
    """Worker: statistics of one ENHANCE case (picklable inputs only)."""
    from petcorpus.errors import PetcorpusError
    from petcorpus.labels import GROUPS

    cid = case.case_id
    if case.pt is None:
        return cid, None, None, "no PET"
    if not case.masks:
        return cid, None, None, "no masks"
    try:
        table = LabelTable({g: {int(k): v for k, v in r.items()} for g, r in labels.items()})
        pet = case.pt.load_volume()
        groups = {g: case.masks[g].load_volume() for g in GROUPS if g in case.masks}
        st, ref, unit = case_organ_stats(
            groups,
            pet,
            table,
            pet_unit=pet_unit,  # type: ignore[arg-type]
        )
    except PetcorpusError as exc:
        return cid, None, None, f"[{exc.reason}] {exc}"
    st.insert(0, "case_id", cid)
    return cid, st, {"case_id": cid, "unit": unit, **ref.as_row()}, None


def corpus_organ_stats(
    corpus: EnhanceCorpus,
    cases: list[str] | None = None,
    *,
    pet_unit: Literal["auto", "SUV", "Bq/ml"] = "auto",
    workers: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """Organ statistics of many cases of an :class:`~petcorpus.layouts.enhance.EnhanceCorpus`.

    One case per task (a process pool when ``workers > 1``). Returns (per-region table with
    a ``case_id`` column, PERCIST table, failures as case id → reason); failures never stop
    the run.
    """
    from concurrent.futures import ProcessPoolExecutor

    wanted = list(corpus.cases) if cases is None else [f"{int(c):04d}" for c in cases]
    failures: dict[str, str] = {}
    todo = []
    for cid in wanted:
        case = corpus.cases.get(cid)
        if case is None:
            failures[cid] = "not found"
        else:
            todo.append(case)
    labels = corpus.labels.to_json()
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_case_task, todo, [labels] * len(todo),
                                    [pet_unit] * len(todo)))  # fmt: skip
    else:
        results = [_case_task(c, labels, pet_unit) for c in todo]
    tables, refs = [], []
    for cid, st, ref, err in results:
        if err is not None:
            failures[cid] = err
        else:
            tables.append(st)
            refs.append(ref)
    stats = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return stats, pd.DataFrame(refs), failures
