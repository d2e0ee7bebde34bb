"""``petcorpus export-bids``: BIDS-PET from a phantom corpus of three vendors."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip(
    "bidsschematools", reason="the BIDS export needs pip install 'petcorpus[bids]'"
)

from petcorpus.bids.schema import FileContext, bids_version, load_schema, sidecar_fields
from petcorpus.bids.sidecars import NOT_KNOWN
from petcorpus.cli import app
from petcorpus.errors import MissingDependencyError
from petcorpus.layouts.autopet import AutopetCorpus
from petcorpus.phantom import write_corpus

runner = CliRunner()
#: Where .ci/run installs the legacy BIDS validator (npm ``bids-validator`` 1.x runs on node;
#: 2.x needs deno).
VALIDATOR_PREFIX = Path.home() / ".cache" / "petcorpus" / "bids-validator"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("bids")
    studies = write_corpus(root / "dicom", subjects=3, seed=5, vendor="mixed")
    result = runner.invoke(
        app, ["build", str(root / "dicom"), str(root / "corpus"), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export-bids", str(root / "corpus"), str(root / "bids")])
    assert result.exit_code == 0, result.output
    return root, studies, result.output


def _tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _sessions(root: Path) -> list[dict[str, str]]:
    """labels.tsv rows: BIDS labels and the corpus subject/study."""
    return _tsv(root / "bids" / "derivatives" / "petcorpus" / "labels.tsv")


def _pet_json(root: Path, row: dict[str, str]) -> tuple[Path, dict]:
    folder = root / "bids" / row["participant_id"] / row["session_id"] / "pet"
    (pet,) = folder.glob("*_pet.nii.gz")
    return pet, json.loads(pet.with_name(pet.name.replace(".nii.gz", ".json")).read_text())


def test_tree_labels_and_tables(exported):
    root, studies, output = exported
    bids = root / "bids"
    rows = _sessions(root)
    assert len(rows) == 3 and "3 sessions of 3 subjects" in output
    for row in rows:
        assert row["participant_id"] == "sub-" + row["corpus_subject"].replace("_", "")
        assert row["session_id"] == "ses-01"
        stem = f"{row['participant_id']}_{row['session_id']}"
        ses = bids / row["participant_id"] / row["session_id"]
        assert (ses / "pet" / f"{stem}_trc-FDG_pet.nii.gz").is_file()
        assert (ses / "ct" / f"{stem}_ct.nii.gz").is_file()
        der = bids / "derivatives" / "petcorpus" / row["participant_id"] / row["session_id"]
        assert (der / "pet" / f"{stem}_trc-FDG_desc-suvbw_pet.nii.gz").is_file()
        assert (der / "pet" / f"{stem}_trc-FDG_label-lesion_mask.nii.gz").is_file()
        assert (der / "ct" / f"{stem}_desc-petgrid_ct.nii.gz").is_file()
    desc = json.loads((bids / "dataset_description.json").read_text())
    assert desc["BIDSVersion"] == bids_version() == str(load_schema().bids_version)
    assert desc["DatasetType"] == "raw"
    der_desc = json.loads((bids / "derivatives/petcorpus/dataset_description.json").read_text())
    assert der_desc["DatasetType"] == "derivative" and der_desc["GeneratedBy"][0]["Name"]
    # The CT is not a BIDS datatype yet: ignored by name, and only it.
    assert (bids / ".bidsignore").read_text() == "ct/\n"
    by_subject = {s.subject_id: s for s in studies}
    participants = {r["participant_id"]: r for r in _tsv(bids / "participants.tsv")}
    for row in rows:
        truth = by_subject[row["corpus_subject"]].truth
        sessions = _tsv(bids / row["participant_id"] / f"{row['participant_id']}_sessions.tsv")
        assert float(sessions[0]["weight"]) == pytest.approx(truth.weight_kg)
        assert participants[row["participant_id"]]["sex"] in ("M", "F")
        assert float(participants[row["participant_id"]]["age"]) > 0
    # Body weight lives in the sessions table, not in the PET sidecar.
    for r in rows:
        assert not {"BodyWeight", "PatientWeight", "weight"} & set(_pet_json(root, r)[1])
    # Images are hard links into the corpus.
    assert all(p.stat().st_nlink >= 2 for p in bids.rglob("*.nii.gz"))


def test_pet_sidecar_has_every_field_the_schema_asks_for(exported):
    root, studies, _ = exported
    by_subject = {s.subject_id: s for s in studies}
    for row in _sessions(root):
        _, side = _pet_json(root, row)
        ctx = FileContext(
            datatype="pet",
            suffix="pet",
            extension=".nii.gz",
            entities={"subject": "x", "session": "01", "tracer": "FDG"},
            sidecar=side,
            dataset_modalities=["pet"],
        )
        fields = sidecar_fields(ctx)
        assert {"TimeZero", "InjectedRadioactivity", "FrameDuration"} <= set(fields)
        for field, level in fields.items():
            if level == "required":
                assert field in side, field
            else:  # recommended: written, or left out for a documented reason
                assert field in side or field in NOT_KNOWN, field
        truth = by_subject[row["corpus_subject"]].truth
        assert side["Units"] == "Bq/mL"
        assert side["InjectedRadioactivityUnits"] == "MBq"
        assert side["InjectedRadioactivity"] == pytest.approx(truth.injected_dose_bq / 1e6)
        assert side["TracerRadionuclide"] == "F18" and side["TracerName"] == "FDG"
        assert side["ScanStart"] == 0 and side["FrameTimesStart"] == [0]
        uptake = (truth.scan_start - truth.injection_time).total_seconds()
        assert side["InjectionStart"] == pytest.approx(-uptake)
        assert side["TimeZero"] == truth.scan_start.strftime("%H:%M:%S")
        assert side["ImageDecayCorrected"] is True and side["ImageDecayCorrectionTime"] == 0
        assert side["FrameDuration"][0] > 0


def test_suv_recomputed_from_bids_files_alone(exported):
    root, _, _ = exported
    bids = root / "bids"
    for row in _sessions(root):
        pet_path, _ = _pet_json(root, row)
        sub, ses = row["participant_id"], row["session_id"]
        (suv_path,) = (bids / "derivatives/petcorpus" / sub / ses / "pet").glob(
            "*_desc-suv*_pet.nii.gz"
        )
        suv_side = json.loads(
            suv_path.with_name(suv_path.name.replace(".nii.gz", ".json")).read_text()
        )
        weight_kg = float(
            next(
                r["weight"]
                for r in _tsv(bids / sub / f"{sub}_sessions.tsv")
                if r["session_id"] == ses
            )
        )
        dose_bq = suv_side["InjectedRadioactivity"] * 1e6
        assert suv_side["InjectedRadioactivityUnits"] == "MBq"
        decayed = dose_bq * 2.0 ** (-suv_side["DecayTime"] / suv_side["RadionuclideHalfLife"])
        factor = weight_kg * 1000.0 / decayed
        pet = np.asarray(nib.load(pet_path).dataobj, dtype=np.float64)
        recomputed = pet * factor
        corpus_suv = (
            AutopetCorpus(root / "corpus")
            .case(f"{row['corpus_subject']}/{row['corpus_study']}")
            .volume("SUV")
            .array
        )
        np.testing.assert_allclose(recomputed, corpus_suv, rtol=1e-6, atol=1e-6 * corpus_suv.max())
        assert suv_side["SUVFactor"] == pytest.approx(factor, rel=1e-9)


def test_rerun_is_idempotent(exported):
    root, _, _ = exported
    bids = root / "bids"

    def state() -> dict[str, tuple[bytes | int, int]]:
        return {
            p.relative_to(bids).as_posix(): (
                p.stat().st_ino if p.name.endswith(".nii.gz") else p.read_bytes(),
                p.stat().st_mtime_ns,
            )
            for p in sorted(bids.rglob("*"))
            if p.is_file()
        }

    before = state()
    result = runner.invoke(app, ["export-bids", str(root / "corpus"), str(bids)])
    assert result.exit_code == 0, result.output
    assert state() == before


def test_copy_and_a_study_without_suv_inputs(exported, tmp_path):
    root, _, _ = exported
    corpus = tmp_path / "corpus"
    shutil.copytree(root / "corpus", corpus)
    cases = list(AutopetCorpus(corpus).cases())
    broken = cases[0]
    meta = dict(broken.metadata)
    del meta["suv"]["inputs"]["weight_kg"]
    broken.sidecar_path.write_text(json.dumps(meta))
    result = runner.invoke(app, ["export-bids", str(corpus), str(tmp_path / "bids"), "--copy"])
    assert result.exit_code == 1, result.output
    assert "2 sessions" in result.output
    assert broken.key in result.output and "weight_kg" in result.output
    images = list((tmp_path / "bids").rglob("*.nii.gz"))
    assert images and all(p.stat().st_nlink == 1 for p in images)


def test_missing_bidsschematools_names_the_extra(monkeypatch):
    load_schema.cache_clear()
    monkeypatch.setitem(sys.modules, "bidsschematools.schema", None)
    try:
        with pytest.raises(MissingDependencyError, match=r"petcorpus\[bids\]"):
            load_schema()
    finally:
        load_schema.cache_clear()


def _validator() -> list[str] | None:
    """The command of the BIDS validator (npm ``bids-validator``), if installed."""
    if shutil.which("node") is None:
        return None
    env = os.environ.get("BIDS_VALIDATOR")
    if env:
        return [env]
    for cand in (
        shutil.which("bids-validator"),
        VALIDATOR_PREFIX / "node_modules" / ".bin" / "bids-validator",
    ):
        if cand and Path(cand).is_file():
            return [str(cand)]
    return None


def test_official_bids_validator_finds_no_error(exported):
    cmd = _validator()
    if cmd is None:
        pytest.skip(
            "the BIDS validator is not installed (.ci/run installs it: npm install --prefix "
            f"{VALIDATOR_PREFIX} bids-validator@1.15.0; or set $BIDS_VALIDATOR)"
        )
    root, _, _ = exported
    proc = subprocess.run(
        [*cmd, str(root / "bids"), "--json"], capture_output=True, text=True, timeout=300
    )
    report = json.loads(proc.stdout)
    errors = report["issues"]["errors"]
    assert errors == [], json.dumps(errors, indent=1)[:3000]
    assert "PET" in report["summary"]["modalities"]
    assert report["summary"]["subjects"] and len(report["summary"]["subjects"]) == 3
