"""The nnU-Net v2 raw format both ways: a challenge-format release imports into the autoPET
layout and the catalog; a corpus exports as an nnU-Net dataset that nnU-Net's own integrity
check accepts; predictions named by nnU-Net case ids are scored against the corpus."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from petcorpus.catalog import Catalog
from petcorpus.cli import app
from petcorpus.layouts import open_corpus
from petcorpus.layouts.autopet import AutopetCorpus
from petcorpus.layouts.nnunet import (
    CASE_MAP,
    NnunetDataset,
    channel_roles,
    image_file,
    label_file,
    parse_case_id,
)
from petcorpus.metrics.evaluate import evaluate_folders, lesion_tables
from petcorpus.nifti import write_nifti
from petcorpus.phantom.corpus import CLINICAL_CSV_NAME, write_corpus
from petcorpus.pipeline import build, export_nnunet, import_release
from petcorpus.splits import split_corpus

runner = CliRunner()

# TCIA clinical-CSV columns of fdg_metadata.csv, and psma_metadata.csv's own.
PSMA_COLUMNS = [
    "Subject ID",
    "Study Date",
    "age",
    "manufacturer_model_name",
    "pet_radionuclide",
    "ct_contrast_agent",
]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, list]:
    """Four small phantom studies (LYMPHOMA, MELANOMA, LUNG_CANCER, NEGATIVE) converted."""
    root = tmp_path_factory.mktemp("nnunet-src")
    studies = write_corpus(root / "dicom", subjects=4, seed=7, size="small")
    report = build(root / "dicom", root / "corpus", workers=1)
    assert report.ok
    return root / "corpus", studies


def _hex16(subject: str) -> str:
    return subject.removeprefix("PETCT_").ljust(16, "0")


def _date(study_folder: str) -> str:
    m, d, y = study_folder[:10].split("-")
    return f"{y}-{m}-{d}"


def write_release(
    corpus: Path,
    studies: list,
    root: Path,
    *,
    order: str = "ct-first",
    names: dict[str, str] | None = None,
    psma: tuple[int, ...] = (2, 3),
    truncate: int | None = 1,
) -> dict[str, str]:
    """A challenge-format release from a converted corpus: returns case id → corpus key.

    Studies in ``psma`` get PSMA ids (``psma_<hex16>_<date>``, radionuclides 68Ga then
    18F), the others FDG ids (``fdg_<hex>_<TCIA folder>``); study ``truncate`` gets an id
    cut short. ``order`` puts the CT (``ct-first``) or the PET first in the files."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    ct_ch, pet_ch = (0, 1) if order == "ct-first" else (1, 0)
    if names is None:
        names = {str(ct_ch): "CT", str(pet_ch): "PET"}
    ids: dict[str, str] = {}
    fdg_rows, psma_rows = [], []
    with open(corpus.parent / "dicom" / CLINICAL_CSV_NAME, newline="") as fh:
        clinical = list(csv.DictReader(fh))
    for i, st in enumerate(studies):
        subject, folder = st.subject_id, st.study_folder
        if i in psma:
            case_id = f"psma_{_hex16(subject)}_{_date(folder)}"
            psma_rows.append(
                [
                    f"PSMA_{_hex16(subject)}",
                    _date(folder),
                    "071Y",
                    "Biograph 64 TruePoint" if i % 2 else "Discovery 690",
                    "68Ga" if i == psma[0] else "18F",
                    "yes",
                ]
            )
        else:
            case_id = f"fdg_{subject.removeprefix('PETCT_')}_{folder}"
            fdg_rows += [r for r in clinical if r["Subject ID"] == subject]
            if i == truncate:
                case_id = case_id[:30]
        ids[case_id] = f"{subject}/{folder}"
        src = corpus / subject / folder
        os.link(src / "CTres.nii.gz", root / "imagesTr" / image_file(case_id, ct_ch))
        os.link(src / "SUV.nii.gz", root / "imagesTr" / image_file(case_id, pet_ch))
        os.link(src / "SEG.nii.gz", root / "labelsTr" / label_file(case_id))
    spec = {
        "channel_names": names,
        "labels": {"background": 0, "tumor": 1},
        "numTraining": len(ids),
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    case_ids = sorted(ids)
    splits = [
        {"train": case_ids[1:], "val": case_ids[:1]},
        {"train": case_ids[:1], "val": case_ids[1:]},
    ]
    (root / "splits_final.json").write_text(json.dumps(splits))
    with open(root / "fdg_metadata.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(clinical[0]))
        w.writeheader()
        w.writerows(fdg_rows)
    with open(root / "psma_metadata.csv", "w", newline="") as fh:
        w2 = csv.writer(fh)
        w2.writerow(PSMA_COLUMNS)
        w2.writerows(psma_rows)
    return ids


@pytest.fixture(scope="module")
def imported(source, tmp_path_factory):
    corpus, studies = source
    root = tmp_path_factory.mktemp("nnunet")
    ids = write_release(corpus, studies, root / "release")
    rep = import_release(root / "release", root / "out")
    return root / "release", root / "out", ids, rep, studies


def test_case_ids_say_tracer_subject_and_study():
    rid = parse_case_id("fdg_0011f3deaf_03-23-2003-NA-PET-CT Ganzkoerper  primaer mit KM-10445")
    assert (rid.tracer, rid.subject) == ("FDG", "PETCT_0011f3deaf")
    assert rid.study.endswith("KM-10445")
    assert parse_case_id("psma_0123456789abcdef_2019-04-01").study == "2019-04-01"


def test_release_imports_with_tracer_radionuclide_diagnosis_and_positivity(imported):
    release, out, ids, rep, studies = imported
    assert not rep.failed, rep.failed
    assert rep.tracers == {"FDG": 2, "PSMA": 2}
    truncated = next(k for k, v in ids.items() if k.startswith("fdg") and len(k) == 30)
    assert any("truncated case id matched by prefix" in n for n in rep.notes[truncated])
    with Catalog.open(out, readonly=True) as cat:
        rows = cat.query(
            """SELECT st.subject_id, st.source, st.diagnosis AS study_dx, su.diagnosis,
                      su.age, su.sex, su.site,
                      (SELECT value FROM params p WHERE p.series_uid = st.study_uid || ':PT'
                         AND p.name = 'Radiopharmaceutical') AS tracer,
                      (SELECT value FROM params p WHERE p.series_uid = st.study_uid || ':PT'
                         AND p.name = 'Radionuclide') AS nuclide,
                      (SELECT model FROM series se WHERE se.series_uid = st.study_uid || ':PT')
                         AS model, st.status
               FROM studies st JOIN subjects su USING (subject_id) ORDER BY st.source"""
        )
    by_subject = {r.subject_id: r for r in rows.itertuples()}
    for i, st in enumerate(studies):
        lesions = st.truth.diagnosis != "NEGATIVE"
        if i in (2, 3):
            r = by_subject[f"PSMA_{_hex16(st.subject_id)}"]
            assert (r.tracer, r.site) == ("PSMA", "LMU") and pd.isna(r.diagnosis)
            assert int(r.age) == 71
            assert r.nuclide == ("68Ga" if i == 2 else "18F")
            assert r.model in ("Biograph 64 TruePoint", "Discovery 690")
            assert r.study_dx == ("POSITIVE" if lesions else "NEGATIVE")
            assert r.source == f"PSMA_{_hex16(st.subject_id)}/{_date(st.study_folder)}"
        else:
            r = by_subject[st.subject_id]
            assert (r.tracer, r.nuclide, r.site) == ("FDG", "18F", "UKT")
            assert r.diagnosis == st.truth.diagnosis
            assert r.study_dx == (st.truth.diagnosis if lesions else "NEGATIVE")
            assert (int(r.age), r.sex) == (st.truth.age, st.truth.sex)
            # the full TCIA study folder, also for the truncated case id
            assert r.source == f"{st.subject_id}/{st.study_folder}"
        assert r.status == "done"
    # files are links to the release's, the sidecar says where they come from
    case = next(c for c in AutopetCorpus(out).cases() if c.subject.startswith("PSMA"))
    side = case.metadata
    assert side["tracer"] == "PSMA" and side["source"]["format"] == "nnunet"
    assert side["source"]["channels"] == {"CTres": 0, "SUV": 1}
    assert os.path.samefile(case.path("SUV"), release / side["source"]["files"]["SUV"])
    assert sorted(case.names()) == ["CTres", "SEG", "SUV"]


def test_the_release_reads_as_a_corpus(imported):
    release, _, ids, _, _ = imported
    ds = open_corpus(release)
    assert isinstance(ds, NnunetDataset)
    assert ds.keys() == sorted(ids)
    case = ds.case(sorted(ids)[0])
    assert case.names() == ("CTres", "SUV", "SEG")
    assert case.metadata["folds"] == [0]
    assert case.metadata["metadata_rows"]


@pytest.mark.parametrize(
    ("order", "names"),
    [
        ("pet-first", {"0": "PET", "1": "CT"}),  # the first edition's order
        ("ct-first", {"0": "CT", "1": "CT"}),  # the autoPET II baseline: values decide
    ],
)
def test_either_channel_order_imports_the_same_volumes(source, tmp_path, order, names):
    corpus, studies = source
    ids = write_release(corpus, studies, tmp_path / "rel", order=order, names=names)
    rep = import_release(tmp_path / "rel", tmp_path / "out")
    assert not rep.failed
    fdg = next(k for k in ids if k.startswith("fdg") and len(k) > 30)
    got = AutopetCorpus(tmp_path / "out").case(ids[fdg])
    want = AutopetCorpus(corpus).case(ids[fdg])
    for name in ("CTres", "SUV", "SEG"):
        assert np.array_equal(got.volume(name).array, want.volume(name).array), name


def test_a_wrong_channel_order_is_refused_in_one_line(source, tmp_path):
    corpus, studies = source
    write_release(corpus, studies, tmp_path / "rel", order="pet-first",
                  names={"0": "CT", "1": "PET"})  # fmt: skip
    res = runner.invoke(
        app, ["build", "--from", "nnunet", str(tmp_path / "rel"), str(tmp_path / "out")]
    )
    assert res.exit_code == 1
    line = " ".join(res.output.split())
    assert "channel order disagrees with dataset.json" in line and "looks like SUV" in line
    assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists() or not any(AutopetCorpus(tmp_path / "out").cases())


def test_two_ct_like_channels_cannot_be_told_apart():
    ct = np.full((4, 4, 4), -1000.0)
    with pytest.raises(Exception, match="cannot tell the CT channel from the PET channel"):
        channel_roles({"0": "CT", "1": "CT"}, {0: ct, 1: ct})


def test_lesions_and_evaluate_equal_the_source(imported, source, tmp_path):
    _, out, ids, _, _ = imported
    corpus, _ = source
    got_l, got_s = lesion_tables(out)
    want_l, want_s = lesion_tables(corpus)
    cols = ["lesion_count", "total_mtv_ml", "total_tlg", "dmax_mm"]
    key = lambda df: df.sort_values("total_mtv_ml")[cols].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(key(got_s), key(want_s))
    assert len(got_l) == len(want_l)
    # predictions as nnU-Net writes them: <release case id>.nii.gz; the same masks named
    # <subject>_<study> for the source corpus
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred_src").mkdir()
    for case_id, key_ in ids.items():
        seg = AutopetCorpus(corpus).case(key_).volume("SEG")
        arr = np.asarray(seg.array).copy()
        arr[:3, :3, :3] = 1  # a false positive in a corner
        write_nifti(seg.with_array(arr), tmp_path / "pred" / f"{case_id}.nii.gz")
        write_nifti(
            seg.with_array(arr), tmp_path / "pred_src" / f"{key_.replace('/', '_')}.nii.gz"
        )
    got = evaluate_folders(out, tmp_path / "pred").autopet
    want = evaluate_folders(corpus, tmp_path / "pred_src").autopet
    num = ["dice", "fp_volume_ml", "fn_volume_ml"]
    assert len(got) == len(ids)
    pd.testing.assert_frame_equal(
        got.sort_values("fp_volume_ml")[num].reset_index(drop=True),
        want.sort_values("fp_volume_ml")[num].reset_index(drop=True),
    )


def test_hdf5_mip_and_report_read_the_import(imported, tmp_path):
    from petcorpus.layouts.hdf5 import H5Corpus, H5Study, write_hdf5
    from petcorpus.viz import read_study_dir

    _, out, _, _, _ = imported
    cases = list(AutopetCorpus(out).cases())
    h5 = write_hdf5(tmp_path / "c.h5", (H5Study.from_case(c) for c in cases))
    with H5Corpus(h5) as hc:
        back = hc.case(cases[0].key)
        assert np.array_equal(back.volume("SUV").array, cases[0].volume("SUV").array)
    images = read_study_dir(cases[0].folder, with_ct=True)
    assert images.ct is not None and images.pet is None
    res = runner.invoke(app, ["mip", str(cases[0].folder), "-o", str(tmp_path / "m.png")])
    assert res.exit_code == 0, res.output


def _export(corpus: Path, raw: Path, *args: str):
    return runner.invoke(app, ["export-nnunet", str(corpus), str(raw), *args])


def test_export_passes_nnunet_integrity_and_rereads_equal(imported, tmp_path, monkeypatch):
    _, out, _, _, _ = imported
    split_corpus(out, folds=2, stratify=(), test_fraction=0.25)
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    res = _export(out, tmp_path / "raw", "--id", "221", "--name", "autoPET")
    assert res.exit_code == 0, res.output
    ds_dir = tmp_path / "raw" / "Dataset221_autoPET"
    spec = json.loads((ds_dir / "dataset.json").read_text())
    assert spec["channel_names"] == {"0": "CT", "1": "PET"}
    assert spec["labels"] == {"background": 0, "tumor": 1}
    mapping = json.loads((ds_dir / CASE_MAP).read_text())
    train = [k for k, v in mapping.items() if v["set"] == "train"]
    test = [k for k, v in mapping.items() if v["set"] == "test"]
    assert spec["numTraining"] == len(train) == 3 and len(test) == 1
    assert (ds_dir / "imagesTs" / image_file(test[0], 1)).is_file()
    splits = json.loads(
        (tmp_path / "pre" / "Dataset221_autoPET" / "splits_final.json").read_text()
    )
    assert len(splits) == 2
    for fold in splits:  # patient-level, every training case validated once
        assert sorted(fold["train"] + fold["val"]) == sorted(train)
        subj = lambda ids: {mapping[i]["key"].split("/")[0] for i in ids}  # noqa: E731
        assert not subj(fold["train"]) & subj(fold["val"])
    # re-read: geometry and labels equal the corpus, channels in the right order
    back = NnunetDataset(ds_dir)
    assert back.roles == {"CTres": 0, "SUV": 1}
    for case in back.cases():
        src = AutopetCorpus(out).case(mapping[case.key]["key"])
        for name in ("CTres", "SUV", "SEG"):
            a, b = case.volume(name), src.volume(name)
            assert a.same_grid(b) and np.array_equal(a.array, b.array), (case.key, name)
    # the same id again is refused: nnU-Net finds datasets by id
    again = _export(out, tmp_path / "raw", "--name", "other")
    assert again.exit_code == 1 and "exists already" in again.output
    try:
        from nnunetv2.experiment_planning.verify_dataset_integrity import (
            verify_dataset_integrity,
        )
    except ImportError as exc:
        pytest.skip(f"nnunetv2 is not installed ({exc}); the rest of the export was checked")
    verify_dataset_integrity(str(ds_dir), num_processes=1)


def test_export_without_split_and_the_way_back(source, tmp_path):
    corpus, _ = source
    done = export_nnunet(corpus, tmp_path / "raw", dataset_id=7, name="x",
                         pet_channel_name="noNorm", preprocessed=tmp_path / "pre")  # fmt: skip
    assert done.split_source == "none" and not done.splits
    assert any("no split" in n for n in done.notes)
    assert not (tmp_path / "pre").exists()
    spec = json.loads((done.folder / "dataset.json").read_text())
    assert spec["channel_names"]["1"] == "noNorm"
    # predictions of two cases, named by the export's case ids, scored against the corpus
    (tmp_path / "pred").mkdir()
    case_ids = sorted(json.loads((done.folder / CASE_MAP).read_text()))[:2]
    for cid in case_ids:
        os.link(done.folder / "labelsTr" / label_file(cid), tmp_path / "pred" / label_file(cid))
    strict = runner.invoke(app, ["evaluate", "--gt", str(corpus), "--pred", str(tmp_path / "pred"),
                                 "--out", str(tmp_path / "m.csv")])  # fmt: skip
    assert strict.exit_code == 1 and "have no prediction" in strict.output
    res = runner.invoke(app, ["evaluate", "--gt", str(corpus), "--pred", str(tmp_path / "pred"),
                              "--out", str(tmp_path / "m.csv"), "--only-predicted"])  # fmt: skip
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "m.csv")
    assert len(table) == 2
    assert set(table["case"]) == {json.loads((done.folder / CASE_MAP).read_text())[c]["key"]
                                  for c in case_ids}  # fmt: skip
    assert ((table["dice"] == 1.0) | table["dice"].isna()).all()
