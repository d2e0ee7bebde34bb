"""Clinical CSV ingest and the clinical / CT-details / PT-details exports."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from typer.testing import CliRunner

from petcorpus.catalog import Catalog
from petcorpus.cli import app
from petcorpus.errors import PetcorpusError
from petcorpus.phantom import PhantomStudy
from petcorpus.phantom.corpus import write_clinical_csv
from petcorpus.tables import (
    ct_details,
    export_tables,
    ingest_clinical,
    params_from_datasets,
    pt_details,
    read_clinical_csv,
)
from tests.conftest import phantom


@pytest.fixture(scope="module")
def studies() -> list[PhantomStudy]:
    return [
        phantom(seed=21, size="small", vendor="siemens", diagnosis="LYMPHOMA", index=1),
        phantom(seed=22, size="small", vendor="ge", diagnosis="MELANOMA", index=2),
        phantom(seed=23, size="small", vendor="philips", diagnosis="NEGATIVE", index=3),
    ]


def _series_infos(study: PhantomStudy) -> list[SimpleNamespace]:
    """Adapter: phantom datasets → the fields record_series() reads."""
    out = []
    for modality, datasets in (("CT", study.ct), ("PT", study.pet)):
        ds = datasets[0]
        out.append(
            SimpleNamespace(
                series_uid=ds.SeriesInstanceUID,
                study_uid=study.study_uid,
                modality=modality,
                manufacturer=ds.Manufacturer,
                model=ds.ManufacturerModelName,
                files=len(datasets),
                frame_of_reference_uid=ds.FrameOfReferenceUID,
                description=ds.SeriesDescription,
                params=params_from_datasets(datasets),
            )
        )
    return out


@pytest.fixture
def catalog(tmp_path: Path, studies: list[PhantomStudy]) -> Catalog:
    csv_path = write_clinical_csv(studies, tmp_path / "clinical.csv")
    cat = Catalog.open(tmp_path / "out")
    ingest_clinical(cat, csv_path, site="autoPET", licence="CC BY-NC 4.0")
    for st in studies:
        cat.record_series(_series_infos(st))
    yield cat
    cat.close()


def _iso(dicom_date: str) -> str:
    return f"{dicom_date[:4]}-{dicom_date[4:6]}-{dicom_date[6:]}"


def test_read_clinical_csv_one_row_per_study(tmp_path: Path, studies) -> None:
    table = read_clinical_csv(write_clinical_csv(studies, tmp_path / "c.csv"))
    assert len(table) == len(studies)
    by_uid = table.set_index("study_uid")
    for st in studies:
        row = by_uid.loc[st.study_uid]
        assert row.subject_id == st.subject_id
        assert row.study_date == _iso(st.ct[0].StudyDate)
        assert (row.diagnosis, row.age, row.sex) == (
            st.truth.diagnosis,
            st.truth.age,
            st.truth.sex,
        )


def test_read_clinical_csv_is_lenient_about_column_names(tmp_path: Path, studies) -> None:
    src = write_clinical_csv(studies, tmp_path / "c.csv")
    rows = list(csv.reader(src.open()))
    rows[0] = [
        {"Subject ID": " SUBJECT  ID", "Study UID": "study_uid", "Study Date": "STUDY DATE"}.get(
            c, c.upper()
        )
        for c in rows[0]
    ]
    other = tmp_path / "other.csv"
    with other.open("w", newline="", encoding="utf-8-sig") as fh:
        csv.writer(fh).writerows(rows)
    pd.testing.assert_frame_equal(read_clinical_csv(other), read_clinical_csv(src))


def test_read_clinical_csv_errors(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("Subject ID,Study UID,Study Date\nPETCT_1,1.2,31/12/2020\n")
    with pytest.raises(PetcorpusError, match="study date"):
        read_clinical_csv(p)
    p.write_text("Patient,Date\nPETCT_1,1/2/2020\n")
    with pytest.raises(PetcorpusError, match="no subject_id or study_uid"):
        read_clinical_csv(p)
    p.write_text("Subject ID,Study UID,diagnosis\nA,1.2,LYMPHOMA\nA,1.2,NEGATIVE\n")
    with pytest.raises(PetcorpusError, match="several diagnoses"):
        read_clinical_csv(p)


def test_ct_details_hold_the_headers_values(catalog: Catalog, studies) -> None:
    df = ct_details(catalog).set_index("Patient")
    for st in studies:
        ds = st.ct[0]
        row = df.loc[st.subject_id]
        assert row["kVp"] == 120.0
        assert row["Tube current [mA]"] == float(ds.XRayTubeCurrent)
        assert row["Exposure [mAs]"] == float(ds.Exposure)
        assert row["Slice thickness [mm]"] == float(ds.SliceThickness)
        assert row["Kernel"] == ds.ConvolutionKernel
        assert row["Pixel spacing [mm]"] == f"{float(ds.PixelSpacing[0]):g} x " + (
            f"{float(ds.PixelSpacing[1]):g}"
        )
        assert row["Matrix"] == f"{ds.Rows} x {ds.Columns}"
        assert row["Contrast"] == str(ds.get("ContrastBolusAgent", ""))
        assert (row["Manufacturer"], row["Model"]) == (ds.Manufacturer, ds.ManufacturerModelName)
        assert (row["Age"], row["Sex"], row["Data-Source"]) == (
            st.truth.age,
            st.truth.sex,
            "autoPET",
        )


def test_pt_details_hold_the_phantom_truth(catalog: Catalog, studies) -> None:
    df = pt_details(catalog).set_index("Patient")
    expected_recon = {"siemens": (2, 21), "ge": (2, 24), "philips": (3, 17)}
    for st in studies:
        row = df.loc[st.subject_id]
        t = st.truth
        assert row["Weight [kg]"] == pytest.approx(t.weight_kg)
        assert row["Height [m]"] == pytest.approx(t.height_m)
        assert row["Injected activity [MBq]"] == pytest.approx(t.injected_dose_bq / 1e6)
        uptake = (t.scan_start - t.injection_time).total_seconds() / 60
        assert row["Uptake time [min]"] == pytest.approx(uptake, abs=1 / 60)
        assert (row["Iterations"], row["Subsets"]) == expected_recon[st.vendor]
        assert row["Units"] == ("CNTS" if st.vendor == "philips" else "BQML")
        assert row["Decay correction"] == "START"
        assert row["Filter"] == st.pet[0].ConvolutionKernel
        assert row["Matrix"] == f"{st.pet[0].Rows} x {st.pet[0].Columns}"


def test_exports_open_with_pandas_and_agree(catalog: Catalog, studies, tmp_path: Path) -> None:
    paths = export_tables(catalog, tmp_path / "tables")
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [
            "clinical.csv",
            "CT-details.xlsx",
            "PT-details.xlsx",
            "clinical.parquet",
            "CT-details.parquet",
            "PT-details.parquet",
        ]
    )
    assert not list((tmp_path / "tables").glob(".*"))  # no temp files left
    clinical = pd.read_csv(tmp_path / "tables" / "clinical.csv").set_index("Patient")
    for st in studies:
        row = clinical.loc[st.subject_id]
        assert (row["Diagnosis"], row["Age"], row["Sex"]) == (
            st.truth.diagnosis,
            st.truth.age,
            st.truth.sex,
        )
        assert row["Licence"] == "CC BY-NC 4.0"
    pt_x = pd.read_excel(tmp_path / "tables" / "PT-details.xlsx")
    pt_p = pd.read_parquet(tmp_path / "tables" / "PT-details.parquet")
    weights = dict(zip(pt_x["Patient"], pt_x["Weight [kg]"], strict=True))
    assert weights == {st.subject_id: pytest.approx(st.truth.weight_kg) for st in studies}
    assert pt_p["Weight [kg]"].tolist() == pt_x["Weight [kg]"].tolist()
    ct_x = pd.read_excel(tmp_path / "tables" / "CT-details.xlsx")
    assert ct_x["kVp"].tolist() == [120] * len(studies)
    pd.testing.assert_series_equal(
        pd.read_parquet(tmp_path / "tables" / "CT-details.parquet")["Tube current [mA]"],
        ct_x["Tube current [mA]"].astype(float),
    )


@pytest.mark.slow
def test_pt_details_from_the_scanner_agree_with_the_truth(tmp_path: Path, studies) -> None:
    from petcorpus.dicom.scan import scan
    from petcorpus.phantom import write_study

    for st in studies:
        write_study(st, tmp_path / "dicom")
    result = scan(tmp_path / "dicom", workers=1)
    with Catalog.open(tmp_path / "out") as cat:
        for info in result.studies:
            cat.record_study(info.study_uid, subject_id=info.patient_id)
            cat.record_series(info.series)
        df = pt_details(cat).set_index("Patient")
    for st in studies:
        row = df.loc[st.subject_id]
        uptake = (st.truth.scan_start - st.truth.injection_time).total_seconds() / 60
        assert row["Uptake time [min]"] == pytest.approx(uptake, abs=1 / 60)
        assert row["Weight [kg]"] == pytest.approx(st.truth.weight_kg)
        assert row["Injected activity [MBq]"] == pytest.approx(st.truth.injected_dose_bq / 1e6)


def test_cli_clinical_and_export(tmp_path: Path, studies) -> None:
    csv_path = write_clinical_csv(studies, tmp_path / "clinical.csv")
    runner = CliRunner()
    res = runner.invoke(app, ["clinical", str(tmp_path / "out"), str(csv_path), "--site", "X"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["export", str(tmp_path / "out"), "--format", "csv"])
    assert res.exit_code == 0, res.output
    got = pd.read_csv(tmp_path / "out" / "tables" / "clinical.csv")
    assert sorted(got["Patient"]) == sorted(st.subject_id for st in studies)
    assert set(got["Data-Source"]) == {"X"}
    res = runner.invoke(app, ["export", str(tmp_path / "out"), "--format", "pdf"])
    assert res.exit_code == 1
