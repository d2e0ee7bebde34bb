"""Studies are found and named by DICOM identity, whatever the shape of the tree.

The same three studies (two of them of one patient) are laid out as TCIA does and in five
other shapes seen at sites and in downloads; every shape builds to one output folder per
study with the same volumes as the TCIA tree, and a re-run skips them all.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.fileset import FileSet

from petcorpus.catalog import Catalog
from petcorpus.errors import PetcorpusError, Reason
from petcorpus.layouts.autopet import SIDECAR
from petcorpus.naming import Naming, OutputName, name_studies
from petcorpus.phantom import make_study, write_study
from petcorpus.pipeline import build


@pytest.fixture(scope="module")
def tcia_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Three small studies in the TCIA shape; returns (root, study UID → PatientID).

    The second and third studies belong to one patient (a follow-up scan).
    """
    root = tmp_path_factory.mktemp("tcia")
    first = make_study(seed=41, size="small", vendor="siemens", diagnosis="LYMPHOMA")
    second = make_study(seed=42, size="small", vendor="ge", diagnosis="MELANOMA")
    follow_up = make_study(seed=43, size="small", vendor="philips", diagnosis="NEGATIVE")
    write_study(first, root)
    write_study(second, root)
    staging = tmp_path_factory.mktemp("staging")
    write_study(follow_up, staging)
    for path in sorted(staging.rglob("*.dcm")):  # the follow-up becomes the second's patient
        ds = pydicom.dcmread(path)
        ds.PatientID = second.subject_id
        rel = path.relative_to(staging / follow_up.subject_id)
        target = root / second.subject_id / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target, enforce_file_format=True)
    patients = {
        first.study_uid: first.subject_id,
        second.study_uid: second.subject_id,
        follow_up.study_uid: second.subject_id,
    }
    return root, patients


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _site_level(src: Path, dst: Path) -> Path:
    """One more folder above the subjects: ``SITE_A/PETCT_x/<study>/<series>``."""
    shutil.copytree(src, dst / "SITE_A", copy_function=os.link)
    return dst


def _nested_download(src: Path, dst: Path) -> Path:
    """``petcorpus build data/ OUT`` over ``data/autopet/PETCT_x/...``."""
    shutil.copytree(src, dst / "data" / "autopet", copy_function=os.link)
    return dst / "data"


def _dicomdir(src: Path, dst: Path) -> Path:
    """A media export: DICOMDIR plus ``PT000000/ST000000/SE000000/IM000000`` names."""
    fileset = FileSet()
    for path in _files(src):
        fileset.add(pydicom.dcmread(path))
    fileset.write(dst / "DICOM")
    assert (dst / "DICOM" / "DICOMDIR").is_file()
    return dst


def _flat(src: Path, dst: Path) -> Path:
    """Every file of every study in one folder (a PACS dump)."""
    dst.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(_files(src)):
        os.link(path, dst / f"IMG{i:05d}")
    return dst


def _spread(src: Path, dst: Path) -> Path:
    """Each modality exported on its own: one study's series in sibling trees."""
    for path in _files(src):
        rel = path.relative_to(src)
        modality = str(pydicom.dcmread(path, stop_before_pixels=True).Modality)
        target = dst / f"export-{modality}" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    return dst


SHAPES: dict[str, Callable[[Path, Path], Path]] = {
    "site_level": _site_level,
    "nested_download": _nested_download,
    "dicomdir": _dicomdir,
    "flat": _flat,
    "spread": _spread,
}


def _volumes(out: Path) -> dict[str, dict[str, str]]:
    """Study UID → {artifact kind → sha256} of the NIfTI files, from the catalog."""
    with Catalog.open(out, readonly=True) as cat:
        rows = cat.query(
            "SELECT study_uid, kind, sha256 FROM artifacts "
            "WHERE study_uid IS NOT NULL AND kind != 'sidecar'"
        )
    found: dict[str, dict[str, str]] = {}
    for uid, kind, sha in rows.itertuples(index=False):
        found.setdefault(uid, {})[kind] = sha
    return found


def _study_folders(out: Path) -> dict[str, Path]:
    """Study UID → the folder whose sidecar names it (every sidecar under ``out``)."""
    folders: dict[str, Path] = {}
    for sidecar in out.rglob(SIDECAR):
        uid = json.loads(sidecar.read_text())["study_instance_uid"]
        assert uid not in folders, f"study {uid} written twice"
        folders[uid] = sidecar.parent
    return folders


@pytest.fixture(scope="module")
def reference(
    tcia_tree: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    root, _ = tcia_tree
    out = tmp_path_factory.mktemp("reference") / "out"
    report = build(root, out, workers=1)
    assert report.ok and len(report.done) == 3
    return out


@pytest.mark.slow
def test_tcia_tree_keeps_the_published_names(tcia_tree, reference):
    root, patients = tcia_tree
    folders = _study_folders(reference)
    assert set(folders) == set(patients)
    for uid, folder in folders.items():
        assert folder.parent.name == patients[uid]
        study_folders = {p.parents[1].name for p in root.glob(f"{patients[uid]}/*/*/*.dcm")}
        assert folder.name in study_folders
    # Two studies of one patient: one subject folder holding two study folders.
    assert len({f.parent for f in folders.values()}) == 2


@pytest.mark.slow
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_tree_shape_builds_each_study_once(shape, tcia_tree, reference, tmp_path):
    root, patients = tcia_tree
    dicom = SHAPES[shape](root, tmp_path / "in")
    out = tmp_path / "out"
    report = build(dicom, out, workers=1)
    assert report.ok, [o.failure for o in report.failed]
    assert len(report.done) == 3
    folders = _study_folders(out)
    assert set(folders) == set(patients)
    assert len(set(folders.values())) == 3
    for uid, folder in folders.items():
        assert folder.parent.name == patients[uid]  # subject from PatientID, not a folder
    assert _volumes(out) == _volumes(reference)
    with Catalog.open(out, readonly=True) as cat:
        subjects = set(cat.query("SELECT subject_id FROM subjects").subject_id)
    assert subjects == set(patients.values())
    again = build(dicom, out, workers=1)
    assert again.done == [] and sorted(again.skipped) == sorted(patients)


@pytest.mark.slow
def test_dicom_names_do_not_depend_on_folder_names(tcia_tree, tmp_path):
    """A folder named after the patient never reaches OUT."""
    root, _ = tcia_tree
    named = tmp_path / "in" / "DOE^JOHN 1960-01-01"
    shutil.copytree(root, named, copy_function=os.link)
    out = tmp_path / "out"
    assert build(tmp_path / "in", out, workers=1).ok
    assert not [p for p in out.rglob("*") if "DOE" in str(p.relative_to(out))]


@pytest.mark.slow
def test_names_from_folders_when_asked(tcia_tree, tmp_path):
    root, patients = tcia_tree
    dicom = _site_level(root, tmp_path / "in")
    out = tmp_path / "out"
    report = build(dicom, out, workers=1, naming="folders")
    assert report.ok
    assert set(_study_folders(out)) == set(patients)


@pytest.mark.slow
def test_names_from_folders_refuses_a_clash_before_writing(tcia_tree, tmp_path):
    root, _ = tcia_tree
    _flat(root, tmp_path / "in" / "a" / "b" / "c")  # every study in one folder
    out = tmp_path / "out"
    with pytest.raises(PetcorpusError) as caught:
        build(tmp_path / "in", out, workers=1, naming=Naming.FOLDERS)
    assert caught.value.reason == Reason.OUTPUT_COLLISION
    assert not out.exists()


def test_names_recorded_by_an_earlier_build_are_kept(tcia_tree, tmp_path):
    from petcorpus.dicom.scan import scan

    root, _ = tcia_tree
    studies = scan(root).studies
    uid = studies[0].study_uid
    names = name_studies(studies, recorded={uid: "sub-old/study-old"})
    assert names[uid] == OutputName("sub-old", "study-old")
    # A name an old catalog recorded for two studies is kept by neither.
    both = {s.study_uid: "SITE_A/PETCT_x" for s in studies[:2]}
    names = name_studies(studies, recorded=both)
    assert len({n.key() for n in names.values()}) == len(studies)
    assert all(str(n) != "SITE_A/PETCT_x" for n in names.values())


@pytest.mark.slow
def test_clashing_names_get_the_uid_hash(tcia_tree):
    from petcorpus.dicom.scan import scan

    root, _ = tcia_tree
    studies = scan(root).studies
    # Names that differ only in case clash on case-insensitive file systems.
    recorded = {studies[0].study_uid: "petct_x/s"}
    names = name_studies(studies[1:], recorded=recorded)
    names[studies[0].study_uid] = OutputName("petct_x", "s")
    assert len({n.key() for n in names.values()}) == len(studies)


@pytest.mark.slow
def test_a_folder_holding_another_study_is_not_overwritten(tcia_tree, reference, tmp_path):
    from petcorpus.convert import convert_to_layout
    from petcorpus.dicom.scan import scan

    root, _ = tcia_tree
    one, other = scan(root).studies[:2]
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    target = _study_folders(out)[other.study_uid].relative_to(out)
    before = {p: p.read_bytes() for p in (out / target).iterdir()}
    with pytest.raises(PetcorpusError) as caught:
        convert_to_layout(one, out, name=OutputName.parse(target.as_posix()))
    assert caught.value.reason == Reason.OUTPUT_COLLISION
    assert {p: p.read_bytes() for p in (out / target).iterdir()} == before
