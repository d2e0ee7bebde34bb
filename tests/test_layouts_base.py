"""One shape for every layout: open_corpus picks the layout, cases give key, metadata, volumes."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from petcorpus.errors import PetcorpusError, Reason
from petcorpus.layouts import LAYOUTS, Case, Corpus, open_corpus
from petcorpus.layouts.autopet import AutopetCorpus, AutopetStudy, write_autopet_study
from petcorpus.layouts.enhance import EnhanceCorpus
from petcorpus.layouts.flat import FlatCorpus, find_prediction, mask_cases, mask_name
from petcorpus.layouts.hdf5 import H5Corpus, H5Options, H5Study, write_hdf5
from petcorpus.phantom.enhance import write_enhance_corpus
from petcorpus.resample import resample_to
from tests.conftest import phantom


def _study() -> AutopetStudy:
    t = phantom(seed=11, size="small", vendor="siemens", diagnosis="LYMPHOMA").truth
    ctres = resample_to(t.ct_hu, t.pet_bqml, interpolation="linear", fill=-1024.0)
    return AutopetStudy(
        ct=t.ct_hu, pet=t.pet_bqml, suv=t.suv, ctres=ctres, seg=t.lesion_mask,
        sidecar={"suv": {"factor": t.suv_factors["bw"]}, "study_instance_uid": "1.2.3"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def autopet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("autopet")
    study = _study()
    write_autopet_study(root / "PETCT_b" / "s2", study, workers=1)
    write_autopet_study(root / "PETCT_a" / "s1", study, workers=1)
    (root / "PETCT_a" / ".tmp-s3-x").mkdir()  # an unfinished write: skipped
    (root / "PETCT_a" / ".tmp-s3-x" / "PET.nii.gz").write_bytes(b"")
    (root / "PETCT_c" / "only-sidecar").mkdir(parents=True)  # a case (the report lists it)
    (root / "PETCT_c" / "only-sidecar" / "petcorpus.json").write_text('{"a": 1}')
    (root / "PETCT_c" / "nothing").mkdir()  # not a case
    return root


def test_autopet_cases_keys_names_volumes_metadata(autopet_root):
    corpus = open_corpus(autopet_root)
    assert isinstance(corpus, AutopetCorpus) and isinstance(corpus, Corpus)
    assert corpus.keys() == ["PETCT_a/s1", "PETCT_b/s2", "PETCT_c/only-sidecar"]
    case = corpus.case("PETCT_a/s1")
    assert isinstance(case, Case)
    assert case.names() == ("CT", "PET", "SUV", "CTres", "SEG")
    assert case.has("SEG") and not case.has("PRED") and not case.has("nonsense")
    study = _study()
    np.testing.assert_array_equal(case.volume("SEG").array, study.seg.array)
    assert case.volume("SUV").same_grid(study.suv, atol=1e-4)
    assert case.metadata["study_instance_uid"] == "1.2.3"
    # the header's voxel volume, as the challenge scripts compute it
    pix = np.asarray(nib.load(case.path("SEG")).header["pixdim"], np.float32)
    assert case.voxel_ml("SEG") == float(pix[1] * pix[2] * pix[3] / np.float32(1000))
    assert case.voxel_ml("SEG") == pytest.approx(study.seg.voxel_volume_ml, rel=1e-6)
    other = corpus.case("PETCT_c/only-sidecar")
    assert other.names() == () and other.metadata == {"a": 1}
    with pytest.raises(PetcorpusError, match="has no SUV") as err:
        other.volume("SUV")
    assert err.value.reason == Reason.NO_SERIES
    with pytest.raises(PetcorpusError, match="no case PETCT_c/nothing"):
        corpus.case("PETCT_c/nothing")


def test_autopet_suv_falls_back_to_pet_times_factor(autopet_root, tmp_path):
    case = AutopetCorpus(autopet_root).case("PETCT_a/s1")
    suv, pet = case.suv()
    assert pet is None
    folder = tmp_path / "S" / "t"
    folder.mkdir(parents=True)
    for name in ("PET", "SEG"):
        (folder / f"{name}.nii.gz").write_bytes(case.path(name).read_bytes())
    (folder / "petcorpus.json").write_text(json.dumps(case.metadata))
    back, pet = AutopetCorpus(tmp_path).case("S/t").suv()
    assert pet is not None and back.dtype == np.float32
    np.testing.assert_allclose(back.array, suv.array, rtol=1e-6)


def test_bad_sidecar_and_bad_file_name_the_file(tmp_path):
    folder = tmp_path / "S" / "t"
    folder.mkdir(parents=True)
    (folder / "petcorpus.json").write_text("{not json")
    (folder / "SEG.nii.gz").write_bytes(b"\x1f\x8b truncated")
    case = open_corpus(tmp_path).case("S/t")
    with pytest.raises(PetcorpusError, match="invalid JSON") as err:
        _ = case.metadata
    assert err.value.reason == Reason.CORRUPT_FILE and "petcorpus.json" in str(err.value)
    with pytest.raises(PetcorpusError, match="cannot read NIfTI") as err:
        case.volume("SEG")
    assert "SEG.nii.gz" in str(err.value)


def test_hdf5_cases_use_the_same_names(autopet_root, tmp_path):
    src = AutopetCorpus(autopet_root)
    studies = [H5Study.from_case(c) for c in src.cases() if c.has("PET")]
    path = write_hdf5(tmp_path / "c.h5", studies, H5Options(compression="gzip"))
    with open_corpus(path) as corpus:
        assert isinstance(corpus, H5Corpus)
        assert corpus.keys() == ["PETCT_a/s1", "PETCT_b/s2"]
        case = corpus.case("PETCT_a/s1")
        assert case.names() == ("SUV", "CTres", "CT", "PET", "SEG")
        ref = src.case("PETCT_a/s1")
        for name in case.names():
            np.testing.assert_array_equal(case.volume(name).array, ref.volume(name).array)
        assert case.metadata["study_instance_uid"] == "1.2.3"
        assert case.metadata["suv"] == ref.metadata["suv"]
        assert case.source("SUV").endswith("c.h5:/PETCT_a/s1/suv")
        with pytest.raises(PetcorpusError, match="has no PRED"):
            case.volume("PRED")


def test_enhance_cases(tmp_path):
    written = write_enhance_corpus(tmp_path / "enh", cases=2, release="v2")
    corpus = open_corpus(tmp_path / "enh")
    assert isinstance(corpus, EnhanceCorpus)
    assert corpus.keys() == ["0001", "0002"]
    case = corpus.case(2)
    assert case.key == "0002" and case.names()[:2] == ("CT", "PET")
    assert set(case.names()[2:]) == set(written[1].masks)
    np.testing.assert_array_equal(case.volume("Organs").array, written[1].masks["Organs"])
    meta = case.metadata
    assert meta["pt_data_source"] == written[1].site
    assert meta["pt_age"] == written[1].study.truth.age
    assert any(k.startswith("ct_") for k in meta)


def test_flat_masks_and_mask_cases(tmp_path, autopet_root):
    seg = AutopetCorpus(autopet_root).case("PETCT_a/s1").path("SEG")
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("b.nii.gz", "a.nii", "a.nii.gz"):
        (flat / name).write_bytes(seg.read_bytes() if name.endswith(".gz") else b"")
    corpus = open_corpus(flat)
    assert isinstance(corpus, FlatCorpus)
    assert [c.source("SEG") for c in corpus.cases()] == [str(flat / "a.nii.gz"),
                                                        str(flat / "b.nii.gz")]  # fmt: skip
    cases = mask_cases(flat)
    assert list(cases) == ["a", "b"] and mask_name(cases["a"]) == "SEG"
    assert cases["a"].metadata == {}
    # autoPET folders of masks: SEG cases first, then PRED-only ones
    preds = tmp_path / "preds"
    for key, name in (("S/z", "SEG"), ("S/a", "PRED")):
        (preds / key).mkdir(parents=True)
        (preds / key / f"{name}.nii.gz").write_bytes(seg.read_bytes())
    cases = mask_cases(preds)
    assert list(cases) == ["S/z", "S/a"]
    assert [mask_name(c) for c in cases.values()] == ["SEG", "PRED"]
    found = find_prediction(preds, "S", "a")
    assert found is not None and found[0].key == "S/a" and found[1] == "PRED"
    found = find_prediction(flat, "x", "b")  # flat: <subject>_<study>, <study>, <subject>
    assert found is not None and found[0].source(found[1]) == str(flat / "b.nii.gz")
    assert find_prediction(flat, "x", "y") is None
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PetcorpusError, match="no masks found") as err:
        mask_cases(empty)
    assert err.value.reason == Reason.NO_SERIES


def test_open_corpus_refuses_what_it_cannot_read(tmp_path):
    assert list(LAYOUTS) == ["hdf5", "enhance", "nnunet", "autopet", "flat"]
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(PetcorpusError, match="not a corpus") as err:
        open_corpus(tmp_path)
    assert err.value.reason == Reason.NO_SERIES
    with pytest.raises(PetcorpusError, match="no such file"):
        open_corpus(tmp_path / "missing")
    with pytest.raises(PetcorpusError, match="unknown layout 'monai'"):
        open_corpus(tmp_path, layout="monai")
    with pytest.raises(PetcorpusError, match="not a folder"):
        open_corpus(tmp_path / "notes.txt", layout="autopet")
