"""Quality control (petcorpus.qc): planted faults are flagged with the right reason, clean
phantoms are not, the PET/CT shift is measured within 2 mm."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from petcorpus.catalog import Catalog
from petcorpus.cli import app
from petcorpus.layouts.autopet import AutopetCorpus
from petcorpus.nifti import write_nifti
from petcorpus.percist import percist_references
from petcorpus.phantom import Tissue, make_study, write_clinical_csv, write_study
from petcorpus.pipeline.build import build
from petcorpus.qc import QcReason, check_study, estimate_shift, likely_cause, qc_corpus, run_qc
from petcorpus.qc.acquisition import robust_z
from petcorpus.resample import resample_to
from petcorpus.volume import Volume

N_CLEAN = 21
VENDORS = ("siemens", "ge", "philips")
DIAGNOSES = ("LYMPHOMA", "MELANOMA", "LUNG_CANCER", "NEGATIVE")
LB_PER_KG = 2.20462
# Planted faults: subject index -> what was done.
SHIFTED, POUNDS, NEG_WITH_LESIONS, ONE_VOXEL, CUT_AT_CHEST = 100, 101, 102, 103, 104


def _study(i: int, diagnosis: str, vendor: str = "siemens"):
    return make_study(seed=9000 + i, size="small", vendor=vendor, diagnosis=diagnosis, index=i)


def _rewrite(folder: Path, name: str, vol: Volume) -> None:
    write_nifti(vol, folder / f"{name}.nii.gz")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[int, str]]:
    """21 clean small studies of mixed vendors and diagnoses, plus one study per planted
    fault; built once (DICOM -> build), faults planted in DICOM or in the outputs."""
    dicom = tmp_path_factory.mktemp("qc-dicom")
    out = tmp_path_factory.mktemp("qc-out")
    studies = []
    for i in range(N_CLEAN):
        studies.append(_study(i, DIAGNOSES[i % 4], VENDORS[i % 3]))
    faulty = {
        SHIFTED: _study(SHIFTED, "LYMPHOMA"),
        POUNDS: _study(POUNDS, "LYMPHOMA"),
        NEG_WITH_LESIONS: _study(NEG_WITH_LESIONS, "LYMPHOMA"),
        ONE_VOXEL: _study(ONE_VOXEL, "NEGATIVE"),
        CUT_AT_CHEST: _study(CUT_AT_CHEST, "NEGATIVE"),
    }
    pounds = f"{faulty[POUNDS].truth.weight_kg * LB_PER_KG:.1f}"
    for ds in faulty[POUNDS].pet + faulty[POUNDS].ct:  # a weight given in pounds
        ds.PatientWeight = pounds
    csv_rows = list(studies)
    for idx, st in faulty.items():
        if idx == NEG_WITH_LESIONS:  # the clinical table says NEGATIVE; the mask has lesions
            st = dataclasses.replace(st, truth=dataclasses.replace(st.truth, diagnosis="NEGATIVE"))
        csv_rows.append(st)
    for st in [*studies, *faulty.values()]:
        write_study(st, dicom)
    csv = write_clinical_csv(csv_rows, dicom / "clinical.csv")
    report = build(dicom, out, clinical=csv, workers=1)
    assert not report.failed
    keys = {}
    folders = {c.subject: c for c in AutopetCorpus(out).cases()}
    for idx, st in faulty.items():
        case = folders[st.subject_id]
        keys[idx] = case.key
        f = case.folder
        if idx == SHIFTED:  # PET moved 10 mm along the first voxel axis (left-right)
            for name in ("SUV", "PET"):
                v = case.volume(name)
                moved = ndimage.shift(v.array, (10.0 / v.spacing[0], 0, 0), order=1)
                _rewrite(f, name, v.with_array(moved.astype(np.float32)))
        elif idx == ONE_VOXEL:  # one lesion voxel in the thigh muscle
            seg, ct = case.volume("SEG"), case.volume("CTres")
            k = 4
            i, j = np.argwhere((ct.array[:, :, k] > 20) & (ct.array[:, :, k] < 100))[0]
            arr = np.zeros(seg.shape, np.uint8)
            arr[i, j, k] = 1
            _rewrite(f, "SEG", seg.with_array(arr))
        elif idx == CUT_AT_CHEST:  # keep the top 40 % of the slices (ends mid-chest)
            for name in ("SUV", "PET", "CTres", "SEG"):
                v = case.volume(name)
                k0 = int(v.shape[2] * 0.6)
                t = np.eye(4)
                t[2, 3] = k0
                _rewrite(f, name, Volume(np.asarray(v.array)[:, :, k0:], v.affine @ t))
    clean = {st.subject_id for st in studies}
    for c in folders.values():
        if c.subject in clean:
            keys.setdefault(-len(keys) - 1, c.key)
    return out, keys


@pytest.fixture(scope="module")
def report(corpus):
    out, _ = corpus
    return run_qc(out)


def _reasons(report, key: str) -> set[str]:
    return set(report[key].reasons())


@pytest.mark.slow  # the module corpus: 21 clean + 6 faulty phantom builds
def test_clean_phantoms_are_not_flagged(corpus, report) -> None:
    _, keys = corpus
    clean = [k for i, k in keys.items() if i < 0]
    assert len(clean) == N_CLEAN >= 20
    flagged = {k: [f.message for f in report[k].flags] for k in clean if report[k].flagged}
    assert flagged == {}
    for k in clean:
        m = report[k].measures
        assert 1.5 < m["liver_suv"] < 2.5
        assert max(abs(m[f"shift_{a}_mm"]) for a in "xyz") < 3.0


@pytest.mark.slow  # the module corpus: 21 clean + 6 faulty phantom builds
def test_shifted_pet_is_flagged_misaligned(corpus, report) -> None:
    key = corpus[1][SHIFTED]
    assert QcReason.MISALIGNED in _reasons(report, key)
    m = report[key].measures
    # Voxel axis 0 of the PET grid is RAS -x (DICOM storage order: x grows to the left).
    assert abs(abs(m["shift_x_mm"]) - 10.0) < 2.0
    flag = next(f for f in report[key].flags if f.reason is QcReason.MISALIGNED)
    assert "left-right" in flag.message
    assert flag.picture is not None and flag.picture.startswith(b"\x89PNG")


@pytest.mark.slow  # the module corpus: 21 clean + 6 faulty phantom builds
def test_weight_in_pounds_is_named(corpus, report) -> None:
    key = corpus[1][POUNDS]
    flags = [f for f in report[key].flags if f.reason is QcReason.SUV_IMPLAUSIBLE]
    assert len(flags) == 1
    assert "weight looks like pounds" in flags[0].message
    assert 3.8 < flags[0].value < 5.0  # liver 2 SUV x 2.2


@pytest.mark.slow  # the module corpus: 21 clean + 6 faulty phantom builds
def test_negative_with_lesions_names_the_study(corpus, report) -> None:
    key = corpus[1][NEG_WITH_LESIONS]
    assert _reasons(report, key) == {QcReason.NEGATIVE_WITH_LESIONS}
    msg = report[key].flags[0].message
    assert "NEGATIVE" in msg and "component" in msg


@pytest.mark.slow  # the module corpus: 21 clean + 6 faulty phantom builds
def test_one_voxel_lesion(corpus, report) -> None:
    key = corpus[1][ONE_VOXEL]
    # The NEGATIVE study now has a lesion voxel: both contradictions are named.
    assert _reasons(report, key) == {QcReason.NEGATIVE_WITH_LESIONS,
                                     QcReason.ONE_VOXEL_COMPONENT}  # fmt: skip


@pytest.mark.slow  # the module corpus: 21 clean + 6 faulty phantom builds
def test_field_of_view_cut_at_the_chest(corpus, report) -> None:
    key = corpus[1][CUT_AT_CHEST]
    reasons = _reasons(report, key)
    assert QcReason.FOV_PARTIAL in reasons
    assert QcReason.ACQUISITION_OUTLIER in reasons  # 384 mm against 960 mm everywhere else
    assert QcReason.MISALIGNED not in reasons
    msg = next(f.message for f in report[key].flags if f.reason is QcReason.FOV_PARTIAL)
    assert "lower edge" in msg


@pytest.mark.slow  # the module corpus: 21 clean + 6 faulty phantom builds
def test_results_are_stored_shown_and_strict_exits_1(corpus, report, tmp_path) -> None:
    out, _ = corpus
    with Catalog.open(out, readonly=True) as cat:
        summary = cat.qc_summary()
        flags = cat.qc_flags(pictures=True)
    assert summary is not None and summary["checked"] == N_CLEAN + 5
    assert summary["flagged"] == 5
    assert all(f["picture"] and f["picture"].startswith(b"\x89PNG") for f in flags)
    runner = CliRunner()
    res = runner.invoke(app, ["catalog", "status", str(out)])
    assert res.exit_code == 0, res.output
    assert "5 flagged" in res.output and "MISALIGNED" in res.output
    html = tmp_path / "r.html"
    res = runner.invoke(app, ["report", str(out), "-o", str(html), "--no-progress"])
    assert res.exit_code == 0, res.output
    text = html.read_text()
    assert "Quality control (5 of 26 studies flagged)" in text
    assert text.count("ONE_VOXEL_COMPONENT") >= 1


@pytest.mark.slow  # the module corpus: 21 clean + 6 faulty phantom builds
def test_cli_strict(corpus, tmp_path) -> None:
    out, _ = corpus
    runner = CliRunner()
    res = runner.invoke(app, ["qc", str(out), "--strict", "--no-pictures", "--no-progress"])
    assert res.exit_code == 1
    assert "5 flagged" in res.output
    res = runner.invoke(app, ["qc", str(out), "--no-pictures", "--no-progress"])
    assert res.exit_code == 0


def test_percist_sphere_on_a_lesion_is_unusable() -> None:
    st = make_study(seed=4, size="small", vendor="siemens", diagnosis="MELANOMA")
    t = st.truth
    liver = t.pet_labels.array == Tissue.LIVER
    ct = resample_to(t.ct_hu, t.suv, interpolation="linear", fill=-1024)
    seg = t.lesion_mask
    on_lesion = percist_references(t.suv, liver, None)
    res = check_study(t.suv, ct, seg, diagnosis="MELANOMA", percist=on_lesion)
    flags = [f for f in res.flags if f.reason is QcReason.PERCIST_UNUSABLE]
    assert len(flags) == 1 and "overlaps the lesion mask" in flags[0].message
    placed = percist_references(t.suv, liver, None, exclude=seg.array)
    res = check_study(t.suv, ct, seg, diagnosis="MELANOMA", percist=placed)
    assert QcReason.PERCIST_UNUSABLE not in res.reasons()


def test_percist_reference_on_a_hot_spot_is_never_reported_ok() -> None:
    """The reference itself says it is unusable (what `organs stats` prints), not only QC."""
    st = make_study(seed=4, size="small", vendor="siemens", diagnosis="MELANOMA")
    t = st.truth
    liver = t.pet_labels.array == Tissue.LIVER
    on_lesion = percist_references(t.suv, liver, None)  # lesions not excluded
    assert on_lesion.liver_status.startswith("unusable: ")
    placed = percist_references(t.suv, liver, None, exclude=t.lesion_mask.array)
    assert placed.liver_status == "ok"


def test_off_grid_mask_and_positive_without_lesions() -> None:
    t = make_study(seed=2, size="small", vendor="ge", diagnosis="LYMPHOMA").truth
    ct = resample_to(t.ct_hu, t.suv, interpolation="linear", fill=-1024)
    off = Volume(t.lesion_mask.array[:, :, :-1], t.lesion_mask.affine)
    assert check_study(t.suv, ct, off, diagnosis="LYMPHOMA").reasons() == ["MASK_OFF_GRID"]
    empty = t.lesion_mask.with_array(np.zeros(t.suv.shape, np.uint8))
    res = check_study(t.suv, ct, empty, diagnosis="LYMPHOMA", which="study 2 of 2 of P1")
    assert res.reasons() == ["POSITIVE_WITHOUT_LESIONS"]
    assert res.flags[0].message.startswith("study 2 of 2 of P1: ")


@pytest.mark.parametrize(
    ("ratio", "words"),
    [(2.2, "pounds"), (4000.0, "Bq/ml"), (1e6, "MBq"), (0.45, "too low"), (1.5, "decay time")],
)
def test_likely_cause(ratio: float, words: str) -> None:
    assert words in likely_cause(2.0 * ratio)


def test_robust_z_with_a_constant_corpus() -> None:
    z = robust_z([3.0] * 10 + [5.0, math.nan])
    assert z[:10].tolist() == [0.0] * 10 and z[10] == math.inf and math.isnan(z[11])


def test_qc_corpus_without_catalog_notes_it(tmp_path: Path) -> None:
    from tests.test_viz import write_layout

    t = make_study(seed=5, size="small", vendor="ge", diagnosis="LYMPHOMA").truth
    write_layout(t, tmp_path / "PETCT_0000000001" / "s1", {"diagnosis": "NEGATIVE"})
    rep = qc_corpus(tmp_path)
    assert any("no catalog" in n for n in rep.notes)
    assert "NEGATIVE_WITH_LESIONS" in rep.studies[0].reasons()


@pytest.fixture(scope="module")
def full_truth():
    st = make_study(seed=3, size="full", vendor="siemens", diagnosis="LYMPHOMA")
    ct = resample_to(st.truth.ct_hu, st.truth.suv, interpolation="linear", fill=-1024)
    return st.truth.suv, ct


@pytest.mark.slow
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_shift_within_2_mm_on_full_size_phantoms(full_truth, axis: int) -> None:
    suv, ct = full_truth
    for mm in (0.0, 5.0, 10.0, 20.0):
        vox = [0.0, 0.0, 0.0]
        vox[axis] = mm / float(suv.spacing[axis])
        arr = ndimage.shift(suv.array, vox, order=1) if mm else suv.array
        s = estimate_shift(suv.with_array(arr), ct)
        expected = suv.affine[:3, :3] @ np.array(vox)  # RAS mm
        got = np.array([s.x, s.y, s.z])
        assert np.abs(got - expected).max() < 2.0, (axis, mm, got, expected)
