"""SUV factors against hand calculations from the header and the phantom's truth."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from petcorpus.cli import app
from petcorpus.dicom.series import load_series
from petcorpus.dicom.suv import (
    SuvInputs,
    autopet_reference_file,
    bsa_m2,
    compute_suv,
    lbm_kg,
    suv_factor,
)
from petcorpus.errors import MissingTagError, PetcorpusError, Reason, UnsupportedError
from tests.conftest import phantom

REL = 1e-6


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def _pet(vendor: str = "siemens", **kw) -> list[pydicom.Dataset]:
    """Deep copies of a phantom's PET headers (pixel data dropped), safe to edit."""
    out = []
    for ds in phantom(seed=5, vendor=vendor, diagnosis="LYMPHOMA", **kw).pet:
        c = copy.deepcopy(ds)
        del c.PixelData
        out.append(c)
    return out


def _dt(date: str, time: str) -> dt.datetime:
    t, _, frac = time.partition(".")
    base = dt.datetime.strptime(date + t, "%Y%m%d%H%M%S")
    return base + dt.timedelta(seconds=float("0." + (frac or "0")))


def _hand_bw(ds: pydicom.Dataset, scan: dt.datetime) -> float:
    """SUVbw per Bq/ml from the header, written out by hand (QIBA, START)."""
    rp = ds.RadiopharmaceuticalInformationSequence[0]
    inj = dt.datetime.strptime(str(rp.RadiopharmaceuticalStartDateTime)[:14], "%Y%m%d%H%M%S")
    seconds = (scan - inj).total_seconds()
    decayed = float(rp.RadionuclideTotalDose) * 2.0 ** (-seconds / float(rp.RadionuclideHalfLife))
    return float(ds.PatientWeight) * 1000.0 / decayed


# -- body size formulas --------------------------------------------------------------------
def test_lbm_and_bsa_formulas_by_hand():
    # Janmahasatian: male 9270*W/(6680+216*BMI); female 9270*W/(8780+244*BMI)
    bmi = 80.0 / 1.8**2
    assert lbm_kg(80.0, 1.8, "M") == pytest.approx(9270 * 80 / (6680 + 216 * bmi), rel=1e-12)
    assert lbm_kg(80.0, 1.8, "F") == pytest.approx(9270 * 80 / (8780 + 244 * bmi), rel=1e-12)
    assert bsa_m2(80.0, 1.8) == pytest.approx(0.007184 * 80**0.425 * 180**0.725, rel=1e-12)


# -- one test per vendor: hand calculation and the phantom truth ----------------------------
@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips"])
def test_vendor_factors_match_hand_calculation_and_truth(vendor):
    study = phantom(seed=5, vendor=vendor, diagnosis="LYMPHOMA")
    dss = _pet(vendor)
    first = dss[0]
    series = _dt(first.SeriesDate, first.SeriesTime)
    acq = min(_dt(d.AcquisitionDate, d.AcquisitionTime) for d in dss)
    if vendor == "ge":
        assert series > acq  # GE rewrote SeriesTime: the private tag is the scan start
        ge = str(first[0x0009, 0x100D].value)
        scan = dt.datetime.strptime(ge[:14], "%Y%m%d%H%M%S")
    else:
        assert series <= acq
        scan = series
    per_bqml = _hand_bw(first, scan)
    scale = float(first[0x7053, 0x1009].value) if vendor == "philips" else 1.0
    res = compute_suv(dss)
    assert res.errors == {}
    assert res.bqml == pytest.approx(scale, rel=1e-12)
    assert _rel(res.suv_bw, per_bqml * scale) < REL
    assert _rel(res.suv_bw, study.truth.suv_factors["bw"] * study.truth.bqml_factor) < REL
    w, h, sex = float(first.PatientWeight), float(first.PatientSize), str(first.PatientSex)
    assert _rel(res.suv_lbm, per_bqml * scale * lbm_kg(w, h, sex) / w) < REL
    assert _rel(res.suv_bsa, per_bqml * scale * bsa_m2(w, h) * 1e4 / (w * 1000)) < REL
    for kind in ("lbm", "bsa"):
        assert _rel(getattr(res, f"suv_{kind}"), study.truth.suv_factors[kind] * scale) < REL
    if vendor == "philips":  # the scanner's own SUV scale factor agrees
        assert _rel(res.suv_bw, float(first[0x7053, 0x1000].value)) < REL
    if vendor == "ge":
        assert "0009,100D" in res.scan_datetime_source


def test_ge_without_private_tag_falls_back_to_earliest_acquisition():
    dss = _pet("ge")
    for d in dss:
        del d[0x0009, 0x100D]
    acq = min(_dt(d.AcquisitionDate, d.AcquisitionTime) for d in dss)
    res = compute_suv(dss)
    assert "earliest" in res.scan_datetime_source
    assert _rel(res.suv_bw, _hand_bw(dss[0], acq)) < REL


# -- decay correction rules ---------------------------------------------------------------
def test_decay_admin_means_no_decay():
    dss = _pet()
    for d in dss:
        d.DecayCorrection = "ADMIN"
    rp = dss[0].RadiopharmaceuticalInformationSequence[0]
    hand = float(dss[0].PatientWeight) * 1000 / float(rp.RadionuclideTotalDose)
    assert _rel(suv_factor(SuvInputs.from_datasets(dss)), hand) < REL


def test_decay_none_gives_one_factor_per_slice():
    dss = _pet()
    for d in dss:
        d.DecayCorrection = "NONE"
        d.CorrectedImage = ["NORM", "DTIM", "ATTN", "SCAT", "RAN"]  # no DECY
    res = compute_suv(dss)
    assert res.suv_bw is None and "per slice" in res.errors["suv_bw"]
    per = res.per_slice["suv_bw"]
    assert len(per) == len(dss)
    for d, f in zip(dss, per, strict=True):
        hand = _hand_bw(d, _dt(d.AcquisitionDate, d.AcquisitionTime))
        assert _rel(f, hand) < REL
    assert len(set(per)) > 1  # several beds, several factors
    with pytest.raises(UnsupportedError):
        suv_factor(SuvInputs.from_datasets(dss))
    # one acquisition time for every slice: one number describes the series
    for d in dss:
        d.AcquisitionTime = dss[0].AcquisitionTime
        d.AcquisitionDate = dss[0].AcquisitionDate
    acq = _dt(dss[0].AcquisitionDate, dss[0].AcquisitionTime)
    assert _rel(compute_suv(dss).suv_bw, _hand_bw(dss[0], acq)) < REL


def test_corrected_image_must_hold_attn_and_decy():
    dss = _pet()
    for d in dss:
        d.CorrectedImage = ["NORM", "ATTN", "SCAT"]  # START without DECY
    with pytest.raises(PetcorpusError, match="DECY"):
        suv_factor(SuvInputs.from_datasets(dss))
    for d in dss:
        d.CorrectedImage = ["NORM", "DECY", "SCAT"]
    with pytest.raises(PetcorpusError, match="ATTN"):
        suv_factor(SuvInputs.from_datasets(dss))


# -- midnight ------------------------------------------------------------------------------
def test_midnight_injection_before_scan_after():
    study = phantom(seed=5, vendor="siemens", diagnosis="LYMPHOMA", midnight=True)
    dss = _pet(midnight=True)
    rp = dss[0].RadiopharmaceuticalInformationSequence[0]
    assert str(rp.RadiopharmaceuticalStartDateTime)[:8] != str(dss[0].SeriesDate)
    res = compute_suv(dss)
    assert _rel(res.suv_bw, study.truth.suv_factors["bw"]) < REL
    assert _rel(res.suv_bw, _hand_bw(dss[0], _dt(dss[0].SeriesDate, dss[0].SeriesTime))) < REL
    # without RadiopharmaceuticalStartDateTime: SeriesDate + StartTime, one day back
    for d in dss:
        del d.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime
    res2 = compute_suv(dss)
    assert "midnight" in res2.inputs["injection_datetime"]["source"]
    assert _rel(res2.suv_bw, study.truth.suv_factors["bw"]) < REL


def test_start_time_without_datetime_same_day():
    study = phantom(seed=5, vendor="siemens", diagnosis="LYMPHOMA")
    dss = _pet()
    for d in dss:
        del d.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime
    assert _rel(compute_suv(dss).suv_bw, study.truth.suv_factors["bw"]) < REL


# -- units ---------------------------------------------------------------------------------
def test_philips_cnts_with_only_the_suv_scale_factor():
    dss = _pet("philips")
    ph_suv = float(dss[0][0x7053, 0x1000].value)
    for d in dss:
        del d[0x7053, 0x1009]
    res = compute_suv(dss)
    assert res.suv_bw == ph_suv
    assert res.bqml is None and "bqml" in res.errors
    w, h = float(dss[0].PatientWeight), float(dss[0].PatientSize)
    assert _rel(res.suv_bsa, ph_suv * bsa_m2(w, h) * 1e4 / (w * 1000)) < REL


def test_cnts_without_scale_factor_raises():
    dss = _pet("philips")
    for d in dss:
        del d[0x7053, 0x1009]
        del d[0x7053, 0x1000]
    with pytest.raises(MissingTagError, match="7053,1009") as err:
        suv_factor(SuvInputs.from_datasets(dss, path="/data/pet"))
    assert err.value.path == "/data/pet"
    res = compute_suv(dss)
    assert res.suv_bw is None and res.bqml is None and "CNTS" in res.errors["suv_bw"]


def test_gml_is_already_suv():
    dss = _pet()
    for d in dss:
        d.Units = "GML"
    res = compute_suv(dss)
    assert res.suv_bw == 1.0
    assert res.bqml is None and "GML" in res.errors["bqml"]
    w, h, sex = float(dss[0].PatientWeight), float(dss[0].PatientSize), str(dss[0].PatientSex)
    assert _rel(res.suv_lbm, lbm_kg(w, h, sex) / w) < REL


# -- bad input: each raises naming the tag and the file --------------------------------------
def _edit_weight_none(d):
    del d.PatientWeight


def _edit_dose_missing(d):
    del d.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose


def _edit_dose_zero(d):
    d.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose = "0"


def _edit_units(d):
    d.Units = "PROPCNTS"


def _edit_decay(d):
    d.DecayCorrection = "WEIRD"


def _edit_negative_uptake(d):
    d.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime = (
        str(d.SeriesDate) + "235959"
    )


def _edit_long_uptake(d):
    day = dt.datetime.strptime(str(d.SeriesDate), "%Y%m%d") - dt.timedelta(days=2)
    d.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime = (
        day.strftime("%Y%m%d") + "120000"
    )


@pytest.mark.parametrize(
    ("edit", "error", "words"),
    [
        (_edit_weight_none, MissingTagError, "PatientWeight"),
        (_edit_dose_missing, MissingTagError, "RadionuclideTotalDose"),
        (_edit_dose_zero, PetcorpusError, "RadionuclideTotalDose"),
        (_edit_units, UnsupportedError, "Units"),
        (_edit_decay, UnsupportedError, "DecayCorrection"),
        (_edit_negative_uptake, PetcorpusError, "negative or over 24 h"),
        (_edit_long_uptake, PetcorpusError, "negative or over 24 h"),
    ],
)
def test_bad_inputs_raise_naming_tag_and_file(vendor_study, edit, error, words, tmp_path):
    study, _ = vendor_study
    files = []
    for k, ds in enumerate(study.pet[:3]):
        c = copy.deepcopy(ds)
        edit(c)
        f = tmp_path / f"pet{k}.dcm"
        c.save_as(f, enforce_file_format=True)
        files.append(f)
    dss = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    with pytest.raises(error, match=words) as err:
        suv_factor(SuvInputs.from_datasets(dss))
    assert err.value.path is not None and err.value.path.endswith(".dcm")
    assert str(files[0]) in str(err.value)
    res = compute_suv(dss)  # the all-factors call reports instead of raising
    assert res.suv_bw is None and words.split()[0] in res.errors["suv_bw"]


def test_missing_dose_error_has_reason_code():
    dss = _pet()
    for d in dss:
        _edit_dose_missing(d)
    with pytest.raises(MissingTagError) as err:
        suv_factor(SuvInputs.from_datasets(dss, path="/x/pet"))
    assert err.value.reason == Reason.MISSING_TAG


# -- the published autoPET recipe, bit for bit ------------------------------------------------
def _recipe(pet_dir: Path) -> float:
    """lab-midas/TCIA_processing calculate_suv_factor, as published (test reference)."""
    ds = pydicom.dcmread(str(next(pet_dir.glob("*.dcm"))))

    def conv_time(time_str):
        return float(time_str[:2]) * 3600 + float(time_str[2:4]) * 60 + float(time_str[4:13])

    total_dose = ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose
    start_time = ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartTime
    half_life = ds.RadiopharmaceuticalInformationSequence[0].RadionuclideHalfLife
    time_diff = conv_time(ds.AcquisitionTime) - conv_time(start_time)
    act_dose = total_dose * 0.5 ** (time_diff / half_life)
    return 1000 * ds.PatientWeight / act_dose


def test_autopet_recipe_bit_for_bit(vendor_study):
    _study, study_dir = vendor_study
    pet_dir = next(p for p in study_dir.iterdir() if p.name.startswith("4."))
    ref = autopet_reference_file(pet_dir)
    others = sorted(p for p in pet_dir.glob("*.dcm") if p != ref)
    dss = [pydicom.dcmread(p, stop_before_pixels=True) for p in [ref, *others]]
    res = compute_suv(dss, time_reference="autopet")
    assert res.suv_bw == _recipe(pet_dir)  # exact, not approximately
    assert res.time_reference == "autopet"
    assert res.inputs["autopet_acquisition_time"]["file"] == str(ref)
    # headers in slice order (as load_series returns them): the recipe's file is found
    loaded = load_series(sorted(pet_dir.glob("*.dcm")))
    assert compute_suv(loaded.datasets, time_reference="autopet").suv_bw == _recipe(pet_dir)


def test_autopet_decays_to_the_bed_of_one_file():
    dss = _pet()  # in memory, no files: the first dataset given is the recipe's "one file"
    later = max(dss, key=lambda d: str(d.AcquisitionTime))
    assert later.AcquisitionTime > dss[0].SeriesTime
    a = compute_suv([later, *dss], time_reference="autopet").suv_bw
    hand = _hand_bw(later, _dt(later.AcquisitionDate, later.AcquisitionTime))
    assert _rel(a, hand) < REL
    q = compute_suv(dss).suv_bw
    assert a > q * 1.01  # a later bed: less decayed dose, a larger factor than QIBA's


# -- CLI -----------------------------------------------------------------------------------
def test_cli_suv_json(vendor_study):
    study, study_dir = vendor_study
    pet_dir = next(p for p in study_dir.iterdir() if p.name.startswith("4."))
    (pet_dir / "README.txt").write_text("not DICOM")  # skipped
    try:
        out = CliRunner().invoke(app, ["suv", str(pet_dir), "--json"])
    finally:
        (pet_dir / "README.txt").unlink()
    assert out.exit_code == 0, out.output
    obj = json.loads(out.stdout)
    assert {"suv_bw", "suv_lbm", "suv_bsa", "bqml", "inputs", "errors"} <= obj.keys()
    t = study.truth
    assert _rel(obj["suv_bw"], t.suv_factors["bw"] * t.bqml_factor) < REL
    assert _rel(obj["bqml"], t.bqml_factor) < REL
    assert obj["inputs"]["weight_kg"]["source"].startswith("(0010,1030)")
    out2 = CliRunner().invoke(app, ["suv", str(pet_dir), "--json", "--suv-time", "autopet"])
    assert json.loads(out2.stdout)["suv_bw"] == _recipe(pet_dir)
    text = CliRunner().invoke(app, ["suv", str(pet_dir)])
    assert text.exit_code == 0 and "PatientWeight" in text.stdout and "suv_bw" in text.stdout


def test_cli_suv_error_is_one_line(tmp_path):
    ds = copy.deepcopy(phantom(seed=5, vendor="siemens", diagnosis="LYMPHOMA").pet[0])
    ds.Units = "CNTS"  # no Philips scale factors
    ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
    out = CliRunner().invoke(app, ["suv", str(tmp_path / "a.dcm"), "--json"])
    assert out.exit_code == 0  # the JSON reports what is impossible
    obj = json.loads(out.stdout)
    assert obj["suv_bw"] is None and obj["bqml"] is None and "7053,1009" in obj["errors"]["bqml"]
    out = CliRunner().invoke(app, ["suv", str(tmp_path / "nothing.dcm")])
    assert out.exit_code == 1


# -- tracer and half-life ------------------------------------------------------------------
def test_psma_ga68_uses_the_header_half_life():
    dss = _pet("ge", tracer="PSMA-Ga68")
    rp = dss[0].RadiopharmaceuticalInformationSequence[0]
    assert float(rp.RadionuclideHalfLife) == 4062.6  # Ga-68, 67.71 min
    ge = pydicom.valuerep.DT(str(dss[0][0x0009, 0x100D].value))
    scan = dt.datetime.combine(ge.date(), ge.time())
    res = compute_suv(dss)
    assert _rel(res.suv_bw, _hand_bw(dss[0], scan)) < REL
    assert res.warnings == () and res.inputs["radionuclide"]["value"] == "Ga-68"
    assert res.inputs["tracer"]["value"] == "PSMA"


def _contradicted() -> list[pydicom.Dataset]:
    """A Ga-68 PSMA header whose half-life is F-18's."""
    dss = _pet("siemens", tracer="PSMA-Ga68")
    for ds in dss:
        ds.RadiopharmaceuticalInformationSequence[0].RadionuclideHalfLife = "6586.2"
    return dss


def test_radionuclide_half_life_contradiction_is_flagged():
    dss = _contradicted()
    res = compute_suv(dss)
    # the factors shown decay with the header's half-life, and say why they are not trusted
    scan = _dt(dss[0].SeriesDate, dss[0].SeriesTime)
    assert _rel(res.suv_bw, _hand_bw(dss[0], scan)) < REL
    (warning,) = res.warnings
    assert "Ga-68" in warning and "6586.2" in warning and "F-18" in warning
    with pytest.raises(PetcorpusError) as err:  # what convert/build call
        res.factor("suv_bw")
    assert err.value.reason == Reason.INVALID_VALUE and "RadionuclideHalfLife" in str(err.value)
    assert res.factor("bqml") == 1.0  # Bq/ml does not decay
    with pytest.raises(PetcorpusError):
        suv_factor(SuvInputs.from_datasets(dss))
    # the published recipe is reproduced as it is (it checks nothing), with the warning
    auto = compute_suv(dss, "autopet")
    assert auto.warnings and auto.factor("suv_bw") == auto.suv_bw
    # the code's and the text's radionuclides are both checked
    for ds in dss:
        del ds.RadiopharmaceuticalInformationSequence[0].RadionuclideCodeSequence
    assert compute_suv(dss).warnings


def test_cli_suv_shows_the_contradiction(tmp_path):
    for i, ds in enumerate(_contradicted()[:3]):
        ds.save_as(tmp_path / f"{i}.dcm", enforce_file_format=True)
    out = CliRunner().invoke(app, ["suv", str(tmp_path)])
    assert out.exit_code == 0 and "warning" in out.stdout and "contradicts" in out.stdout
    obj = json.loads(CliRunner().invoke(app, ["suv", str(tmp_path), "--json"]).stdout)
    assert obj["warnings"] and obj["suv_bw"] is not None


def test_contradicted_study_fails_to_convert(tmp_path):
    from petcorpus.phantom import make_study, write_study
    from petcorpus.pipeline import build

    study = make_study(seed=5, vendor="ge", diagnosis="NEGATIVE", tracer="PSMA-Ga68")
    for ds in study.pet:
        ds.RadiopharmaceuticalInformationSequence[0].RadionuclideHalfLife = "6586.2"
    write_study(study, tmp_path / "dicom")
    report = build(tmp_path / "dicom", tmp_path / "out", workers=1)
    (failed,) = report.failed
    assert "INVALID_VALUE" in str(failed) and "contradicts" in str(failed)
