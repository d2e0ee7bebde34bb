"""MONAI datalists and TorchIO subjects from a split corpus (petcorpus.datalists)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from petcorpus.cli import app
from petcorpus.datalists import monai_datalist, torchio_subjects, write_datalist
from petcorpus.layouts.autopet import AutopetStudy, write_autopet_study
from petcorpus.splits import SPLITS_NAME, make_split
from petcorpus.volume import Volume

runner = CliRunner()
# Subject → its studies; S03 was scanned twice.
STUDIES = {f"S{i:02d}": [f"study-{j}" for j in range(2 if i == 3 else 1)] for i in range(10)}


def _study(seed: int) -> AutopetStudy:
    rng = np.random.default_rng(seed)
    affine = np.diag([4.0, 4.0, 3.0, 1.0])
    pet = Volume(rng.random((6, 5, 4), dtype=np.float32), affine)
    seg = Volume((pet.array > 0.8).astype(np.uint8), affine)
    ct = Volume(rng.integers(-1000, 1000, (6, 5, 4), dtype=np.int16), affine)
    ctres = ct.with_array(ct.array.astype(np.float32))
    return AutopetStudy(ct, pet, pet, ctres, seg)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Ten subjects (one with two studies), 3 folds and a test fraction, as splits.json."""
    root = tmp_path_factory.mktemp("datalist") / "corpus"
    for i, (subject, studies) in enumerate(STUDIES.items()):
        for study in studies:
            write_autopet_study(root / subject / study, _study(i), workers=1)
    classes = {s: "AB"[i % 2] for i, s in enumerate(STUDIES)}
    split = make_split(classes, folds=3, seed=4, test_fraction=0.2)
    keys = {s: [f"{s}/{st}" for st in studies] for s, studies in STUDIES.items()}
    (root / SPLITS_NAME).write_text(json.dumps(split.as_json(keys)))
    return root


def _subject(path: str) -> str:
    return Path(path).parts[0]


def test_the_datalist_follows_the_split(corpus):
    data = monai_datalist(corpus)
    split = json.loads((corpus / SPLITS_NAME).read_text())
    fold_of = {s: k for k, fold in enumerate(split["folds"]) for s in fold}
    assert len(data["training"]) + len(data["testing"]) == 11  # every study once
    assert data["numTraining"] == len(data["training"])
    for item in data["training"]:
        assert set(item) == {"image", "image2", "label", "fold"}
        for key, name in (("image", "CTres"), ("image2", "SUV"), ("label", "SEG")):
            assert Path(item[key]).name == f"{name}.nii.gz"
            assert (corpus / item[key]).is_file()
            assert _subject(item[key]) == _subject(item["image"])  # one study per entry
        assert item["fold"] == fold_of[_subject(item["image"])]
    folds_of_subject: dict[str, set[int]] = {}
    for item in data["training"]:
        folds_of_subject.setdefault(_subject(item["image"]), set()).add(item["fold"])
    assert all(len(f) == 1 for f in folds_of_subject.values())  # no subject in two folds
    both = [i for i in data["training"] + data["testing"] if _subject(i["image"]) == "S03"]
    assert len(both) == 2  # a subject scanned twice: both studies, on one side of the split
    tested = {_subject(item["image"]) for item in data["testing"]}
    assert tested == set(split["test"]) and len(tested) == 2
    assert not tested & set(folds_of_subject)
    for item in data["testing"]:
        assert set(item) == {"image", "image2"} and (corpus / item["image2"]).is_file()


def test_monai_reads_the_datalist_and_the_input_yaml(corpus, tmp_path):
    monai_data = pytest.importorskip("monai.data", reason="MONAI is not installed")
    path, yaml_path = write_datalist(corpus, tmp_path / "lists" / "datalist.json", absolute=True)
    items = monai_data.load_decathlon_datalist(path, data_list_key="training")
    assert all(Path(i["image"]).is_file() and Path(i["label"]).is_file() for i in items)
    assert {i["fold"] for i in items} == {0, 1, 2}
    assert yaml_path == tmp_path / "lists" / "input.yaml"
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    config = yaml.safe_load(yaml_path.read_text())
    assert config["modality"] == "CT"
    assert config["extra_modalities"] == {"image2": "pet"}
    assert Path(config["datalist"]) == path.resolve()
    assert Path(config["dataroot"]) == corpus.resolve()


def test_the_cli_writes_both_files(corpus):
    result = runner.invoke(app, ["datalist", str(corpus)])
    assert result.exit_code == 0, result.output
    data = json.loads((corpus / "datalist.json").read_text())
    assert data == monai_datalist(corpus)
    assert (corpus / "input.yaml").is_file()


def test_a_corpus_without_a_split_is_one_line(tmp_path):
    write_autopet_study(tmp_path / "S1" / "st", _study(0), workers=1)
    result = runner.invoke(app, ["datalist", str(tmp_path)])
    assert result.exit_code == 1
    assert "petcorpus split" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "datalist.json").exists()


def test_a_study_outside_the_split_is_named(corpus, tmp_path):
    import shutil

    copy = tmp_path / "corpus"
    shutil.copytree(corpus, copy)
    write_autopet_study(copy / "S99" / "new", _study(9), workers=1)
    result = runner.invoke(app, ["datalist", str(copy)])
    assert result.exit_code == 1
    assert "S99/new" in result.output and "petcorpus split" in result.output


def test_torchio_subjects_of_a_fold(corpus):
    tio = pytest.importorskip("torchio", reason="TorchIO is not installed")
    split = json.loads((corpus / SPLITS_NAME).read_text())
    val = torchio_subjects(corpus, fold=1, split="val")
    train = torchio_subjects(corpus, fold=1, split="train")
    test = torchio_subjects(corpus, split="test", label=None)
    assert {s["subject"] for s in val.dry_iter()} == set(split["folds"][1])
    assert {s["subject"] for s in train.dry_iter()} == set(split["folds"][0] + split["folds"][2])
    assert {s["subject"] for s in test.dry_iter()} == set(split["test"])
    subject = val[0]
    assert isinstance(subject["ct"], tio.ScalarImage)
    assert isinstance(subject["suv"], tio.ScalarImage)
    assert isinstance(subject["label"], tio.LabelMap)
    assert subject["suv"].shape == (1, 6, 5, 4) and subject["fold"] == 1
    assert "label" not in test[0]


@pytest.mark.parametrize(
    ("module", "call", "hint"),
    [
        ("torch", "petcorpus.torch", "pip install 'petcorpus[torch]'"),
        ("torchio", "torchio_subjects", "pip install 'petcorpus[torchio]'"),
    ],
)
def test_a_missing_extra_says_how_to_install_it(corpus, monkeypatch, module, call, hint):
    import importlib
    import sys

    from petcorpus.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    monkeypatch.delitem(sys.modules, "petcorpus.torch", raising=False)
    def use() -> object:
        if call == "petcorpus.torch":
            return importlib.import_module(call)
        return torchio_subjects(corpus)

    with pytest.raises(MissingDependencyError, match=re.escape(hint)):
        use()
