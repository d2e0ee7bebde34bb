"""Organ PET statistics, PERCIST reference regions and lesions by organ.

Masks live on the CT grid, PET on its own grid. :func:`labels_to_grid` maps a label image
onto the PET grid by **nearest neighbour**: each PET voxel takes the label of the CT voxel
whose centre is nearest to its own centre (continuous CT index rounded half up, as ITK's
nearest-neighbour interpolator does; outside the CT field of view = 0). We chose it over
"fraction of overlap >= 0.5" because it is exact (it equals SimpleITK), no region is lost to
a tie of several labels under 50 %, and it is one gather per axis on axis-aligned grids.

It does **not** keep every label: a region thinner than the PET voxels (a 2 mm plate on a
4 mm PET grid) may own no PET voxel centre. Such a region is never dropped silently:
:func:`case_organ_stats` lists it with 0 PET voxels, ``volume_ml`` 0, NaN statistics, its
exact volume on the CT grid (``ct_volume_ml``) and a ``note``. We did not switch to "any CT
voxel of the region in the PET voxel" because then neighbouring regions would share PET
voxels and every organ would grow by up to a PET voxel at its border, biasing the mean of
every region to keep the few thin ones; users who want exact masks ask for
``grid="ct"``: the PET is resampled (linear) onto the CT grid and every region is measured
on its own CT voxels (PERCIST stays on the PET grid).

A mask value outside the label table is not a reason to lose the case: its voxels are
measured like any region, its row has ``region`` ``""``, a ``note`` with the voxel count and,
when the value is beyond the MOOSE superset, no global ``region_id`` (``<NA>``).

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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import cc3d
import numpy as np
import numpy.typing as npt
import pandas as pd

from petcorpus.errors import GeometryMismatchError, PetcorpusError
from petcorpus.labels import GROUPS, LabelTable
from petcorpus.percist import PercistReference, percist_references
from petcorpus.volume import Volume

if TYPE_CHECKING:
    from petcorpus.layouts.base import Case
    from petcorpus.layouts.enhance import EnhanceCorpus

__all__ = [
    "CASE_COLUMNS",
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
#: Columns of :func:`case_organ_stats` (``region_id`` is a nullable integer).
CASE_COLUMNS = ("region_id", "group", "local_id", "region", "voxels", "volume_ml",
                "ct_volume_ml", "mean", "median", "max", "p95", "sd", "note", "unit")  # fmt: skip


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
    # One axis at a time, outermost in memory first (whole planes, then rows, then
    # voxels within rows): ~4x faster than one np.ix_ gather. NIfTI data are
    # Fortran-ordered, so on the C-ordered transpose.
    flip = src.flags.f_contiguous and not src.flags.c_contiguous
    arr = src.T if flip else src
    for ax, i in enumerate(idx[::-1] if flip else idx):
        arr = np.take(arr, i, axis=ax)
    arr = arr.T if flip else arr
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
def _label_box(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """First and last voxel index (per axis) of the non-zero voxels, or None."""
    ks = np.flatnonzero(arr.any(axis=(0, 1)))
    if ks.size == 0:
        return None
    slab = arr[:, :, ks[0] : ks[-1] + 1]
    is_ = np.flatnonzero(slab.any(axis=(1, 2)))
    js = np.flatnonzero(slab.any(axis=(0, 2)))
    return np.array([is_[0], js[0], ks[0]]), np.array([is_[-1], js[-1], ks[-1]])


def _sub_grid(grid: Volume, start: np.ndarray, stop: np.ndarray) -> Volume:
    """An empty volume on the part ``start:stop`` of ``grid`` (a target for resampling)."""
    shift = np.eye(4)
    shift[:3, 3] = start
    return Volume(np.broadcast_to(np.uint8(0), tuple(stop - start)), grid.affine @ shift)


def _group_on_pet(
    labels: Volume, pet: Volume
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """A group's labels on the PET grid, only over the PET box its labelled voxels can reach.

    Returns (PET box, labels in that box) or None when the group is empty.
    """
    found = _label_box(np.asarray(labels.array))
    if found is None:
        return None
    lo, hi = found[0] - 0.5, found[1] + 0.5
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1])
                        for c in (lo[2], hi[2])])  # fmt: skip
    cont = pet.world_to_voxel(labels.voxel_to_world(corners))
    start = np.maximum(np.floor(cont.min(axis=0)).astype(int) - 1, 0)
    stop = np.minimum(np.ceil(cont.max(axis=0)).astype(int) + 2, pet.shape)
    if np.any(stop <= start):
        return None
    box = (slice(start[0], stop[0]), slice(start[1], stop[1]), slice(start[2], stop[2]))
    return box, labels_to_grid(labels, _sub_grid(pet, start, stop)).array


def _group_on_ct(labels: Volume, pet: Volume) -> tuple[np.ndarray, np.ndarray] | None:
    """A group's labels over their CT box and the PET resampled (linear) onto that box;
    CT voxels outside the PET's field of view are left out (label 0)."""
    from petcorpus.resample import resample_to

    arr = np.asarray(labels.array)
    found = _label_box(arr)
    if found is None:
        return None
    start, stop = found[0], found[1] + 1
    sub = np.array(arr[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]])
    values = np.asarray(
        resample_to(pet, _sub_grid(labels, start, stop), "linear", fill=np.nan).array
    )
    sub[np.isnan(values)] = 0
    return sub, values


def _label_counts(arr: np.ndarray) -> dict[int, int]:
    """Voxels per non-zero value of a label image: one pass to find the labelled voxels,
    then a bincount of those only (small non-negative ints) or ``np.unique``."""
    a = np.asarray(arr)
    flat = a.reshape(-1, order="A")  # no copy for C- or Fortran-ordered arrays
    nz = flat[flat != 0]
    if nz.size == 0:
        return {}
    if nz.dtype.kind in "ui" and int(nz.min()) > 0 and int(nz.max()) < 1 << 16:
        counts = np.bincount(nz)
        return {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    values, n = np.unique(nz, return_counts=True)
    return {int(v): int(k) for v, k in zip(values, n, strict=True)}


def _global_id(table: LabelTable, group: str, local_id: int) -> int | None:
    try:
        return table.global_id(group, local_id)
    except PetcorpusError:
        return None


def _group_table(
    g: str, st: pd.DataFrame, ct_counts: Mapping[int, int], ct_voxel_ml: float,
    table: LabelTable, grid: str,
) -> pd.DataFrame:  # fmt: skip
    """Add group, local/global ids, CT volume and notes; list regions with no voxel here."""
    names = table.groups[g]
    missing = sorted(set(ct_counts) - set(st["region_id"].astype(int)))
    if missing:  # on the CT grid but owning no PET voxel centre: listed, never dropped
        empty = pd.DataFrame({"region_id": missing, "region": [names.get(k, "") for k in missing],
                              "voxels": 0, "volume_ml": 0.0})  # fmt: skip
        st = pd.concat([st, empty], ignore_index=True).sort_values("region_id")
        st = st.reset_index(drop=True)
    local = st["region_id"].astype(int).tolist()
    st.insert(1, "group", g)
    st.insert(2, "local_id", local)
    st["region_id"] = pd.array([_global_id(table, g, k) for k in local], dtype="Int64")
    st.insert(6, "ct_volume_ml", [ct_counts.get(k, 0) * ct_voxel_ml for k in local])
    notes = []
    for k, n, gid in zip(local, st["voxels"], st["region_id"], strict=True):
        note = []
        if k not in names:
            where = "no name" if not pd.isna(gid) else "beyond the MOOSE superset, no global id"
            note.append(
                f"value {k} is not in the {g} label table ({where}): "
                f"{ct_counts.get(k, 0)} CT voxels"
            )
        if n == 0 and grid == "pet":
            note.append(
                f"too thin for the PET grid: its {ct_counts.get(k, 0)} CT voxels hold no PET "
                "voxel centre (volume 0, no statistics; see grid='ct')"
            )
        notes.append("; ".join(note))
    st["note"] = notes
    return st


def case_organ_stats(
    groups: Mapping[str, Volume],
    pet: Volume,
    table: LabelTable,
    *,
    pet_unit: Literal["auto", "SUV", "Bq/ml"] = "auto",
    suv_factor: float | None = None,
    lesion_mask: npt.ArrayLike | None = None,
    grid: Literal["pet", "ct"] = "pet",
) -> tuple[pd.DataFrame, PercistReference, str]:
    """Statistics of every region of one case, plus PERCIST references.

    ``groups`` are the group label images on the CT grid. With ``grid="pet"`` (default) each
    group is mapped to the PET grid by nearest neighbour (only over the PET box its labels can
    reach) and measured in one pass over its regions; with ``grid="ct"`` the PET is resampled
    (linear) onto each group's CT box and every region is measured on its own CT voxels.
    Groups are measured separately, not through the merged map, so regions of overlapping
    groups (Body-Composition's skeletal muscle and the Muscles group at L3) each keep all
    their voxels. Returns (table of :data:`CASE_COLUMNS`, PERCIST references, unit).
    ``region_id`` is the global id; every region present on the CT grid has a row, those
    with no PET voxel (too thin) and values outside the label table with a ``note`` (see the
    module docstring). With ``suv_factor`` a Bq/ml PET is converted to SUV. ``lesion_mask``
    (PET grid) keeps lesions out of the PERCIST liver sphere, which is always found on the
    PET grid.
    """
    if not groups:
        raise ValueError("no group label images")
    if pet_unit not in ("auto", "SUV", "Bq/ml"):
        raise ValueError(f"pet_unit must be 'auto', 'SUV' or 'Bq/ml', got {pet_unit!r}")
    if grid not in ("pet", "ct"):
        raise ValueError(f"grid must be 'pet' or 'ct', got {grid!r}")
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
        ct_counts = _label_counts(np.asarray(groups[g].array))
        if not ct_counts:
            continue
        hit = _group_on_pet(groups[g], pet) if grid == "pet" or any(
            wg == g for wg, _ in wanted.values()) else None  # fmt: skip
        names = dict(table.groups[g])
        on_ct = _group_on_ct(groups[g], pet) if grid == "ct" else None
        if on_ct is not None:
            st = region_stats(on_ct[0], on_ct[1], groups[g].voxel_volume_ml, names)
        elif grid == "pet" and hit is not None:
            st = region_stats(hit[1], values[hit[0]], pet.voxel_volume_ml, names)
        else:  # no labelled voxel reaches the PET's box: every region gets its note
            st = region_stats(np.zeros((0, 0, 0), int), np.zeros((0, 0, 0)), 1.0)
        tables.append(_group_table(g, st, ct_counts, groups[g].voxel_volume_ml, table, grid))
        for name, (wg, wk) in wanted.items():
            if wg == g and hit is not None:
                full = np.zeros(pet.shape, dtype=bool)
                full[hit[0]] = hit[1] == wk
                masks[name] = full
    cols = list(CASE_COLUMNS[:-1])
    if tables:
        stats = pd.concat(tables, ignore_index=True)[cols]
    else:
        stats = pd.DataFrame({c: [] for c in cols})
        stats["region_id"] = stats["region_id"].astype("Int64")
    if pet_unit == "auto":  # the magnitude rule of guess_pet_unit, on the region medians
        med = stats["median"].to_numpy(dtype=np.float64)
        med = med[np.isfinite(med)]
        unit = "Bq/ml" if med.size and float(np.median(med)) > 50.0 else "SUV"
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
    case: Case, labels: dict[str, dict[str, str]], pet_unit: str, grid: str = "pet"
) -> tuple[str, pd.DataFrame | None, dict[str, object] | None, str | None]:
    """Worker: statistics of one case with a PET and group label images (picklable)."""
    from petcorpus.errors import PetcorpusError

    cid = case.key
    if not case.has("PET"):
        return cid, None, None, "no PET"
    present = [g for g in GROUPS if case.has(g)]
    if not present:
        return cid, None, None, "no masks"
    try:
        table = LabelTable({g: {int(k): v for k, v in r.items()} for g, r in labels.items()})
        pet = case.volume("PET")
        groups = {g: case.volume(g) for g in present}
        st, ref, unit = case_organ_stats(
            groups,
            pet,
            table,
            pet_unit=pet_unit,  # type: ignore[arg-type]
            grid=grid,  # type: ignore[arg-type]
        )
    except PetcorpusError as exc:
        return cid, None, None, f"[{exc.reason}] {exc}"
    except Exception as exc:  # a batch records every failure and goes on
        return cid, None, None, f"[UNEXPECTED] {type(exc).__name__}: {exc}"
    st.insert(0, "case_id", cid)
    return cid, st, {"case_id": cid, "unit": unit, **ref.as_row()}, None


def corpus_organ_stats(
    corpus: EnhanceCorpus,
    cases: list[str] | None = None,
    *,
    pet_unit: Literal["auto", "SUV", "Bq/ml"] = "auto",
    workers: int = 1,
    grid: Literal["pet", "ct"] = "pet",
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """Organ statistics of many cases of an :class:`~petcorpus.layouts.enhance.EnhanceCorpus`.

    One case per task, on the build's executor (:class:`petcorpus.pipeline.Runner`: local
    processes when ``workers > 1``, started warm and ended with the caller). Returns
    (per-region table with a ``case_id`` column, PERCIST table, failures as case id →
    reason); failures never stop the run. Rows come in case order, however many workers.
    ``grid`` is :func:`case_organ_stats`'s; rows with a ``note`` are the warnings (regions
    too thin for the PET grid, values outside the label table).
    """
    import functools

    from petcorpus.errors import PetcorpusError
    from petcorpus.pipeline import Runner

    wanted = corpus.keys() if cases is None else [f"{int(c):04d}" for c in cases]
    failures: dict[str, str] = {}
    todo = []
    for cid in wanted:
        try:
            todo.append(corpus.case(cid))
        except PetcorpusError:
            failures[cid] = "not found"
    labels = corpus.labels.to_json()
    task = functools.partial(_case_task, labels=labels, pet_unit=pet_unit, grid=grid)
    with Runner(workers=min(workers, max(1, len(todo))), preload=(__name__,)) as runner:
        order = {case.key: i for i, case in enumerate(todo)}
        results = sorted(runner.map_unordered(task, todo), key=lambda r: order[r[0]])
    tables, refs = [], []
    for cid, st, ref, err in results:
        if err is not None:
            failures[cid] = err
        else:
            tables.append(st)
            refs.append(ref)
    stats = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return stats, pd.DataFrame(refs), failures
