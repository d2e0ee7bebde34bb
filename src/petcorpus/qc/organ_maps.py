"""The organ label map that :func:`~petcorpus.qc.run.check_study` needs, from a case's groups.

ENHANCE.PET stores CT-derived masks as seven *group* label images (local ids restarting at 1,
names in the corpus's ``labels.json``: :mod:`petcorpus.labels`). Quality control needs only
the high-uptake organs of :data:`~petcorpus.qc.align.HOT_ORGANS` (brain, bladder, heart,
kidneys) and the liver. :func:`qc_regions` picks them from a :class:`LabelTable` by whole
words of the region name (``kidney_left``, ``heart_myocardium``, ``urinary_bladder``; not
``gallbladder``). :func:`case_organ_map` reads only the groups holding them (``Organs``,
``Cardiac``), maps each onto the PET grid by nearest neighbour
(:func:`petcorpus.organs.labels_to_grid`) and merges them into one map of global ids
(:func:`petcorpus.labels.merge_groups`). The map keeps every declared region of those
groups, so that a hot organ's neighbours (the liver beside the right kidney, the spleen
beside the left) are left out of its margin; only the chosen regions are named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from petcorpus.errors import GeometryMismatchError, UnsupportedError
from petcorpus.labels import GROUPS, LabelTable, merge_groups
from petcorpus.qc.align import HOT_ORGANS, region_words
from petcorpus.volume import Volume

if TYPE_CHECKING:
    from petcorpus.layouts.base import Case

__all__ = ["QC_ORGANS", "case_organ_map", "qc_regions"]

#: The organs quality control reads from an organ map: the hot organs and the liver.
QC_ORGANS: tuple[str, ...] = (*HOT_ORGANS, "liver")


def qc_regions(table: LabelTable) -> tuple[dict[str, dict[int, str]], list[str]]:
    """Group → {local id: region name} of the regions of :data:`QC_ORGANS` in ``table``, and
    notes on regions left out (a local id without a stable global id).

    >>> from petcorpus.labels import moose_table
    >>> regions, _ = qc_regions(moose_table())
    >>> sorted(regions["Organs"].values())  # doctest: +NORMALIZE_WHITESPACE
    ['bladder', 'brain', 'kidney_left', 'kidney_right', 'liver']
    >>> sorted(regions["Cardiac"].values())[:2]
    ['heart_atrium_left', 'heart_atrium_right']
    """
    out: dict[str, dict[int, str]] = {}
    notes: list[str] = []
    for group, regions in table.groups.items():
        for local, name in regions.items():
            if not region_words(name) & set(QC_ORGANS):
                continue
            if not _has_global_id(table, group, local):
                notes.append(f"organ check: {group} {local} ({name}) has no global id: left out")
                continue
            out.setdefault(group, {})[local] = name
    return out, notes


def _has_global_id(table: LabelTable, group: str, local: int) -> bool:
    try:
        table.global_id(group, local)
    except UnsupportedError:
        return False
    return True


def _only(arr: np.ndarray, values: list[int]) -> np.ndarray:
    """``arr`` with every value not in ``values`` set to 0 (a lookup table for uint8, ~10x
    faster than ``np.isin`` on a whole-body grid)."""
    if arr.dtype == np.uint8:
        lut = np.zeros(256, np.uint8)
        lut[[v for v in values if 0 <= v < 256]] = [v for v in values if 0 <= v < 256]
        return lut[arr]
    return np.where(np.isin(arr, values), arr, 0)


def case_organ_map(
    case: Case, pet: Volume, table: LabelTable, regions: Mapping[str, Mapping[int, str]]
) -> tuple[Volume, dict[int, str]] | None:
    """The groups of one case that hold ``regions`` (:func:`qc_regions`) as one label map on
    the PET grid (global ids), and the names of ``regions`` in it; None when the case has
    none of those groups.

    The map keeps every declared region of those groups (with a stable global id), so that
    the spleen and lungs beside the hot organs are known as neighbours; only ``regions`` are
    named. Each group image is mapped onto ``pet``'s grid by nearest neighbour (not at all
    when it is already on it); where two groups overlap the later in
    :data:`~petcorpus.labels.GROUPS` wins (:func:`~petcorpus.labels.merge_groups`).

    Raises
    ------
    GeometryMismatchError
        A group image is not 3-D.
    """
    from petcorpus.organs import labels_to_grid

    wanted = {g: regions[g] for g in GROUPS if g in regions and case.has(g)}
    if not wanted:
        return None
    kept: dict[str, np.ndarray] = {}
    for group in wanted:
        vol = case.volume(group)
        if len(vol.shape) != 3:
            raise GeometryMismatchError(f"{case.source(group)}: not a 3-D label image")
        on_pet = vol if vol.same_grid(pet, atol=1e-3) else labels_to_grid(vol, pet)
        declared = [k for k in table.groups[group] if _has_global_id(table, group, k)]
        kept[group] = _only(np.asarray(on_pet.array), declared)
    merged = merge_groups(kept)
    names = {table.global_id(g, k): n for g, ids in wanted.items() for k, n in ids.items()}
    return Volume(merged, pet.affine), names
