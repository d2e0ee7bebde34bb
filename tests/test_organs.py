"""Organ PET statistics, PERCIST references and lesions by organ against numpy / SimpleITK."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from petcorpus.cli import app
from petcorpus.labels import moose_table
from petcorpus.layouts.enhance import open_enhance, read_case
from petcorpus.organs import (
    case_organ_stats,
    guess_pet_unit,
    labels_to_grid,
    lesions_by_organ,
    percist_references,
    region_stats,
)
from petcorpus.phantom import Tissue
from petcorpus.phantom.enhance import enhance_masks, write_enhance_corpus
from petcorpus.resample import resample_to
from petcorpus.volume import Volume
from tests.conftest import phantom


def _numpy_stats(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": np.mean(values),
        "median": np.median(values),
        "max": np.max(values),
        "p95": np.percentile(values, 95),
        "sd": np.std(values),
    }


def test_region_stats_equal_numpy_on_phantom_truth():
    tr = phantom(seed=21, size="small", diagnosis="LYMPHOMA").truth
    labels, suv = tr.pet_labels.array, tr.suv.array
    names = {t.value: t.name for t in Tissue}
    st = region_stats(labels, suv, tr.suv.voxel_volume_ml, names).set_index("region_id")
    present = sorted(set(np.unique(labels).tolist()) - {0})
    assert list(st.index) == present
    for rid in present:
        v = suv[labels == rid].astype(np.float64)
        row = st.loc[rid]
        assert row["voxels"] == v.size
        assert row["volume_ml"] == pytest.approx(v.size * tr.suv.voxel_volume_ml)
        assert row["region"] == names[rid]
        for k, ref in _numpy_stats(v).items():
            assert row[k] == pytest.approx(ref, rel=1e-12, abs=1e-12), (rid, k)


def test_region_stats_small_hand_case():
    labels = np.array([[[0, 1, 1, 2]]])
    values = np.array([[[9.0, 1.0, 3.0, 5.0]]])
    st = region_stats(labels, values, 0.5)
    assert st["voxels"].tolist() == [2, 1]
    assert st["mean"].tolist() == [2.0, 5.0]
    assert st["median"].tolist() == [2.0, 5.0]
    assert st["p95"].tolist() == pytest.approx([1.0 + 0.95 * 2.0, 5.0])
    assert st["sd"].tolist() == [1.0, 0.0]
    assert st["volume_ml"].tolist() == [1.0, 0.5]
    assert region_stats(np.zeros((2, 2, 2), int), np.ones((2, 2, 2)), 1.0).empty


def test_labels_to_grid_equals_simpleitk_nearest():
    tr = phantom(seed=21, size="small", diagnosis="LYMPHOMA").truth
    ours = labels_to_grid(tr.ct_labels, tr.pet_labels)
    itk = resample_to(tr.ct_labels, tr.pet_labels, interpolation="nearest", fill=0)
    assert ours.same_grid(tr.pet_labels)
    np.testing.assert_array_equal(ours.array, itk.array)
    # The same anatomy sampled on the PET grid directly agrees almost everywhere.
    assert (ours.array == tr.pet_labels.array).mean() > 0.99


def test_labels_to_grid_outside_and_oblique():
    lab = Volume(np.arange(1, 9, dtype=np.uint8).reshape(2, 2, 2), np.eye(4))
    target = Volume(np.zeros((4, 1, 1)), np.diag([1.0, 1.0, 1.0, 1.0]) @ _shift(-1, 0, 0))
    out = labels_to_grid(lab, target).array[:, 0, 0]
    assert out.tolist() == [0, 1, 5, 0]  # x = -1 outside, 0, 1, 2 outside
    rot = np.eye(4)
    rot[:2, :2] = [[0.0, -1.0], [1.0, 0.0]]  # 90 degrees in-plane: SimpleITK path
    big = Volume(np.arange(27, dtype=np.uint8).reshape(3, 3, 3), np.eye(4))
    tgt = Volume(np.zeros((3, 3, 3)), rot @ _shift(0, -2, 0))
    a = labels_to_grid(big, tgt).array
    b = resample_to(big, tgt, interpolation="nearest").array
    np.testing.assert_array_equal(a, b)


def _shift(x: float, y: float, z: float) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = [x, y, z]
    return m


@pytest.fixture(scope="module")
def enhance_case(tmp_path_factory):
    """A NEGATIVE phantom case written as ENHANCE (SUV) and as Bq/ml."""
    study = phantom(seed=23, size="small", diagnosis="NEGATIVE")
    root = tmp_path_factory.mktemp("organs")
    write_enhance_corpus(root / "suv", studies=[study], pet_unit="suv")
    write_enhance_corpus(root / "bq", studies=[study], pet_unit="bqml")
    return study, root


def test_case_stats_equal_numpy_on_truth(enhance_case):
    study, root = enhance_case
    c = open_enhance(root / "suv")
    data = read_case(c, 1)
    st, ref, unit = case_organ_stats(data.groups, data.pet, c.labels)
    assert unit == "SUV" and set(st["unit"]) == {"SUV"}
    tr = study.truth
    masks = enhance_masks(study)
    table = moose_table()
    for name in ("liver", "spleen", "kidney_left", "aorta", "vertebra_L3", "skeletal_muscle"):
        g, local = table.find(name)
        # Independent path: CT-grid truth mask → PET grid with SimpleITK → numpy statistics.
        ct_mask = tr.ct_labels.with_array((masks[g] == local).astype(np.uint8))
        on_pet = resample_to(ct_mask, tr.suv, interpolation="nearest").array.astype(bool)
        v = tr.suv.array[on_pet].astype(np.float64)
        row = st[st["region"] == name].iloc[0]
        assert row["group"] == g and row["local_id"] == local
        assert row["region_id"] == table.global_id(g, local)
        assert row["voxels"] == v.size
        for k, expected in _numpy_stats(v).items():
            assert row[k] == pytest.approx(expected, rel=1e-9), (name, k)
    # Truth uptake: liver SUV 2.0, spleen 1.8 (blurred and noisy but close in the bulk).
    liver = st[st["region"] == "liver"].iloc[0]
    assert liver["median"] == pytest.approx(2.0, abs=0.1)
    assert ref.liver_status == "ok"
    assert ref.liver_mean == pytest.approx(2.0, abs=0.1)


def test_bqml_corpus_and_suv_factor(enhance_case):
    study, root = enhance_case
    c = open_enhance(root / "bq")
    data = read_case(c, 1)
    st, _, unit = case_organ_stats(data.groups, data.pet, c.labels)
    assert unit == "Bq/ml"
    st_suv, _, unit2 = case_organ_stats(
        data.groups, data.pet, c.labels, suv_factor=study.truth.suv_factors["bw"]
    )
    assert unit2 == "SUV"
    c2 = open_enhance(root / "suv")
    ref, _, _ = case_organ_stats(read_case(c2, 1).groups, read_case(c2, 1).pet, c2.labels)
    np.testing.assert_allclose(st_suv["mean"], ref["mean"], rtol=1e-6)
    np.testing.assert_allclose(st["mean"] * study.truth.suv_factors["bw"], ref["mean"], rtol=1e-6)
    assert guess_pet_unit(np.full((2, 2, 2), 3000.0)) == "Bq/ml"
    assert guess_pet_unit(np.full((2, 2, 2), 2.0)) == "SUV"


def test_percist_liver_sphere_inside_liver(enhance_case):
    study, root = enhance_case
    c = open_enhance(root / "suv")
    data = read_case(c, 1)
    tr = study.truth
    liver_pet = labels_to_grid(tr.ct_labels, tr.suv).array == Tissue.LIVER
    ref = percist_references(tr.suv, liver_pet, None)
    sphere = ref.liver_mask
    assert sphere.any() and ref.liver_voxels == sphere.sum()
    assert not (sphere & ~liver_pet).any()  # inside the mask it was placed in
    assert not (sphere & (tr.pet_labels.array != Tissue.LIVER)).any()  # and in the truth liver
    # Every voxel centre within 15 mm of the centre is in the sphere, and no other.
    ijk = np.argwhere(np.ones(tr.suv.shape, bool))
    d = np.linalg.norm(tr.suv.voxel_to_world(ijk) - np.array(ref.liver_centre), axis=1)
    np.testing.assert_array_equal(sphere.reshape(-1), d <= 15.0)
    # In the patient's right half of the liver (RAS+: larger x).
    x = tr.suv.voxel_to_world(np.argwhere(liver_pet))[:, 0]
    assert ref.liver_centre[0] >= x.mean()
    assert ref.liver_mean == pytest.approx(float(tr.suv.array[sphere].mean()))
    assert ref.liver_sd == pytest.approx(float(tr.suv.array[sphere].astype(np.float64).std()))
    assert ref.blood_status == "no aorta mask" and math.isnan(ref.blood_mean)
    _ = data


def test_percist_sphere_volume_fine_grid_and_too_small():
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    liver = np.zeros((40, 40, 40), bool)
    liver[5:35, 5:35, 5:35] = True  # a 60 mm cube
    pet = Volume(np.ones(liver.shape, np.float32), aff)
    ref = percist_references(pet, liver, None)
    assert ref.liver_voxels * 0.008 == pytest.approx(4 / 3 * math.pi * 1.5**3, rel=0.05)
    tiny = np.zeros_like(liver)
    tiny[10:20, 10:20, 10:20] = True  # 20 mm: no 3 cm sphere fits
    r2 = percist_references(pet, tiny, None)
    assert math.isnan(r2.liver_mean) and "too small" in r2.liver_status
    # Lesions are excluded from the placement.
    big = np.zeros((50, 50, 50), bool)
    big[5:45, 5:45, 5:45] = True  # an 80 mm cube with a 20 mm lesion off its centre
    lesion = np.zeros_like(big)
    lesion[22:32, 22:32, 22:32] = True
    pet_big = Volume(np.ones(big.shape, np.float32), aff)
    plain = percist_references(pet_big, big, None)
    assert (plain.liver_mask & lesion).any()  # without exclusion the sphere hits it
    r3 = percist_references(pet_big, big, None, exclude=lesion)
    assert r3.liver_mask is not None
    assert not (r3.liver_mask & lesion).any()
    assert not (r3.liver_mask & ~big).any()


def test_percist_blood_pool_in_descending_aorta():
    aff = np.diag([2.0, 2.0, 3.0, 1.0])  # RAS+: +y anterior
    shape = (40, 40, 60)
    aorta = np.zeros(shape, bool)
    aorta[18:23, 28:33, 30:55] = True  # ascending, anterior (y = 56..64 mm)
    aorta[18:23, 8:13, 5:55] = True  # descending, posterior (y = 16..24 mm)
    aorta[18:23, 8:33, 55:58] = True  # arch on top
    liver = np.zeros(shape, bool)
    liver[2:15, 2:38, 0:20] = True  # dome at slice 19
    pet = np.zeros(shape, np.float32)
    pet[aorta] = 1.5
    pet[18:23, 28:33, 30:55] = 9.0  # a hot ascending aorta must not be sampled
    ref = percist_references(Volume(pet, aff), liver, aorta)
    assert ref.blood_status == "ok"
    assert ref.blood_mean == pytest.approx(1.5) and ref.blood_sd == pytest.approx(0.0)
    m = ref.blood_mask
    assert not (m & ~aorta).any()
    ks = np.flatnonzero(m.any(axis=(0, 1)))
    assert ks.min() > 19 and ks.max() < 55  # above the liver dome, below the arch
    assert (ks.max() - ks.min() + 1) * 3.0 <= 21.0
    assert np.argwhere(m)[:, 1].max() < 13  # posterior tube only


def test_lesions_by_organ_fractions():
    organs = np.zeros((10, 10, 10), np.uint8)
    organs[:5] = 34  # liver
    organs[5:] = 41  # spleen
    organs[:, :, 8:] = 0
    les = np.zeros_like(organs)
    les[3:7, 2:4, 2:4] = 1  # 16 voxels: 8 liver, 8 spleen
    les[2, 8, 8] = 1  # 1 voxel outside any region
    suv = np.zeros(organs.shape)
    suv[les == 1] = 4.0
    suv[6, 3, 3] = 10.0
    df = lesions_by_organ(les, organs, 0.1, moose_table().global_names(), values=suv)
    a = df[df["lesion_voxels"] == 16].set_index("region")
    assert a.loc["liver", "fraction"] == pytest.approx(0.5)
    assert a.loc["spleen", "fraction"] == pytest.approx(0.5)
    assert a.loc["liver", "primary"] and not a.loc["spleen", "primary"]  # tie: lower id
    assert a.loc["liver", "suv_max"] == 10.0
    assert a.loc["liver", "lesion_ml"] == pytest.approx(1.6)
    b = df[df["lesion_voxels"] == 1]
    assert b["region"].tolist() == ["(none)"] and b["region_id"].tolist() == [0]
    assert df.groupby("lesion")["fraction"].sum().tolist() == pytest.approx([1.0, 1.0])
    empty = lesions_by_organ(np.zeros_like(les), organs, 0.1)
    assert empty.empty and "fraction" in empty.columns


def test_phantom_lesions_land_in_their_organ():
    tr = phantom(seed=31, size="small", diagnosis="MELANOMA").truth
    names = {t.value: t.name for t in Tissue}
    df = lesions_by_organ(tr.lesion_mask.array, tr.pet_labels.array, 1.0, names)
    primary = df[df["primary"]]
    assert len(primary) == len(tr.lesions)
    assert "LIVER" in set(primary["region"])  # the melanoma liver metastasis
    liver_row = primary[primary["region"] == "LIVER"].iloc[0]
    assert liver_row["fraction"] > 0.9


def test_cli_organs_stats_and_lesions(enhance_case, tmp_path):
    study, root = enhance_case
    out, pc = tmp_path / "organs.csv", tmp_path / "percist.csv"
    r = CliRunner().invoke(
        app, ["organs", "stats", str(root / "suv"), "-o", str(out), "--percist", str(pc)]
    )
    assert r.exit_code == 0, r.output
    t = pd.read_csv(out, dtype={"case_id": str})
    assert set(t["case_id"]) == {"0001"} and "liver" in set(t["region"])
    p = pd.read_csv(pc)
    assert p.loc[0, "liver_status"] == "ok"
    # Lesions by organ from files: lesion mask on the PET grid, organ map on the CT grid.
    import nibabel as nib

    tr = phantom(seed=31, size="small", diagnosis="MELANOMA").truth
    nib.save(tr.lesion_mask.to_nifti(), tmp_path / "seg.nii.gz")
    nib.save(tr.ct_labels.to_nifti(), tmp_path / "organs.nii.gz")
    r = CliRunner().invoke(app, ["organs", "lesions", "--lesions", str(tmp_path / "seg.nii.gz"),
                                 "--organs", str(tmp_path / "organs.nii.gz"),
                                 "-o", str(tmp_path / "l.csv")])  # fmt: skip
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "l.csv")
    assert df["lesion"].nunique() == len(tr.lesions)
    _ = study


@pytest.mark.slow
def test_corpus_stats_parallel_equals_serial_and_reports_failures(tmp_path):
    from petcorpus.organs import corpus_organ_stats

    studies = [phantom(seed=23, size="small", diagnosis="NEGATIVE"),
               phantom(seed=21, size="small", diagnosis="LYMPHOMA"),
               phantom(seed=31, size="small", diagnosis="MELANOMA")]  # fmt: skip
    root = tmp_path / "c"
    write_enhance_corpus(root, studies=studies, release="v1")
    (root / "imaging-data/images/PT/0003.nii.gz").unlink()
    c = open_enhance(root)
    serial, p1, f1 = corpus_organ_stats(c, workers=1)
    parallel, p2, f2 = corpus_organ_stats(c, workers=2)
    assert f1 == f2 == {"0003": "no PET"}
    pd.testing.assert_frame_equal(serial, parallel)
    pd.testing.assert_frame_equal(p1, p2)
    assert sorted(set(serial["case_id"])) == ["0001", "0002"]
    one, _, _ = case_organ_stats(read_case(c, 2).groups, read_case(c, 2).pet, c.labels)
    got = serial[serial["case_id"] == "0002"].drop(columns="case_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, one)
    r = CliRunner().invoke(app, ["organs", "stats", str(root), "-o", str(tmp_path / "o.csv"),
                                 "-j", "2", "--cases", "1-3"])  # fmt: skip
    assert r.exit_code == 1
    assert "failed case 0003: no PET" in r.output
    assert set(pd.read_csv(tmp_path / "o.csv", dtype={"case_id": str})["case_id"]) == {
        "0001",
        "0002",
    }


def test_overlapping_groups_each_keep_their_voxels():
    aff = np.diag([-2.0, -2.0, 3.0, 1.0])
    shape = (12, 10, 8)
    body = np.zeros(shape, np.uint8)
    muscles = np.zeros(shape, np.uint8)
    body[2:10, 2:8, 3:5] = 1  # skeletal_muscle at "L3"
    muscles[2:5, 2:8, 2:6] = 9  # iliopsoas_left, partly inside it
    pet_arr = np.random.default_rng(0).random(shape).astype(np.float32) + 0.5
    pet = Volume(pet_arr, aff)
    groups = {"Body-Composition": Volume(body, aff), "Muscles": Volume(muscles, aff)}
    st, _, unit = case_organ_stats(groups, pet, moose_table())
    assert unit == "SUV"
    st = st.set_index("region")
    for name, mask in (("skeletal_muscle", body == 1), ("iliopsoas_left", muscles == 9)):
        v = pet_arr[mask].astype(np.float64)
        assert st.loc[name, "voxels"] == v.size
        for k, expected in _numpy_stats(v).items():
            assert st.loc[name, k] == pytest.approx(expected, rel=1e-12)
    assert st.loc["skeletal_muscle", "region_id"] == 1
    assert st.loc["iliopsoas_left", "region_id"] == 16 + 9


# -- nothing small disappears ----------------------------------------------------------------
def _plate_case() -> tuple[dict[str, Volume], Volume, int, int]:
    """CT grid 2 mm, PET grid 4 mm whose voxel centres fall between CT voxel centres (so
    nearest neighbour picks odd CT indices): a liver block and a 2 mm plate (spleen) on an
    even CT index, which owns no PET voxel centre."""
    table = moose_table()
    g, liver = table.find("liver")
    g2, spleen = table.find("spleen")
    assert g == g2 == "Organs"
    ct = np.zeros((40, 20, 20), np.uint8)
    ct[2:18, 2:18, 2:18] = liver
    ct[24, 2:18, 2:18] = spleen  # one CT voxel (2 mm) thick
    ct_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    pet_aff = np.diag([4.0, 4.0, 4.0, 1.0])
    pet_aff[:3, 3] = 1.0  # PET centres at 1, 5, 9 mm: CT continuous index 0.5, 2.5, ...
    pet = np.full((20, 10, 10), 2.0, np.float32)
    pet[12, :, :] = 5.0  # the PET slab holding the plate
    return {"Organs": Volume(ct, ct_aff)}, Volume(pet, pet_aff), liver, spleen


def test_thin_plate_is_listed_with_a_note_on_the_pet_grid():
    groups, pet, liver, spleen = _plate_case()
    on_pet = labels_to_grid(groups["Organs"], pet).array
    assert not (on_pet == spleen).any()  # nearest neighbour alone loses it
    st, _, _ = case_organ_stats(groups, pet, moose_table())
    row = st.set_index("local_id").loc[spleen]
    assert row["voxels"] == 0 and row["volume_ml"] == 0.0
    assert row["ct_volume_ml"] == pytest.approx(16 * 16 * 0.008)
    assert math.isnan(row["mean"]) and "too thin for the PET grid" in row["note"]
    assert row["region"] == "spleen" and row["region_id"] == moose_table().global_id(
        "Organs", spleen
    )
    lv = st.set_index("local_id").loc[liver]
    assert lv["voxels"] > 0 and lv["note"] == ""


def test_ct_grid_statistics_use_the_exact_masks():
    groups, pet, liver, spleen = _plate_case()
    st, _, _ = case_organ_stats(groups, pet, moose_table(), grid="ct")
    st = st.set_index("local_id")
    assert st.loc[spleen, "voxels"] == 16 * 16
    assert st.loc[spleen, "volume_ml"] == pytest.approx(st.loc[spleen, "ct_volume_ml"])
    assert st.loc[liver, "voxels"] == 16**3 and (st["note"] == "").all()
    # PET resampled linearly: the liver sees the constant 2.0 inside the PET field of view
    assert st.loc[liver, "median"] == pytest.approx(2.0)
    assert st.loc[spleen, "max"] > 2.0


def test_unknown_value_keeps_the_other_regions():
    study = phantom(seed=21, size="small", diagnosis="NEGATIVE")
    tr = study.truth
    masks = {g: tr.ct_labels.with_array(m) for g, m in enhance_masks(study).items()}
    organs = np.array(masks["Organs"].array)
    organs[:3, :3, :3] = 20  # beyond the MOOSE superset of Organs (1..19)
    groups = {**masks, "Organs": masks["Organs"].with_array(organs)}
    ref, _, _ = case_organ_stats(masks, tr.suv, moose_table())
    st, _, _ = case_organ_stats(groups, tr.suv, moose_table())
    bad = st[st["local_id"].eq(20) & st["group"].eq("Organs")]
    assert len(bad) == 1 and pd.isna(bad["region_id"].iloc[0])
    assert "not in the Organs label table" in bad["note"].iloc[0] and "27 CT voxels" in (
        bad["note"].iloc[0]
    )
    known = st.dropna(subset=["region_id"]).reset_index(drop=True)
    keep = ref[ref["region_id"].isin(known["region_id"])].reset_index(drop=True)
    assert len(known) == len(ref)  # every known region is still there
    # the corner voxels were background: no other region changed
    pd.testing.assert_frame_equal(known.drop(columns="note"), keep.drop(columns="note"))


def test_cli_organs_stats_warns_and_keeps_the_case(tmp_path):
    import nibabel as nib

    root = tmp_path / "c"
    write_enhance_corpus(root, studies=[phantom(seed=23, size="small", diagnosis="NEGATIVE")],
                         release="v1")  # fmt: skip
    path = root / "imaging-data/ground-truth/Organs/0001.nii.gz"
    img = nib.load(path)
    arr = np.asarray(img.dataobj).copy()
    arr[:2, :2, :2] = 20
    nib.save(nib.Nifti1Image(arr, img.affine, img.header), path)
    out = tmp_path / "o.csv"
    r = CliRunner().invoke(app, ["organs", "stats", str(root), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "warning case 0001: Organs 20: value 20 is not in the Organs label table" in " ".join(
        r.output.split()
    )
    df = pd.read_csv(out, dtype={"case_id": str})
    assert df["region"].isin(["liver", "spleen"]).sum() == 2 and df["region_id"].isna().sum() == 1
    r = CliRunner().invoke(app, ["organs", "stats", str(root), "-o", str(out), "--grid", "ct"])
    assert r.exit_code == 0, r.output
    assert "too thin" not in r.output
