"""petcorpus phi-check: finds identifiers in DICOM, NIfTI, JSON, HDF5, SQLite and names."""

from __future__ import annotations

import json
import sqlite3

import h5py
import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from petcorpus.cli import app
from petcorpus.deid.phi import Identifier, identifiers_from_source, phi_check
from petcorpus.phantom import make_study, write_study

NAME = "Quixwell^Marguerite"
PID = "MRN-83629170"
ACCESSION = "ACC99812377"
NOTE = "seen by Dr Hargreave"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("phi") / "src"
    study = make_study(21, size="small", vendor="ge")
    for series in study.series.values():
        for ds in series:
            ds.PatientName, ds.PatientID, ds.AccessionNumber = NAME, PID, ACCESSION
            ds.PatientBirthDate = "19610423"
            ds.ReferringPhysicianName = "Hargreave^Theodora"
            ds.private_block(0x0011, "ACME_NOTES", create=True).add_new(0x01, "LO", NOTE)
    write_study(study, root)
    return root


def test_finds_every_planted_identifier_in_the_untouched_tree(source):
    ids = identifiers_from_source(source)
    texts = {i.text for i in ids}
    assert {NAME, PID, ACCESSION, "19610423", "Quixwell", "Marguerite", "Hargreave"} <= texts
    hits, errors = phi_check(source, ids)
    assert not errors
    kinds = {h.kind for h in hits}
    assert {"PatientName", "PatientID", "AccessionNumber", "PatientBirthDate"} <= kinds
    # the private free text is found, by tag and in the bytes
    assert any(h.place.startswith("(0011,1001)") for h in hits)


def test_finds_identifiers_in_nifti_json_hdf5_sqlite_and_names(tmp_path):
    ids = [Identifier(NAME, "PatientName"), Identifier("Quixwell", "PatientName component")]
    ids.append(Identifier(PID, "PatientID"))
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    img.header["descrip"] = b"quixwell scan"
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, f"note {PID}".encode()))
    nib.save(img, tmp_path / "a.nii.gz")
    (tmp_path / "b.json").write_text(json.dumps({"meta": {"who": "MARGUERITE QUIXWELL"}}))
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_group("g").attrs["patient"] = PID
    con = sqlite3.connect(tmp_path / "catalog.sqlite")
    con.execute("CREATE TABLE subjects (id TEXT, name TEXT)")
    con.execute("INSERT INTO subjects VALUES ('s1', ?)", (NAME,))
    con.commit()
    con.close()
    (tmp_path / "Quixwell_M").mkdir()
    (tmp_path / "Quixwell_M" / "x.txt").write_text("nothing")
    (tmp_path / "d.txt").write_bytes("Quixwell".encode("utf-16-le"))
    hits, errors = phi_check(tmp_path, ids)
    assert not errors
    places = {(h.path, h.place) for h in hits}
    assert ("a.nii.gz", "header descrip") in places
    assert any(p == "a.nii.gz" and w.startswith("extension") for p, w in places)
    assert ("b.json", "/meta/who") in places
    assert ("c.h5", "attribute /g@patient") in places
    assert ("catalog.sqlite", "subjects.name row 1") in places
    assert ("Quixwell_M", "name") in places
    assert ("d.txt", "bytes") in places


def test_cli_exit_codes(source, tmp_path):
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "a.txt").write_text("nothing here")
    listed = tmp_path / "ids.txt"
    listed.write_text(f"# identifiers\n{NAME}\n{PID}\n")
    r = CliRunner().invoke(app, ["phi-check", str(clean), "--identifiers", str(listed)])
    assert r.exit_code == 0 and "no identifiers found" in r.output
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    img.header["descrip"] = PID.encode()
    nib.save(img, clean / "SUV.nii.gz")
    r = CliRunner().invoke(app, ["phi-check", str(clean), "--source", str(source)])
    assert r.exit_code == 1
    assert "SUV.nii.gz header descrip: PatientID" in " ".join(r.output.split())
    r = CliRunner().invoke(app, ["phi-check", str(clean)])
    assert r.exit_code == 2
