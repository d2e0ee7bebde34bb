"""Patient-level, stratified, reproducible splits (``petcorpus split``)."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from petcorpus.catalog import SCHEMA_VERSION, Catalog
from petcorpus.cli import app
from petcorpus.splits import SPLITS_NAME, make_split, split_corpus

runner = CliRunner()


def _check(split, classes):
    seen = [s for fold in split.folds for s in fold] + list(split.test)
    assert sorted(seen) == sorted(classes)  # every subject exactly once
    for cls in set(classes.values()):
        counts = [sum(classes[s] == cls for s in fold) for fold in split.folds]
        assert max(counts) - min(counts) <= 1, (cls, counts)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 23), min_size=1, max_size=5),
    folds=st.integers(2, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_class_is_spread_within_one_per_fold(sizes, folds, seed):
    classes = {f"s{c}-{i}": f"c{c}" for c, n in enumerate(sizes) for i in range(n)}
    if len(classes) < folds:
        return
    split = make_split(classes, folds=folds, seed=seed)
    _check(split, classes)
    sizes_per_fold = [len(f) for f in split.folds]
    assert max(sizes_per_fold) - min(sizes_per_fold) <= len(set(classes.values()))


def test_same_seed_same_split_other_seed_other_split():
    classes = {f"s{i:03d}": ("A", "B", "C")[i % 3] for i in range(60)}
    one = make_split(classes, folds=5, seed=7)
    assert make_split(classes, folds=5, seed=7) == one
    assert make_split(classes, folds=5, seed=8).folds != one.folds


def test_test_fraction_is_stratified_and_held_out():
    classes = {f"s{i:03d}": ("A", "B")[i % 2] for i in range(40)}
    split = make_split(classes, folds=4, seed=1, test_fraction=0.25)
    assert Counter(classes[s] for s in split.test) == {"A": 5, "B": 5}
    _check(split, classes)
    assert not set(split.test) & {s for f in split.folds for s in f}


def _catalog_with_repeat_patients(out: Path) -> dict[str, str]:
    """12 subjects, every third scanned twice; diagnoses in turn; returns subject → class."""
    diagnoses = ("LYMPHOMA", "MELANOMA", "LUNG_CANCER", "NEGATIVE")
    classes = {}
    with Catalog.open(out) as cat:
        for i in range(12):
            subject = f"PETCT_{i:02d}"
            cat.record_subject(subject, diagnosis=diagnoses[i % 4])
            classes[subject] = diagnoses[i % 4]
            for k in range(2 if i % 3 == 0 else 1):
                cat.record_study(f"1.2.{i}.{k}", subject_id=subject, source=f"{subject}/st{k}")
    return classes


def test_split_corpus_keeps_a_patients_studies_together(tmp_path):
    out = tmp_path / "corpus"
    classes = _catalog_with_repeat_patients(out)
    split, path = split_corpus(out, folds=3, stratify=["diagnosis"], seed=0)
    _check(split, classes)
    written = json.loads(path.read_text())
    assert written["folds"] == [list(f) for f in split.folds]
    assert written["studies"]["PETCT_00"] == ["PETCT_00/st0", "PETCT_00/st1"]
    with Catalog.open(out, readonly=True) as cat:
        rows = cat.splits()
    assert len(rows) == 16  # one row per study
    per_subject = rows.groupby("subject_id")["fold"].nunique()
    assert (per_subject == 1).all()  # no subject in two folds


def test_cli_split_writes_splits_json(tmp_path):
    out = tmp_path / "corpus"
    _catalog_with_repeat_patients(out)
    args = ["split", str(out), "--folds", "4", "--seed", "3", "--test-fraction", "0.25"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    written = json.loads((out / SPLITS_NAME).read_text())
    assert written["n_folds"] == 4 and len(written["test"]) == 4
    bad = runner.invoke(app, ["split", str(out), "--stratify", "colour"])
    assert bad.exit_code == 2 and "colour" in bad.output


def test_a_schema_1_catalog_is_migrated_and_reads_before(tmp_path):
    out = tmp_path / "corpus"
    _catalog_with_repeat_patients(out)
    db = out / "catalog.sqlite"
    with sqlite3.connect(db) as conn:  # what petcorpus 0.1 wrote: no table added since
        v1 = {"meta", "subjects", "studies", "series", "params", "artifacts", "runs", "failures"}
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in sorted(set(tables) - v1 - {"sqlite_sequence"}):
            conn.execute(f'DROP TABLE "{table}"')
        conn.execute("ALTER TABLE artifacts DROP COLUMN mtime_ns")  # added in schema 5
        conn.execute("PRAGMA user_version = 1")
    with Catalog.open(out, readonly=True) as cat:
        assert cat.schema_version == 1 and cat.splits().empty
    with Catalog.open(out) as cat:
        assert cat.schema_version == SCHEMA_VERSION
    split, _ = split_corpus(out, folds=2)
    assert split.n_folds == 2


def test_too_few_subjects_is_a_clear_error(tmp_path):
    from petcorpus.errors import PetcorpusError

    with pytest.raises(PetcorpusError, match="cannot fill 5 folds"):
        make_split({"a": "x", "b": "x"}, folds=5)
