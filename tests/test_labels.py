"""Label tables: global ids, labels.json parsing, merge/split round trips, checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from petcorpus.errors import CorruptFileError, UnsupportedError
from petcorpus.labels import (
    GROUP_OFFSETS,
    GROUPS,
    LabelTable,
    check_group_values,
    count_overlaps,
    load_labels,
    merge_groups,
    moose_table,
    region_masks,
    split_merged,
)

REFERENCE = {
    "Body-Composition": 3,
    "Cardiac": 13,
    "Muscles": 10,
    "Organs": 19,
    "Peripheral-Bones": 31,
    "Ribs": 27,
    "Vertebrae": 28,
}


def test_moose_table_is_the_131_superset():
    t = moose_table()
    assert {g: len(r) for g, r in t.groups.items()} == REFERENCE
    assert t.n_regions == 131
    assert t.groups["Organs"][8] == "liver"
    assert t.groups["Cardiac"][6] == "aorta"
    assert t.groups["Peripheral-Bones"][23] == "skull"


def test_global_ids_are_documented_offsets_and_superset_positions():
    assert dict(GROUP_OFFSETS) == {
        "Body-Composition": 0,
        "Cardiac": 3,
        "Muscles": 16,
        "Organs": 26,
        "Peripheral-Bones": 45,
        "Ribs": 76,
        "Vertebrae": 103,
    }
    t = moose_table()
    # Independent reference: the 1-based position in the superset listed group by group.
    position = 0
    for g in GROUPS:
        for local in sorted(t.groups[g]):
            position += 1
            assert t.global_id(g, local) == position
            assert LabelTable.from_global(position) == (g, local)
    assert position == 131
    assert t.global_names()[34] == "liver"
    with pytest.raises(ValueError, match=r"not in 1\.\.131"):
        LabelTable.from_global(132)
    with pytest.raises(UnsupportedError):
        t.global_id("Body-Composition", 4)


def test_parse_both_directions_and_model_names(tmp_path):
    p = tmp_path / "labels.json"
    doc = {
        "clin_ct_organs": {"liver": 8, "spleen": 15},
        "Ribs": {"27": "sternum"},
        "other": {"1": "x"},
    }
    p.write_text(json.dumps(doc))
    t = load_labels(p)
    assert dict(t.groups["Organs"]) == {8: "liver", 15: "spleen"}
    assert dict(t.groups["Ribs"]) == {27: "sternum"}
    assert t.n_regions == 3
    assert load_labels(tmp_path) == t  # a folder holding labels.json
    (tmp_path / "empty").mkdir()
    assert load_labels(tmp_path / "empty").n_regions == 131  # no labels.json: MOOSE fallback
    with pytest.raises(CorruptFileError):
        load_labels(tmp_path / "missing.json")
    assert load_labels(None).source == "moose"
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CorruptFileError):
        load_labels(tmp_path / "bad.json")
    (tmp_path / "none.json").write_text(json.dumps({"foo": {"1": "a"}}))
    with pytest.raises(CorruptFileError, match="none of the ENHANCE groups"):
        load_labels(tmp_path / "none.json")


def _random_groups(rng, shape):
    """Non-overlapping group images: draw a global map, split it independently."""
    merged = rng.integers(0, 132, size=shape).astype(np.uint8)
    merged[rng.random(shape) < 0.3] = 0
    sizes = list(REFERENCE.values())
    groups = {}
    lo = 0
    for g, n in zip(GROUPS, sizes, strict=True):
        sel = (merged > lo) & (merged <= lo + n)
        img = np.zeros(shape, np.uint8)
        img[sel] = merged[sel] - lo
        groups[g] = img
        lo += n
    return merged, groups


def test_merge_split_round_trip_exact():
    rng = np.random.default_rng(3)
    merged, groups = _random_groups(rng, (17, 13, 11))
    assert count_overlaps(groups) == 0
    m = merge_groups(groups)
    assert m.dtype == np.uint8
    np.testing.assert_array_equal(m, merged)
    back = split_merged(m)
    assert set(back) == set(GROUPS)
    for g in GROUPS:
        np.testing.assert_array_equal(back[g], groups[g])


def test_merge_float_images_and_missing_groups():
    organs = np.zeros((4, 4, 4), np.float32)
    organs[1, 1, 1] = 8.0
    m = merge_groups({"Organs": organs})
    assert m[1, 1, 1] == 34 and np.count_nonzero(m) == 1
    organs[0, 0, 0] = 2.5
    with pytest.raises(ValueError, match="non-integer"):
        merge_groups({"Organs": organs})


def test_merge_overlap_priority_and_count():
    body = np.zeros((3, 3, 3), np.uint8)
    muscles = np.zeros((3, 3, 3), np.uint8)
    body[0] = 1  # skeletal_muscle over the whole first plane
    muscles[0, 0] = 9  # iliopsoas_left inside it
    assert count_overlaps({"Body-Composition": body, "Muscles": muscles}) == 3
    m = merge_groups({"Muscles": muscles, "Body-Composition": body})
    assert (m[0, 0] == 16 + 9).all()  # the specific group wins
    assert (m[0, 1:] == 1).all()


def test_merge_refuses_values_outside_superset():
    ribs = np.zeros((2, 2, 2), np.uint8)
    ribs[0, 0, 0] = 28
    with pytest.raises(UnsupportedError, match="outside the MOOSE superset"):
        merge_groups({"Ribs": ribs})


def test_region_masks():
    t = moose_table()
    m = np.zeros((5, 5, 5), np.uint8)
    m[1:3, 1:3, 1:3] = 34
    m[4, 4, 4] = 41
    masks = region_masks(m, t)
    assert set(masks) == {"liver", "spleen"}
    assert masks["liver"].sum() == 8 and masks["spleen"].sum() == 1
    only = region_masks(m, t, names=["spleen", "brain"])
    assert set(only) == {"spleen", "brain"} and not only["brain"].any()
    with pytest.raises(KeyError):
        region_masks(m, t, names=["not_a_region"])


def test_check_group_values_planted():
    t = LabelTable({"Organs": {3: "bladder", 8: "liver", 15: "spleen"}})
    ch = check_group_values("Organs", {"0001": [0, 8, 3], "0002": [0, 8, 3, 77]}, t)
    assert dict(ch.declared_absent) == {15: "spleen"}
    assert dict(ch.undeclared_present) == {77: ("0002",)}
    assert ch.found == (3, 8, 77)
    assert not ch.ok
    ok = check_group_values("Organs", {"0001": [0, 3, 8, 15]}, t)
    assert ok.ok
