"""`petcorpus build --from enhance`: ENHANCE.PET cases catalogued in place."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from petcorpus.catalog import Catalog
from petcorpus.cli import app
from petcorpus.layouts.enhance import licence_for_site
from petcorpus.phantom import write_enhance_corpus
from petcorpus.pipeline import import_enhance

runner = CliRunner()


@pytest.mark.parametrize(
    ("release", "zipped"),
    [
        ("v1", False),
        pytest.param("v2", False, marks=pytest.mark.slow),
        pytest.param("v2", True, marks=pytest.mark.slow),
    ],
)
def test_cases_sites_licences_and_xlsx_fields(tmp_path, release, zipped):
    cases = write_enhance_corpus(tmp_path / "enh", cases=3, release=release, zipped=zipped)
    report = import_enhance(tmp_path / "enh", tmp_path / "out")
    assert report.cases == 3
    assert report.incomplete == []
    with Catalog.open(tmp_path / "out", readonly=True) as cat:
        subjects = cat.query("SELECT * FROM subjects").set_index("subject_id")
        weights = cat.query("SELECT series_uid, value_num FROM params WHERE name = 'weight_kg'")
        status = cat.query("SELECT status FROM studies")
    assert set(status.status) == {"done"}
    for case in cases:
        row = subjects.loc[f"ENHANCE_{case.case_id}"]
        assert row.sex == case.study.truth.sex
        assert row.age == case.study.truth.age
        assert row.site == case.site
        assert row.licence == licence_for_site(case.site)
        w = weights[weights.series_uid == f"enhance:{case.case_id}:PT"].value_num.iloc[0]
        assert w == pytest.approx(case.study.truth.weight_kg)


@pytest.mark.slow
def test_filter_by_licence_and_missing_case_reported(tmp_path):
    write_enhance_corpus(tmp_path / "enh", cases=3, release="v2")
    (next((tmp_path / "enh").rglob("PT_*/0002.nii.gz"))).unlink()
    result = runner.invoke(
        app, ["build", "--from", "enhance", str(tmp_path / "enh"), str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    assert "1 incomplete" in result.output
    with Catalog.open(tmp_path / "out", readonly=True) as cat:
        by = cat.query("SELECT licence, count(*) AS n FROM subjects GROUP BY licence")
        failures = cat.query("SELECT study_uid, stage, message FROM failures")
    assert by.n.sum() == 3
    assert set(by.licence) <= {"CC BY 4.0", "CC BY-NC 4.0"}
    assert list(failures.study_uid) == ["enhance:0002"]
    assert "PT" in failures.message[0] or "pt" in failures.message[0].lower()
