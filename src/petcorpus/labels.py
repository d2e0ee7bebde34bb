"""Label tables of the ENHANCE.PET / MOOSE 130-region map, merging and splitting group masks.

ENHANCE.PET ships seven label images per case, one per *group* (``Body-Composition``,
``Cardiac``, ``Muscles``, ``Organs``, ``Peripheral-Bones``, ``Ribs``, ``Vertebrae``); each holds
*local* ids that restart at 1. The corpus's ``labels.json`` says which local id means which
region and is the truth for that corpus; the public MOOSE table (131 regions, shipped as
``petcorpus/data/moose_labels.json``) is the fallback.

Global ids
----------
The merged single-image map uses one fixed, documented numbering that does not depend on the
corpus: ``global_id = GROUP_OFFSETS[group] + local_id`` where the offsets are the cumulative
sizes of the groups of the 131-region MOOSE superset, in the order of :data:`GROUPS`::

    Body-Composition   0   (global   1..3)
    Cardiac            3   (global   4..16)
    Muscles           16   (global  17..26)
    Organs            26   (global  27..45)
    Peripheral-Bones  45   (global  46..76)
    Ribs              76   (global  77..103)
    Vertebrae        103   (global 104..131)

So the global id is also the 1-based position of the region in the superset, fits ``uint8``,
and a region keeps its id whether a release drops another region or not (a corpus of 130
simply never uses one id). A local id beyond its group's superset size cannot be given a
stable global id and is refused (:class:`~petcorpus.errors.UnsupportedError`).

Groups can overlap (``Body-Composition`` ``skeletal_muscle`` covers the muscles of the
``Muscles`` group at L3). A single-label map cannot hold both, so :func:`merge_groups` paints
groups in :data:`MERGE_PRIORITY` order (later wins: Body-Composition first, then the specific
groups) and :func:`count_overlaps` tells how many voxels were given up; :func:`split_merged`
inverts the merge exactly when there was no overlap.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from os import PathLike
from pathlib import Path
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from petcorpus.errors import CorruptFileError, Reason, UnsupportedError

__all__ = [
    "GROUPS",
    "GROUP_OFFSETS",
    "MERGE_PRIORITY",
    "GroupCheck",
    "LabelTable",
    "check_group_values",
    "count_overlaps",
    "load_labels",
    "merge_groups",
    "moose_table",
    "normalise_group",
    "parse_labels",
    "region_masks",
    "split_merged",
]

#: The seven ENHANCE.PET groups, in the order that defines the global ids.
GROUPS: tuple[str, ...] = (
    "Body-Composition",
    "Cardiac",
    "Muscles",
    "Organs",
    "Peripheral-Bones",
    "Ribs",
    "Vertebrae",
)
_SUPERSET_SIZES = (3, 13, 10, 19, 31, 27, 28)
#: Global id of a region = offset of its group + its local id (see the module docstring).
GROUP_OFFSETS: Mapping[str, int] = MappingProxyType(
    {g: int(sum(_SUPERSET_SIZES[:i])) for i, g in enumerate(GROUPS)}
)
_GROUP_SIZE: Mapping[str, int] = MappingProxyType(dict(zip(GROUPS, _SUPERSET_SIZES, strict=True)))
#: Paint order of :func:`merge_groups` (later groups win where masks overlap).
MERGE_PRIORITY: tuple[str, ...] = GROUPS

_ALIASES = {re.sub(r"[^a-z]", "", g.lower()): g for g in GROUPS} | {
    "clinctbodycomposition": "Body-Composition",
    "clinctcardiac": "Cardiac",
    "clinctmuscles": "Muscles",
    "clinctorgans": "Organs",
    "clinctperipheralbones": "Peripheral-Bones",
    "clinctribs": "Ribs",
    "clinctvertebrae": "Vertebrae",
}


def normalise_group(name: str) -> str | None:
    """The canonical group name for a folder or key (case, dashes and MOOSE model names
    ignored), or None when it is not a group.

    >>> normalise_group("Peripheral-bones"), normalise_group("clin_ct_organs")
    ('Peripheral-Bones', 'Organs')
    >>> normalise_group("x") is None
    True
    """
    return _ALIASES.get(re.sub(r"[^a-z]", "", name.lower()))


@dataclasses.dataclass(frozen=True)
class LabelTable:
    """Regions per group: ``groups[group][local_id] = region name``.

    Parameters
    ----------
    groups : mapping of str to mapping of int to str
        Group name (one of :data:`GROUPS`) to its local ids and region names. Copied.
    source : str
        Where the table came from (a file path or ``"moose"``).
    """

    groups: Mapping[str, Mapping[int, str]]
    source: str = "moose"

    def __post_init__(self) -> None:
        clean: dict[str, Mapping[int, str]] = {}
        for g, regions in self.groups.items():
            if g not in GROUPS:
                raise ValueError(f"unknown group {g!r}; groups are {GROUPS}")
            ids = {int(k): str(v) for k, v in regions.items()}
            if any(k < 1 or k > 255 for k in ids):
                raise ValueError(f"{g}: local ids must be 1..255, got {sorted(ids)}")
            clean[g] = MappingProxyType(dict(sorted(ids.items())))
        ordered = {g: clean.get(g, MappingProxyType({})) for g in GROUPS}
        object.__setattr__(self, "groups", MappingProxyType(ordered))

    @property
    def n_regions(self) -> int:
        """Number of declared regions over all groups."""
        return sum(len(r) for r in self.groups.values())

    def global_id(self, group: str, local_id: int) -> int:
        """The stable global id of a region (see the module docstring)."""
        if group not in GROUP_OFFSETS:
            raise ValueError(f"unknown group {group!r}")
        if not 1 <= local_id <= _GROUP_SIZE[group]:
            raise UnsupportedError(
                f"{group} local id {local_id} is outside the MOOSE superset "
                f"(1..{_GROUP_SIZE[group]}), so it has no stable global id",
                reason=Reason.UNSUPPORTED,
            )
        return GROUP_OFFSETS[group] + int(local_id)

    @staticmethod
    def from_global(global_id: int) -> tuple[str, int]:
        """(group, local id) of a global id.

        >>> LabelTable.from_global(34)
        ('Organs', 8)
        """
        gid = int(global_id)
        for g in reversed(GROUPS):
            if gid > GROUP_OFFSETS[g]:
                local = gid - GROUP_OFFSETS[g]
                if local <= _GROUP_SIZE[g]:
                    return g, local
                break
        raise ValueError(f"global id {global_id} is not in 1..131")

    def global_names(self) -> dict[int, str]:
        """Global id → region name for every declared region."""
        return {
            self.global_id(g, k): name for g, regions in self.groups.items()
            for k, name in regions.items()
        }  # fmt: skip

    def find(self, name: str) -> tuple[str, int]:
        """(group, local id) of a region by name."""
        for g, regions in self.groups.items():
            for k, n in regions.items():
                if n == name:
                    return g, k
        raise KeyError(f"no region named {name!r} in the label table ({self.source})")

    def to_json(self) -> dict[str, dict[str, str]]:
        """The table as ``labels.json`` writes it: ``{group: {"id": name}}``."""
        return {g: {str(k): v for k, v in r.items()} for g, r in self.groups.items()}


def moose_table() -> LabelTable:
    """The shipped 131-region MOOSE superset (the fallback table)."""
    text = resources.files("petcorpus").joinpath("data/moose_labels.json").read_text("utf-8")
    return _parse(json.loads(text), source="moose")


def _parse(doc: object, source: str) -> LabelTable:
    if not isinstance(doc, dict):
        raise CorruptFileError("labels.json must be a JSON object of groups", path=source)
    groups: dict[str, dict[int, str]] = {}
    for key, value in doc.items():
        if str(key).startswith("_"):
            continue
        group = normalise_group(str(key))
        if group is None or not isinstance(value, dict):
            continue
        regions: dict[int, str] = {}
        for k, v in value.items():
            # Both directions are seen in the wild: {"1": "liver"} and {"liver": 1}.
            if str(k).strip().isdigit():
                regions[int(k)] = str(v)
            elif isinstance(v, int | float) or str(v).strip().isdigit():
                regions[int(v)] = str(k)
            else:
                raise CorruptFileError(f"{key}: cannot read entry {k!r}: {v!r}", path=source)
        groups[group] = regions
    if not groups:
        raise CorruptFileError("labels.json names none of the ENHANCE groups", path=source)
    return LabelTable(groups, source=source)


def load_labels(path: str | PathLike[str] | None = None) -> LabelTable:
    """Read a corpus's ``labels.json`` (a file, or a corpus folder holding one).

    Falls back to :func:`moose_table` when ``path`` is None or the folder has no
    ``labels.json``. A file that exists but cannot be parsed raises
    :class:`~petcorpus.errors.CorruptFileError` (never a silent fallback).
    """
    if path is None:
        return moose_table()
    p = Path(path)
    if p.is_dir():
        p = p / "labels.json"
        if not p.is_file():
            return moose_table()
    try:
        doc = json.loads(p.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise CorruptFileError(f"cannot read labels.json ({exc})", path=p) from exc
    return _parse(doc, source=str(p))


def parse_labels(doc: bytes | str, source: str = "labels.json") -> LabelTable:
    """Parse the bytes of a ``labels.json`` (for example a zip member)."""
    try:
        return _parse(json.loads(doc), source=source)
    except ValueError as exc:
        raise CorruptFileError(f"cannot read labels.json ({exc})", path=source) from exc


# -- merge / split / export ---------------------------------------------------------------
def _as_int(arr: npt.ArrayLike) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype.kind == "f":
        r = np.rint(a)
        if not np.array_equal(r, a):
            raise ValueError("label image holds non-integer values")
        a = r
    return a.astype(np.int64, copy=False) if a.dtype.kind not in "ui" else a


def _present_values(a: np.ndarray) -> np.ndarray:
    """Distinct values of an integer image (bincount for small non-negative ranges)."""
    flat = a.ravel(order="K")
    if a.dtype.kind in "ui" and a.dtype.itemsize <= 2 and flat.size:
        lo = int(flat.min())
        if lo >= 0:
            return np.flatnonzero(np.bincount(flat))
    return np.unique(flat)


def count_overlaps(groups: Mapping[str, npt.ArrayLike]) -> int:
    """Voxels labelled (non-zero) in more than one group."""
    count: np.ndarray | None = None
    for arr in groups.values():
        fg = np.asarray(arr) != 0
        count = fg.astype(np.uint8) if count is None else count + fg
    return 0 if count is None else int(np.count_nonzero(count > 1))


def merge_groups(
    groups: Mapping[str, npt.ArrayLike], table: LabelTable | None = None
) -> np.ndarray:
    """Merge per-group label images (same grid) into one ``uint8`` map of global ids.

    Parameters
    ----------
    groups : mapping of group name to (I, J, K) integer array
        Local ids per group; groups may be missing.
    table : LabelTable, optional
        Only used to validate group names; global ids do not depend on it.

    Returns
    -------
    (I, J, K) uint8 array
        0 = background, else ``GROUP_OFFSETS[group] + local``; where groups overlap the
        later group in :data:`MERGE_PRIORITY` wins.
    """
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown groups {sorted(unknown)}")
    out: np.ndarray | None = None
    for g in MERGE_PRIORITY:
        if g not in groups:
            continue
        a = _as_int(groups[g])
        if out is None:
            out = np.zeros_like(a, dtype=np.uint8)  # keeps the memory order (NIfTI: F)
        elif a.shape != out.shape:
            raise ValueError(f"{g}: shape {a.shape} differs from {out.shape}")
        hi = _GROUP_SIZE[g]
        if a.size and ((a.dtype.kind == "i" and a.min() < 0) or a.max() > hi):
            values = _present_values(a)
            bad = values[(values < 0) | (values > hi)]
            raise UnsupportedError(
                f"{g} holds values {bad.tolist()} outside the MOOSE superset "
                f"1..{hi}; they have no stable global id"
            )
        # global = offset + local on labelled voxels; element-wise ufuncs run in the arrays'
        # own memory order (NIfTI data are Fortran-ordered), so there is no gather or copy.
        a8 = a.astype(np.uint8, copy=False)
        np.add(a8, np.uint8(GROUP_OFFSETS[g]), out=out, where=a8 != 0)
    if out is None:
        raise ValueError("no group images to merge")
    return out


def split_merged(merged: npt.ArrayLike) -> dict[str, np.ndarray]:
    """Invert :func:`merge_groups`: one ``uint8`` local-id image per group (all 7)."""
    m = _as_int(merged)
    out: dict[str, np.ndarray] = {}
    for g in GROUPS:
        lo, hi = GROUP_OFFSETS[g], GROUP_OFFSETS[g] + _GROUP_SIZE[g]
        sel = (m > lo) & (m <= hi)
        img = np.zeros(m.shape, dtype=np.uint8)
        img[sel] = (m[sel] - lo).astype(np.uint8)
        out[g] = img
    if m.size and int(m.max()) > GROUP_OFFSETS[GROUPS[-1]] + _GROUP_SIZE[GROUPS[-1]]:
        raise ValueError(f"merged map holds value {int(m.max())} > 131")
    return out


def region_masks(
    merged: npt.ArrayLike, table: LabelTable, names: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """One boolean mask per region of a merged map (only regions present, or ``names``)."""
    m = np.asarray(merged)
    gnames = table.global_names()
    present = set(np.unique(m).tolist()) - {0}
    wanted = set(names) if names is not None else None
    out = {}
    for gid, name in gnames.items():
        if (wanted is None and gid in present) or (wanted is not None and name in wanted):
            out[name] = m == gid
    if wanted is not None and wanted - set(out):
        raise KeyError(f"regions not in the label table: {sorted(wanted - set(out))}")
    return out


# -- checking declared labels against voxels -----------------------------------------------
@dataclasses.dataclass(frozen=True)
class GroupCheck:
    """Declared labels of one group compared with the voxel values found.

    ``declared_absent``: declared ids never found in any voxel (id → name).
    ``undeclared_present``: values found but not declared (value → cases holding it).
    """

    group: str
    declared: int
    found: tuple[int, ...]
    declared_absent: Mapping[int, str]
    undeclared_present: Mapping[int, tuple[str, ...]]

    @property
    def ok(self) -> bool:
        return not self.declared_absent and not self.undeclared_present


def check_group_values(
    group: str, values_by_case: Mapping[str, Iterable[int]], table: LabelTable
) -> GroupCheck:
    """Compare the values present in a group's images (per case) with the declared ids."""
    declared = dict(table.groups.get(group, {}))
    found: set[int] = set()
    where: dict[int, list[str]] = {}
    for case, values in values_by_case.items():
        for v in values:
            v = int(v)
            if v == 0:
                continue
            found.add(v)
            if v not in declared:
                where.setdefault(v, []).append(case)
    return GroupCheck(
        group=group,
        declared=len(declared),
        found=tuple(sorted(found)),
        declared_absent=MappingProxyType({k: n for k, n in declared.items() if k not in found}),
        undeclared_present=MappingProxyType({v: tuple(sorted(c)) for v, c in where.items()}),
    )
