"""ENHANCE.PET reader on phantom corpora of both releases and the zips."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from petcorpus.cli import app
from petcorpus.labels import GROUPS, merge_groups, split_merged
from petcorpus.layouts.enhance import (
    FileRef,
    check_corpus_labels,
    enhance_cases_table,
    licence_for_site,
    open_enhance,
    read_case,
)
from petcorpus.phantom.enhance import phantom_labels, write_enhance_corpus
from tests.conftest import phantom

N = 4


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("enhance")
    diagnoses = ("LYMPHOMA", "MELANOMA", "LUNG_CANCER", "NEGATIVE")
    studies = [phantom(seed=500 + i, size="small", diagnosis=diagnoses[i]) for i in range(N)]
    out = {}
    for name, kw in {
        "v1": {"release": "v1"},
        "v2": {"release": "v2"},
        "zip": {"release": "v2", "zipped": True},
    }.items():
        cases = write_enhance_corpus(root / name, studies=studies, **kw)
        out[name] = (root / name, cases)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["v1", "v2", "zip"])
def test_every_case_found(corpora, name):
    root, _ = corpora[name]
    c = open_enhance(root)
    assert c.release == ("v1" if name == "v1" else "v2")
    assert list(c.by_id) == [f"{i:04d}" for i in range(1, N + 1)]
    assert c.incomplete() == {}
    assert c.problems == []
    assert c.labels == phantom_labels().__class__(phantom_labels().groups, source=c.labels.source)
    assert c.labels.n_regions == 130
    assert 19 not in c.labels.groups["Organs"]  # trachea dropped, as in the real 130
    if name == "zip":
        assert all(case.ct.member is not None for case in c.by_id.values())
    else:
        assert all(case.ct.member is None for case in c.by_id.values())


@pytest.mark.slow
def test_v2_layout_on_disk(corpora):
    root, _ = corpora["v2"]
    images = sorted(p.name for p in (root / "imaging-data" / "images").iterdir())
    assert images == ["CT_0001-0002", "CT_0003-0004", "PT_0001-0004"]
    gt = sorted(p.name for p in (root / "imaging-data" / "ground-truth").iterdir())
    assert gt == sorted(GROUPS)
    zips = sorted(p.name for p in corpora["zip"][0].glob("*"))
    assert len(zips) == 13  # 3 metadata + 7 label zips + 3 image zips


@pytest.mark.slow
def test_cases_table_holds_true_xlsx_values(corpora):
    root, cases = corpora["zip"]
    t = enhance_cases_table(root)
    assert list(t["case_id"]) == [c.case_id for c in cases]
    for row, case in zip(t.itertuples(), cases, strict=True):
        tr = case.study.truth
        assert row.pt_age == tr.age
        assert row.pt_sex == tr.sex
        assert row.pt_weight_kg == pytest.approx(tr.weight_kg)
        assert row.pt_height_m == pytest.approx(tr.height_m)
        assert row.site == case.site
        assert row.licence == ("CC BY-NC 4.0" if "AutoPET" in case.site else "CC BY 4.0")
        assert row.missing == "" and row.problems == ""
        assert FileRef.parse(row.ct_path) == open_enhance(root).by_id[row.case_id].ct
        assert row.ct_slice_thickness_mm == pytest.approx(12.0)
    assert set(t["licence"]) == {"CC BY-NC 4.0", "CC BY 4.0"}
    # A user can filter by licence.
    assert len(t[t["licence"] == "CC BY 4.0"]) == 3


def test_licence_for_site():
    assert licence_for_site("University Hospital Leipzig (DE).") == "CC BY 4.0"
    assert licence_for_site("Azienda Ospedaliero Universitaria Careggi (IT)") == "CC BY 4.0"
    assert licence_for_site("AutoPET Challenge") == "CC BY-NC 4.0"
    assert licence_for_site("Somewhere else") is None
    assert licence_for_site(None) is None


@pytest.mark.slow
def test_zip_read_equals_unpacked(corpora):
    cz = open_enhance(corpora["zip"][0], zips="only")
    cd = open_enhance(corpora["v2"][0], zips="never")
    for cid in ("0001", "0004"):
        a, b = read_case(cz, cid), read_case(cd, cid)
        for va, vb in [(a.ct, b.ct), (a.pet, b.pet)] + [
            (a.groups[g], b.groups[g]) for g in GROUPS
        ]:
            assert va.dtype == vb.dtype
            np.testing.assert_array_equal(va.array, vb.array)
            np.testing.assert_array_equal(va.affine, vb.affine)
    # ... and equals nibabel reading the same bytes on its own.
    ref = cd.by_id["0001"].pt
    np.testing.assert_array_equal(read_case(cz, 1).pet.array, nib.load(ref.path).get_fdata())


@pytest.mark.slow
def test_volumes_are_the_phantom_truth(corpora):
    root, cases = corpora["v1"]
    data = read_case(open_enhance(root), 2)
    tr = cases[1].study.truth
    np.testing.assert_array_equal(data.ct.array, tr.ct_hu.array)
    np.testing.assert_allclose(data.ct.affine, tr.ct_hu.affine)
    np.testing.assert_array_equal(data.pet.array, tr.suv.array)
    for g in GROUPS:
        assert data.groups[g].same_grid(data.ct)  # masks live on the CT grid
        np.testing.assert_array_equal(data.groups[g].array, cases[1].masks[g])


@pytest.mark.slow
def test_merged_map_round_trips(corpora):
    data = read_case(open_enhance(corpora["v2"][0]), 3, images=False)
    groups = {g: v.array for g, v in data.groups.items()}
    merged = merge_groups(groups)
    back = split_merged(merged)
    for g in GROUPS:
        np.testing.assert_array_equal(back[g], groups[g])
    assert len(np.unique(merged)) > 30


@pytest.mark.slow
def test_left_right_split(corpora):
    _, cases = corpora["v1"]
    case = cases[0]
    organs = case.masks["Organs"]
    aff = case.study.truth.ct_labels.affine
    x_ras = aff[0, 0] * np.arange(organs.shape[0]) + aff[0, 3]
    for left_id, right_id in [(6, 7), (12, 13), (9, 10)]:
        xl = x_ras[np.nonzero(organs == left_id)[0]]
        xr = x_ras[np.nonzero(organs == right_id)[0]]
        assert xl.size and xr.size
        assert xl.max() < 0 < xr.min()  # RAS+: patient's left is -x


@pytest.mark.slow
def test_missing_files_reported_not_fatal(corpora, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(corpora["v2"][0], root)
    (root / "imaging-data/images/PT_0001-0004/0002.nii.gz").unlink()
    (root / "imaging-data/ground-truth/Organs/0003.nii.gz").unlink()
    pt = pd.read_excel(root / "PT-details.xlsx")
    extra = pd.DataFrame([{"Patient": 9, "Age": 50, "Sex": "F", "Weight [kg]": 60.0,
                           "Height [m]": 1.6, "Data-Source": "Mars General"}])  # fmt: skip
    pd.concat([pt, extra]).to_excel(root / "PT-details.xlsx", index=False)
    c = open_enhance(root)
    assert c.incomplete() == {"0002": ["PT"], "0003": ["Organs"]}
    t = enhance_cases_table(c).set_index("case_id")
    assert t.loc["0002", "missing"] == "PT"
    assert t.loc["0003", "missing"] == "Organs"
    assert t.loc["0001", "missing"] == ""
    assert t.loc["0009", "missing"] == "CT;PT;" + ";".join(GROUPS)
    assert pd.isna(t.loc["0009", "licence"])
    assert "unknown Data-Source" in t.loc["0009", "problems"]
    assert read_case(c, 2).pet is None
    assert "Organs" not in read_case(c, 3, images=False).groups


@pytest.mark.slow
def test_labels_check_finds_planted_problems(corpora, tmp_path):
    root = tmp_path / "planted"
    shutil.copytree(corpora["v1"][0], root)
    c0 = open_enhance(root)
    before = {ch.group: ch for ch in check_corpus_labels(c0)}
    assert 15 not in before["Organs"].declared_absent  # spleen present
    assert not before["Ribs"].undeclared_present
    for cid in c0.by_id:  # plant 1: remove the spleen from every case
        p = root / f"imaging-data/ground-truth/Organs/{cid}.nii.gz"
        img = nib.load(p)
        arr = np.asarray(img.dataobj).copy()
        arr[arr == 15] = 0
        nib.save(nib.Nifti1Image(arr, img.affine, img.header), p)
    p = root / "imaging-data/ground-truth/Ribs/0002.nii.gz"  # plant 2: an undeclared value
    img = nib.load(p)
    arr = np.asarray(img.dataobj).copy()
    arr[5, 5, 5] = 28
    nib.save(nib.Nifti1Image(arr, img.affine, img.header), p)
    after = {ch.group: ch for ch in check_corpus_labels(open_enhance(root), workers=2)}
    assert after["Organs"].declared_absent[15] == "spleen"
    assert dict(after["Ribs"].undeclared_present) == {28: ("0002",)}
    assert set(after["Organs"].declared_absent) - {15} == set(before["Organs"].declared_absent)
    res = CliRunner().invoke(app, ["labels", "check", str(root), "--strict"])
    assert res.exit_code == 1
    assert "present but undeclared: 28 in 1 cases (0002)" in res.output
    assert "15 spleen" in res.output


@pytest.mark.slow
def test_cli_cases_merge_export(corpora, tmp_path):
    root = corpora["zip"][0]
    r = CliRunner().invoke(app, ["enhance", "cases", str(root), "-o", str(tmp_path / "c.csv")])
    assert r.exit_code == 0, r.output
    assert f"{N} cases, release v2, 0 incomplete" in r.output
    assert len(pd.read_csv(tmp_path / "c.csv")) == N
    m = tmp_path / "m.nii.gz"
    r = CliRunner().invoke(app, ["labels", "merge", str(root), "1", "-o", str(m)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["labels", "split", str(m), str(tmp_path / "split")])
    assert r.exit_code == 0, r.output
    data = read_case(open_enhance(root), 1, images=False)
    for g in GROUPS:
        got = np.asarray(nib.load(tmp_path / "split" / f"{g}.nii.gz").dataobj)
        np.testing.assert_array_equal(got, data.groups[g].array)
    r = CliRunner().invoke(
        app, ["labels", "export", str(root), "1", str(tmp_path / "x"), "-r", "liver"]
    )
    assert r.exit_code == 0, r.output
    liver = np.asarray(nib.load(tmp_path / "x" / "liver.nii.gz").dataobj)
    np.testing.assert_array_equal(liver, (data.groups["Organs"].array == 8).astype(np.uint8))


@pytest.mark.slow
def test_flat_layout_and_unpadded_names(corpora, tmp_path):
    root = tmp_path / "flat"
    src = corpora["v1"][0]
    shutil.copytree(src / "imaging-data" / "images", root / "images")
    shutil.copytree(src / "imaging-data" / "ground-truth" / "Organs", root / "organs")
    shutil.copy(src / "labels.json", root / "labels.json")
    (root / "images" / "CT" / "0003.nii.gz").rename(root / "images" / "CT" / "3.nii.gz")
    c = open_enhance(root)
    assert c.release == "v1"
    assert list(c.by_id) == [f"{i:04d}" for i in range(1, N + 1)]
    assert c.by_id["0003"].ct.path.name == "3.nii.gz"
    assert set(c.by_id["0001"].masks) == {"Organs"}  # folder name matched case-insensitively
    assert c.incomplete()["0001"] == [g for g in GROUPS if g != "Organs"]


def test_zips_only_reads_the_plain_metadata_downloads(corpora, tmp_path):
    root, cases = corpora["zip"]
    c = open_enhance(root, zips="only")
    # the release's labels.json and details spreadsheets are plain downloads beside the zips
    assert c.labels_ref == FileRef(root / "labels.json")
    assert c.pt_details == FileRef(root / "PT-details.xlsx")
    assert c.ct_details == FileRef(root / "CT-details.xlsx")
    assert c.problems == [] and c.labels.n_regions == 130  # not the built-in 131
    assert all(case.ct.member is not None for case in c.by_id.values())  # images: zips only
    t = enhance_cases_table(c)
    assert list(t["site"]) == [case.site for case in cases]
    assert t["licence"].notna().all()
    r = CliRunner().invoke(app, ["labels", "check", str(root), "--zips", "only"])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert f"labels from {root / 'labels.json'}" in out and "130 regions declared" in out
    assert f"PT-details from {root / 'PT-details.xlsx'}" in out
    assert "no labels.json" not in out and "MOOSE" not in out
    # without a labels.json anywhere, the note says where it looked
    bare = tmp_path / "bare"
    bare.mkdir()
    for p in root.glob("*.zip"):
        (bare / p.name).symlink_to(p)
    c = open_enhance(bare, zips="only")
    assert c.problems == [
        "no labels.json among the top-level files or zips: using the built-in MOOSE table"
    ]
    assert "built-in MOOSE table (no labels.json)" in c.metadata_note()
