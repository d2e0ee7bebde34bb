"""PSMA phantom studies (Ga-68 and F-18): real half-lives in the header, SUV from the header
by hand, and a mixed FDG + PSMA build whose catalog says which is which."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from petcorpus.catalog import Catalog
from petcorpus.cli import app
from petcorpus.phantom import make_study, write_corpus
from petcorpus.phantom.anatomy import Tissue
from petcorpus.pipeline import build
from petcorpus.volume import Volume


def test_psma_headers_and_uptake():
    ga = make_study(seed=2, size="small", vendor="ge", diagnosis="NEGATIVE", tracer="PSMA-Ga68")
    f18 = make_study(
        seed=2, size="small", vendor="siemens", diagnosis="NEGATIVE", tracer="PSMA-F18"
    )
    fdg = make_study(seed=2, size="small", vendor="ge", diagnosis="NEGATIVE")
    rp = ga.pet[0].RadiopharmaceuticalInformationSequence[0]
    assert float(rp.RadionuclideHalfLife) == pytest.approx(67.71 * 60)
    assert rp.RadionuclideCodeSequence[0].CodeValue == "C-131A3"
    assert rp.RadionuclideCodeSequence[0].CodeMeaning == "^68^Gallium"
    assert "PSMA-11" in rp.Radiopharmaceutical
    assert 120e6 <= float(rp.RadionuclideTotalDose) <= 200e6
    assert ga.pet[0].ManufacturerModelName == "Discovery 690"
    assert ga.pet[0].private_block(0x0009, "GEMS_PETD_01")[0x0D].VR == "DT"
    rp18 = f18.pet[0].RadiopharmaceuticalInformationSequence[0]
    assert float(rp18.RadionuclideHalfLife) == pytest.approx(109.77 * 60)
    assert rp18.RadionuclideCodeSequence[0].CodeValue == "C-111A1"
    assert 250e6 <= float(rp18.RadionuclideTotalDose) <= 350e6
    assert f18.pet[0].ManufacturerModelName in ("Biograph mCT Flow 20", "Biograph64")
    assert f18.truth.scan_start - f18.truth.injection_time >= dt.timedelta(minutes=90)

    def mean_suv(study, tissue):
        t = study.truth
        return float(t.suv.array[t.pet_labels.array == tissue].mean())

    for tissue in (Tissue.KIDNEY, Tissue.SALIVARY, Tissue.LIVER):
        assert mean_suv(ga, tissue) > 3 * mean_suv(ga, Tissue.MUSCLE), tissue
    assert mean_suv(ga, Tissue.KIDNEY) > mean_suv(ga, Tissue.LIVER)
    assert mean_suv(ga, Tissue.BRAIN) < 1.0 < mean_suv(fdg, Tissue.BRAIN)
    assert not (fdg.truth.pet_labels.array == Tissue.SALIVARY).any()
    # FDG stays F-18 with the FDG name
    rpf = fdg.pet[0].RadiopharmaceuticalInformationSequence[0]
    assert rpf.Radiopharmaceutical == "Fluorodeoxyglucose"
    assert float(rpf.RadionuclideHalfLife) == 6586.2


def _hand_suv_bw(pet_dir: Path) -> float:
    """SUVbw per Bq/ml from the written header, by hand: weight, dose, Ga-68 half-life,
    injection and GE's scan start (SeriesTime is rewritten after the scan)."""
    dss = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(pet_dir.glob("*.dcm"))]
    ds = dss[0]
    rp = ds.RadiopharmaceuticalInformationSequence[0]
    inj = dt.datetime.strptime(str(rp.RadiopharmaceuticalStartDateTime), "%Y%m%d%H%M%S.%f")
    series = dt.datetime.strptime(ds.SeriesDate + ds.SeriesTime, "%Y%m%d%H%M%S.%f")
    first_acq = min(
        dt.datetime.strptime(d.AcquisitionDate + d.AcquisitionTime, "%Y%m%d%H%M%S.%f") for d in dss
    )
    assert series > first_acq  # GE: the private scan start applies
    ge = ds[0x0009, 0x100D].value
    scan = dt.datetime.strptime(str(ge), "%Y%m%d%H%M%S.%f")
    half = float(rp.RadionuclideHalfLife)
    assert half == pytest.approx(4062.6)
    decayed = float(rp.RadionuclideTotalDose) * 0.5 ** ((scan - inj).total_seconds() / half)
    return float(ds.PatientWeight) * 1000.0 / decayed


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    studies = write_corpus(root / "dicom", subjects=4, seed=4, vendor="mixed", tracer="mixed")
    report = build(root / "dicom", root / "out", workers=1)
    assert report.failed == []
    return root, studies


def test_ga68_ge_converts_with_suv_from_the_header(mixed):
    root, studies = mixed
    (st,) = [s for s in studies if s.truth.tracer == "PSMA-Ga68"]
    assert st.vendor == "ge"
    (pet_dir,) = (root / "dicom" / st.subject_id).glob("*/4.000000-PET*")
    hand = _hand_suv_bw(pet_dir)
    (study_dir,) = (root / "out" / st.subject_id).iterdir()
    sidecar = json.loads(next(study_dir.glob("*.json")).read_text())
    assert abs(sidecar["suv"]["factor"] - hand) / hand < 1e-6
    assert sidecar["suv"]["inputs"]["radionuclide"]["value"] == "Ga-68"
    suv = Volume.from_nifti(study_dir / "SUV.nii.gz").array
    pet = Volume.from_nifti(study_dir / "PET.nii.gz").array
    np.testing.assert_allclose(suv, pet.astype(np.float64) * hand, rtol=1e-6, atol=1e-6)


def test_mixed_catalog_says_which_is_which(mixed):
    root, studies = mixed
    want = {
        s.subject_id: ("FDG" if s.truth.tracer == "FDG" else "PSMA", s.truth.tracer)
        for s in studies
    }
    assert sorted(t for _, t in want.values()) == ["FDG", "FDG", "PSMA-F18", "PSMA-Ga68"]
    with Catalog.open(root / "out", readonly=True) as cat:
        attrs = cat.subject_attributes().set_index("subject_id")["tracer"].to_dict()
        params = cat.query(
            "SELECT st.subject_id, p.name, p.value FROM params p JOIN series se USING "
            "(series_uid) JOIN studies st USING (study_uid) WHERE se.modality = 'PT' "
            "AND p.name IN ('Tracer', 'Radionuclide', 'Radiopharmaceutical')"
        )
    assert attrs == {k: v[0] for k, v in want.items()}
    table = params.pivot(index="subject_id", columns="name", values="value").to_dict("index")
    nuclide = {"FDG": "F-18", "PSMA-Ga68": "Ga-68", "PSMA-F18": "F-18"}
    for subject, (family, tracer) in want.items():
        assert table[subject]["Tracer"] == family
        assert table[subject]["Radionuclide"] == nuclide[tracer]
    assert {table[s]["Radiopharmaceutical"] for s in want} == {
        "Fluorodeoxyglucose",
        "Ga-68 PSMA-11",
        "F-18 PSMA-1007",
    }


def test_cli_phantom_tracer(tmp_path):
    r = CliRunner().invoke(
        app, ["phantom", str(tmp_path / "d"), "-n", "1", "--tracer", "psma", "--vendor", "ge"]
    )
    assert r.exit_code == 0, r.output
    assert "PSMA-Ga68" in r.output
    (f,) = list((tmp_path / "d").glob("*/*/4.000000-PET*/1-001.dcm"))
    rp = pydicom.dcmread(f, stop_before_pixels=True).RadiopharmaceuticalInformationSequence[0]
    assert rp.RadionuclideCodeSequence[0].CodeMeaning == "^68^Gallium"
    bad = CliRunner().invoke(app, ["phantom", str(tmp_path / "e"), "--tracer", "fdg2"])
    assert bad.exit_code != 0 and "tracer" in bad.output
