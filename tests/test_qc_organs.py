"""Quality control with organ masks (ENHANCE.PET): the share of hot-organ activity inside its
CT mask against a hand computation, a PET moved 20 mm against its masks is flagged and clean
phantoms are not, the liver SUV from its mask, a Bq/ml PET is not judged as SUV, and
``-j/--workers`` gives the result of one worker."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from petcorpus.cli import app
from petcorpus.labels import moose_table
from petcorpus.layouts.enhance import open_enhance
from petcorpus.organs import labels_to_grid
from petcorpus.phantom.enhance import write_enhance_corpus
from petcorpus.qc import QcReason, check_study, organ_activity_share, qc_corpus
from petcorpus.qc.organ_maps import case_organ_map, qc_regions
from petcorpus.volume import Volume

# Case -> the PET's shift (mm, RAS) against its CT and masks; the other cases are clean.
SHIFTS = {"0002": (20.0, 0.0, 0.0), "0004": (0.0, 0.0, -20.0)}
N_CASES = 5


# -- organ_activity_share by hand ------------------------------------------------------------
def _box_volume(shift_vox: int, *, hot: float = 11.0, bg: float = 1.0) -> tuple[Volume, Volume]:
    """A 40³ grid of 2 mm voxels: an organ mask (label 4) over the box [15, 25)³ and a PET of
    ``bg`` with a ``hot`` box of the same size moved ``shift_vox`` voxels along axis 0."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    lab = np.zeros((40, 40, 40), np.uint8)
    lab[15:25, 15:25, 15:25] = 4
    pet = np.full((40, 40, 40), bg, np.float32)
    pet[15 + shift_vox : 25 + shift_vox, 15:25, 15:25] = hot
    return Volume(pet, affine), Volume(lab, affine)


@pytest.mark.parametrize("shift", [0, 3, 6, -4])
def test_organ_share_of_a_moved_hot_box(shift: int) -> None:
    """The hot box keeps (10 - |shift|) of its 10 slabs inside the mask; the rest lies within
    the 20 mm margin and the shell's median is the background, so the share is exactly
    (10 - |shift|) / 10."""
    pet, lab = _box_volume(shift)
    shares = organ_activity_share(pet, lab, {4: "brain", 8: "liver"})
    assert set(shares) == {"brain"}  # the liver is not a hot organ; absent organs are left out
    assert shares["brain"] == pytest.approx((10 - abs(shift)) / 10, abs=1e-9)


def test_organ_share_left_and_right_count_together() -> None:
    pet, lab = _box_volume(0)
    arr = np.asarray(lab.array).copy()
    arr[15:20][arr[15:20] == 4] = 6  # half the box is the left kidney, half the right
    arr[arr == 4] = 7
    shares = organ_activity_share(pet, lab.with_array(arr), {6: "kidney_left", 7: "kidney_right"})
    assert shares == {"kidney": pytest.approx(1.0)}


def test_organ_share_leaves_neighbours_out_with_exclude_others() -> None:
    """A hot neighbour (label 8, three slabs against the organ) inside the 20 mm margin
    counts as activity outside the organ (1000 voxels inside, 300 beside: 1000 / 1300),
    unless the neighbours are left out of the margin (then all of it is inside)."""
    pet, lab = _box_volume(0)
    arr, val = np.asarray(lab.array).copy(), np.asarray(pet.array).copy()
    arr[25:28, 15:25, 15:25] = 8
    val[25:28, 15:25, 15:25] = 11.0
    pet, lab = pet.with_array(val), lab.with_array(arr)
    names = {4: "brain", 8: "liver"}
    assert organ_activity_share(pet, lab, names)["brain"] == pytest.approx(1000 / 1300)
    assert organ_activity_share(pet, lab, names, exclude_others=True)["brain"] == 1.0


def test_qc_regions_take_whole_words() -> None:
    regions, notes = qc_regions(moose_table())
    assert notes == []
    assert sorted(regions["Organs"].values()) == [
        "bladder", "brain", "kidney_left", "kidney_right", "liver"
    ]  # fmt: skip
    assert "gallbladder" not in regions["Organs"].values()
    assert all(n.startswith("heart_") for n in regions["Cardiac"].values())
    assert set(regions) == {"Organs", "Cardiac"}


# -- an ENHANCE.PET phantom corpus --------------------------------------------------------
@pytest.fixture(scope="module")
def enhance(tmp_path_factory) -> Path:
    """Five small ENHANCE phantom cases (SUV); in two the PET is moved 20 mm against its CT
    and masks (its affine translated: the masks stay where the CT is)."""
    root = tmp_path_factory.mktemp("qc-enhance")
    write_enhance_corpus(root, N_CASES, seed=3)
    corpus = open_enhance(root)
    for key, mm in SHIFTS.items():
        ref = corpus.case(key).pt
        assert ref is not None
        pet = ref.load_volume()
        affine = pet.affine.copy()
        affine[:3, 3] += mm
        Volume(np.asarray(pet.array), affine).to_nifti().to_filename(str(ref.path))
    return root


@pytest.fixture(scope="module")
def enhance_report(enhance):
    return qc_corpus(enhance)


def test_pet_moved_against_its_masks_names_the_organs(enhance_report) -> None:
    for key in SHIFTS:
        study = enhance_report[key]
        assert QcReason.ORGAN_UPTAKE_OUTSIDE in study.reasons()
        flag = next(f for f in study.flags if f.reason is QcReason.ORGAN_UPTAKE_OUTSIDE)
        low = {
            k.removeprefix("share_"): v
            for k, v in study.measures.items()
            if k.startswith("share_") and v < 0.6
        }
        assert low, study.measures
        for organ, share in low.items():  # every organ below the limit is named, with its %
            assert f"{organ} {share:.0%} inside" in flag.message
        assert flag.value == pytest.approx(min(low.values()))
        assert flag.picture is not None and flag.picture.startswith(b"\x89PNG")


def test_clean_enhance_phantoms_are_not_flagged(enhance_report) -> None:
    clean = [s for s in enhance_report.studies if s.key not in SHIFTS]
    assert len(clean) == N_CASES - len(SHIFTS)
    assert {s.key: [f.message for f in s.flags] for s in clean if s.flagged} == {}
    for s in clean:
        shares = {k: v for k, v in s.measures.items() if k.startswith("share_")}
        assert set(shares) == {"share_brain", "share_bladder", "share_heart", "share_kidney"}
        assert min(shares.values()) > 0.85, shares
        assert "pet_unit" not in s.measures  # SUV, told by its magnitude


def test_liver_suv_comes_from_the_organ_mask(enhance, enhance_report) -> None:
    corpus = open_enhance(enhance)
    for s in enhance_report.studies:
        assert s.measures["liver_from"] == "organ mask"
        assert 1.0 < s.measures["liver_suv"] < 3.6
    # The number is the mean SUV over the liver mask mapped onto the PET grid.
    case = corpus.case("0001")
    pet = case.volume("PET")
    organs = labels_to_grid(case.volume("Organs"), pet)
    liver_id = corpus.labels.find("liver")[1]
    expected = float(np.mean(np.asarray(pet.array)[np.asarray(organs.array) == liver_id]))
    assert enhance_report["0001"].measures["liver_suv"] == pytest.approx(expected, rel=1e-6)


def test_check_study_liver_from_an_organ_map(enhance) -> None:
    """check_study itself: with a liver label the liver SUV is the mask's mean, without one
    it is found from anatomy."""
    corpus = open_enhance(enhance)
    case = corpus.case("0003")
    pet = case.volume("PET")
    regions, _ = qc_regions(corpus.labels)
    found = case_organ_map(case, pet, corpus.labels, regions)
    assert found is not None
    organs, names = found
    assert organs.same_grid(pet) and set(names.values()) >= {"liver", "brain", "bladder"}
    res = check_study(pet, None, organs=organs, organ_names=names, options=_no_pictures())
    liver = [i for i, n in names.items() if n == "liver"]
    mask = np.isin(np.asarray(organs.array), liver)
    assert res.measures["liver_from"] == "organ mask"
    assert res.measures["liver_suv"] == pytest.approx(float(np.asarray(pet.array)[mask].mean()))
    no_liver = {i: n for i, n in names.items() if n != "liver"}
    res = check_study(pet, None, organs=organs, organ_names=no_liver, options=_no_pictures())
    assert "liver_suv" not in res.measures  # no CT: no anatomy either
    assert {k for k in res.measures if k.startswith("share_")} == {
        "share_brain", "share_bladder", "share_heart", "share_kidney"
    }  # fmt: skip


def _no_pictures():
    from petcorpus.qc import QcOptions

    return QcOptions(pictures=False)


def test_bqml_pet_is_not_judged_as_suv(tmp_path: Path) -> None:
    """An ENHANCE PET in Bq/ml (thousands) has no SUV factor: the liver SUV range is skipped
    with a note, never flagged as implausible."""
    write_enhance_corpus(tmp_path, 1, seed=3, pet_unit="bqml")
    rep = qc_corpus(tmp_path)
    (s,) = rep.studies
    assert s.reasons() == []
    m = s.measures
    assert m["pet_unit"] == "Bq/ml" and "liver_suv" not in m
    assert m["liver_bqml"] > 1000 and m["liver_from"] == "organ mask"
    assert "not checked" in m["liver_note"]


def test_suv_range_is_checked_on_an_suv_pet() -> None:
    """The same liver in SUV, ten times too high, is flagged (the skip is for Bq/ml only)."""
    pet, lab = _box_volume(0, hot=30.0, bg=25.0)
    res = check_study(pet, None, organs=lab, organ_names={4: "liver"}, options=_no_pictures())
    assert res.reasons() == ["SUV_IMPLAUSIBLE"]
    res = check_study(pet, None, organs=lab, organ_names={4: "liver"}, pet_unit="Bq/ml",
                      options=_no_pictures())  # fmt: skip
    assert res.reasons() == [] and res.measures["liver_bqml"] == pytest.approx(30.0)


# -- workers ------------------------------------------------------------------------------
def _comparable(report) -> tuple[list, list[str]]:
    """Every stored fact of a report, NaN written as null (NaN != NaN)."""

    def clean(v):
        return None if isinstance(v, float) and math.isnan(v) else v

    rows = []
    for s in report.studies:
        measures = json.dumps({k: clean(v) for k, v in s.measures.items()}, sort_keys=True)
        flags = [(f.check, f.reason, f.message, clean(f.value), f.picture) for f in s.flags]
        rows.append((s.key, s.study_uid, measures, flags))
    return rows, report.notes


def test_workers_give_the_result_of_one(enhance, enhance_report) -> None:
    seen: list[str] = []

    def progress(keys):
        for k in keys:
            seen.append(k)
            yield k

    two = qc_corpus(enhance, workers=2, progress=progress)
    assert _comparable(two) == _comparable(enhance_report)
    assert seen == [s.key for s in enhance_report.studies]  # advanced once per case


def test_cli_workers_and_strict(enhance, tmp_path: Path) -> None:
    root = tmp_path / "enhance"
    shutil.copytree(enhance, root)  # the command writes the catalog into the corpus
    res = CliRunner().invoke(
        app, ["qc", str(root), "-j", "2", "--strict", "--no-pictures", "--no-progress"]
    )
    assert res.exit_code == 1, res.output
    assert f"checked {N_CASES} studies: {len(SHIFTS)} flagged" in res.output
    assert "ORGAN_UPTAKE_OUTSIDE" in res.output
    assert (root / "catalog.sqlite").is_file()


def test_organ_names_match_whole_words() -> None:
    """A gallbladder is not the bladder; plural and snake-case names are."""
    from petcorpus.qc.align import region_words

    assert "bladder" not in region_words("gallbladder")
    assert "bladder" in region_words("urinary_bladder")
    assert "kidney" in region_words("Kidneys") and "kidney" in region_words("kidney_left")
