"""The download ledger: a torn line (a killed run) loses only itself."""

from __future__ import annotations

import logging

from petcorpus.download import Ledger
from petcorpus.download.ledger import LEDGER_NAME

TORN = '{"key": "c", "entry": {"si'  # a run killed mid-write


def test_a_record_appended_after_a_torn_line_is_kept(tmp_path) -> None:
    ledger = Ledger(tmp_path)
    ledger.record("a", size=1)
    with (tmp_path / LEDGER_NAME).open("a") as fh:  # another run, killed mid-write
        fh.write(TORN)
    ledger.record("b", size=2)  # starts on a fresh line
    lines = (tmp_path / LEDGER_NAME).read_text().splitlines()
    assert len(lines) == 3 and lines[1] == TORN
    again = Ledger(tmp_path)
    assert again.keys() == ["a", "b"] and again.get("b")["size"] == 2
    assert again.torn == 1


def test_a_torn_last_line_is_skipped_counted_logged_and_compacted(tmp_path, caplog) -> None:
    Ledger(tmp_path).record("a", size=1)
    with (tmp_path / LEDGER_NAME).open("a") as fh:
        fh.write(TORN)
    with caplog.at_level(logging.WARNING, logger="petcorpus.download.ledger"):
        ledger = Ledger(tmp_path)
    assert ledger.keys() == ["a"] and ledger.torn == 1
    assert "1 torn line" in caplog.text and LEDGER_NAME in caplog.text
    ledger.record("b", size=2)
    assert Ledger(tmp_path).keys() == ["a", "b"]
    assert Ledger(tmp_path).torn == 0  # the torn line was dropped when compacting


def test_a_record_glued_to_a_torn_line_by_an_older_version_is_recovered(tmp_path) -> None:
    Ledger(tmp_path).record("a", size=1)
    with (tmp_path / LEDGER_NAME).open("a") as fh:
        fh.write(TORN + '{"key": "b", "entry": {"size": 2}}\n')  # before the fix
    ledger = Ledger(tmp_path)
    assert ledger.keys() == ["a", "b"] and ledger.torn == 1


def test_compaction_writes_through_the_atomic_writer(tmp_path, monkeypatch) -> None:
    import petcorpus.atomic as atomic

    names = []
    real = atomic.temp_sibling
    monkeypatch.setattr(
        atomic, "temp_sibling", lambda p, *a: names.append(real(p, *a)) or names[-1]
    )
    ledger = Ledger(tmp_path)
    ledger.record("a.zip", size=1)
    ledger.record("a.zip", size=2)
    Ledger(tmp_path)._compact()
    assert names and all(n.name.startswith(f".tmp-{LEDGER_NAME}-") for n in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LEDGER_NAME]
    assert Ledger(tmp_path).get("a.zip")["size"] == 2
