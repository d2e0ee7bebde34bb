"""The transfer engine against a local HTTP server: resume, retries, checksums, ledger."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from petcorpus.download import FileSpec, Ledger, RetryPolicy, fetch_all, fetch_file
from petcorpus.download.ledger import LEDGER_NAME
from petcorpus.errors import ChecksumError, DownloadError, Reason
from tests._download_server import FakeServer

DATA = os.urandom(3 * (1 << 20) + 12345)  # > 3 chunks of the engine
SHA = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()


def fast(attempts: int = 4, timeout: float = 5.0) -> tuple[RetryPolicy, list[float]]:
    sleeps: list[float] = []
    return RetryPolicy(
        attempts=attempts, backoff=0.01, timeout=timeout, sleep=sleeps.append
    ), sleeps


@pytest.fixture
def server():
    with FakeServer() as srv:
        srv.files["/data.bin"] = DATA
        yield srv


def test_cut_transfer_resumes_from_the_byte_where_it_stopped(server, tmp_path) -> None:
    cut = 1_500_000
    server.script["/data.bin"] = [("cut", cut)]
    policy, sleeps = fast()
    spec = FileSpec(f"{server.url}/data.bin", "sub/data.bin", size=len(DATA), sha256=SHA)
    path = fetch_file(spec, tmp_path, policy=policy)
    assert path.read_bytes() == DATA
    gets = server.gets("/data.bin")
    assert [g[2] for g in gets] == [None, f"bytes={cut}-"]  # resumed exactly at the cut
    assert len(sleeps) == 1
    assert not (tmp_path / "sub" / "data.bin.part").exists()
    entry = Ledger(tmp_path).get("sub/data.bin")
    assert entry["sha256"] == SHA and entry["size"] == len(DATA)


def test_server_ignoring_range_restarts_the_file(server, tmp_path) -> None:
    server.script["/data.bin"] = [("cut", 1000), "norange"]
    policy, _ = fast()
    spec = FileSpec(f"{server.url}/data.bin", "data.bin", md5=MD5)
    assert fetch_file(spec, tmp_path, policy=policy).read_bytes() == DATA
    assert server.gets("/data.bin")[1][2] == "bytes=1000-"


def test_md5_from_the_server_is_checked(server, tmp_path) -> None:
    policy, _ = fast()
    spec = FileSpec(f"{server.url}/data.bin", "data.bin", md5=MD5)
    fetch_file(spec, tmp_path, policy=policy)
    assert Ledger(tmp_path).get("data.bin")["md5"] == MD5


def test_corrupted_transfer_is_detected_and_fetched_again(server, tmp_path) -> None:
    server.script["/data.bin"] = ["corrupt"]
    policy, _ = fast()
    spec = FileSpec(f"{server.url}/data.bin", "data.bin", sha256=SHA)
    assert fetch_file(spec, tmp_path, policy=policy).read_bytes() == DATA
    gets = server.gets("/data.bin")
    assert len(gets) == 2 and gets[1][2] is None  # discarded, fetched whole again


def test_always_corrupt_raises_checksum_error_and_leaves_no_final_file(server, tmp_path) -> None:
    server.script["/data.bin"] = ["corrupt"] * 3
    policy, _ = fast(attempts=3)
    spec = FileSpec(f"{server.url}/data.bin", "data.bin", sha256=SHA)
    with pytest.raises(ChecksumError) as info:
        fetch_file(spec, tmp_path, policy=policy)
    assert info.value.reason is Reason.CHECKSUM and "/data.bin" in str(info.value)
    assert not (tmp_path / "data.bin").exists()
    assert Ledger(tmp_path).get("data.bin") is None


def test_5xx_is_retried_a_bounded_number_of_times_then_reported(server, tmp_path) -> None:
    server.script["/data.bin"] = [("status", 503, None)] * 10
    policy, sleeps = fast(attempts=3)
    spec = FileSpec(f"{server.url}/data.bin", "data.bin")
    with pytest.raises(DownloadError) as info:
        fetch_file(spec, tmp_path, policy=policy)
    assert f"{server.url}/data.bin" in str(info.value) and "503" in str(info.value)
    assert len(server.gets("/data.bin")) == 3 and len(sleeps) == 2
    assert [0.01 <= s <= 0.011 for s in sleeps[:1]] == [True]
    assert sleeps[1] > sleeps[0]  # exponential
    assert not (tmp_path / "data.bin").exists()


def test_retry_after_is_honoured_and_capped(server, tmp_path) -> None:
    server.script["/data.bin"] = [("status", 429, 7), ("status", 503, 10_000)]
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=3, backoff=0.01, max_delay=60, sleep=sleeps.append)
    fetch_file(FileSpec(f"{server.url}/data.bin", "data.bin"), tmp_path, policy=policy)
    assert sleeps == [7.0, 60.0]


def test_timeouts_are_retried_then_reported_with_the_url(server, tmp_path) -> None:
    server.script["/data.bin"] = [("hang", 1.0)] * 2
    policy, sleeps = fast(attempts=2, timeout=0.2)
    spec = FileSpec(f"{server.url}/data.bin", "data.bin")
    with pytest.raises(DownloadError) as info:
        fetch_file(spec, tmp_path, policy=policy)
    assert "/data.bin" in str(info.value) and "2 attempts" in str(info.value)
    assert not (tmp_path / "data.bin").exists()
    assert len(sleeps) == 1


def test_404_is_not_retried(server, tmp_path) -> None:
    policy, sleeps = fast()
    with pytest.raises(DownloadError, match="404"):
        fetch_file(FileSpec(f"{server.url}/missing", "m.bin"), tmp_path, policy=policy)
    assert len(server.gets("/missing")) == 1 and sleeps == []


def test_interrupted_run_leaves_only_a_part_file_then_resumes(server, tmp_path) -> None:
    server.script["/data.bin"] = [("cut", 700_000)]
    policy, _ = fast(attempts=1)
    spec = FileSpec(f"{server.url}/data.bin", "data.bin", size=len(DATA))
    with pytest.raises(DownloadError):
        fetch_file(spec, tmp_path, policy=policy)
    assert not (tmp_path / "data.bin").exists()
    assert (tmp_path / "data.bin.part").stat().st_size == 700_000
    fetch_file(spec, tmp_path, policy=policy)  # a new run picks up the .part
    assert (tmp_path / "data.bin").read_bytes() == DATA
    assert server.gets("/data.bin")[-1][2] == "bytes=700000-"


def test_rerun_after_completion_transfers_nothing(server, tmp_path) -> None:
    server.files["/b.bin"] = b"hello" * 1000
    specs = [FileSpec(f"{server.url}/data.bin", "data.bin"), FileSpec(f"{server.url}/b.bin", "b")]
    policy, _ = fast()
    first = fetch_all(specs, tmp_path, workers=2, policy=policy)
    assert sorted(first.done) == ["b", "data.bin"] and first.ok
    assert first.bytes_transferred == len(DATA) + 5000
    n = len(server.log)
    second = fetch_all(specs, tmp_path, workers=2, policy=policy)
    assert second.done == [] and sorted(second.skipped) == ["b", "data.bin"]
    assert len(server.log) == n  # not even a HEAD
    lines = [json.loads(x) for x in (tmp_path / LEDGER_NAME).read_text().splitlines()]
    assert sorted(r["key"] for r in lines) == ["b", "data.bin"]  # one line per file


def test_verify_catches_on_disk_corruption_and_refetches(server, tmp_path) -> None:
    spec = FileSpec(f"{server.url}/data.bin", "data.bin")
    policy, _ = fast()
    fetch_all([spec], tmp_path, policy=policy)
    target = tmp_path / "data.bin"
    raw = bytearray(target.read_bytes())
    raw[100] ^= 0x01  # same size, different content
    target.write_bytes(bytes(raw))
    assert fetch_all([spec], tmp_path, policy=policy).skipped == ["data.bin"]  # size only
    report = fetch_all([spec], tmp_path, policy=policy, verify=True)
    assert report.done == ["data.bin"] and target.read_bytes() == DATA


def test_fetch_all_reports_failures_per_file_and_goes_on(server, tmp_path) -> None:
    server.script["/data.bin"] = [("status", 500, None)] * 5
    server.files["/ok.bin"] = b"fine"
    policy, _ = fast(attempts=2)
    specs = [
        FileSpec(f"{server.url}/data.bin", "data.bin"),
        FileSpec(f"{server.url}/ok.bin", "ok"),
    ]
    report = fetch_all(specs, tmp_path, workers=2, policy=policy, progress=True)
    assert report.done == ["ok"] and not report.ok
    assert "/data.bin" in str(report.failed["data.bin"])
    assert (tmp_path / "ok").read_bytes() == b"fine"


def test_relpath_must_stay_inside_dest() -> None:
    for bad in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(ValueError, match="inside DEST"):
            FileSpec("http://x/y", bad)


def test_complete_part_file_is_verified_without_a_body(server, tmp_path) -> None:
    (tmp_path / "data.bin.part").write_bytes(DATA)  # a run killed just before the rename
    policy, _ = fast()
    spec = FileSpec(f"{server.url}/data.bin", "data.bin", size=len(DATA), sha256=SHA)
    assert fetch_file(spec, tmp_path, policy=policy).read_bytes() == DATA
    assert server.gets("/data.bin") == [("GET", "/data.bin", f"bytes={len(DATA)}-")]  # 416


def test_ledger_survives_a_cut_last_line_and_compacts(tmp_path) -> None:
    ledger = Ledger(tmp_path)
    for i in range(150):
        ledger.record("a", size=i)
    ledger.record("b", size=1)
    ledger.forget("b")
    with (tmp_path / LEDGER_NAME).open("a") as fh:
        fh.write('{"key": "c", "entry": {"si')  # killed mid-write
    again = Ledger(tmp_path)
    assert again.keys() == ["a"] and again.get("a")["size"] == 149
    assert len((tmp_path / LEDGER_NAME).read_text().splitlines()) == 1  # compacted


def test_if_range_restarts_when_the_remote_file_changed(server, tmp_path) -> None:
    server.script["/data.bin"] = [("cut", 500_000)]
    policy, _ = fast(attempts=1)
    spec = FileSpec(f"{server.url}/data.bin", "data.bin")
    with pytest.raises(DownloadError):
        fetch_file(spec, tmp_path, policy=policy)
    assert (tmp_path / "data.bin.part.validator").read_text().startswith('"')
    server.files["/data.bin"] = new = os.urandom(600_000)  # the host replaced the file
    assert fetch_file(spec, tmp_path, policy=policy).read_bytes() == new  # no spliced halves
    assert server.gets("/data.bin")[-1][2] == "bytes=500000-"
    assert not (tmp_path / "data.bin.part.validator").exists()
