"""ENHANCE.PET: file table, selection, download under real names, unpack and counts."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from petcorpus.download import (
    ENHANCE_GROUPS,
    RetryPolicy,
    builtin_table,
    check_counts,
    download_enhance,
    enhance_specs,
    load_table,
)
from petcorpus.errors import DownloadError, PetcorpusError, Reason
from tests._download_server import FakeServer

POLICY = RetryPolicy(attempts=3, backoff=0.001, timeout=10, sleep=lambda s: None)
CASES = ["0001", "0002", "0003"]


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _release(drop: tuple[str, str] | None = None) -> dict[str, bytes]:
    """A miniature v2 release: 3 metadata files, 7 label zips, 3 image zips."""
    files = {
        "CT-details.xlsx": b"xlsx-ct",
        "PT-details.xlsx": b"xlsx-pt",
        "labels.json": json.dumps({"Organs": {"1": "liver"}}).encode(),
    }
    for i, group in enumerate(ENHANCE_GROUPS):
        # three member layouts seen in the wild: <G>/id, imaging-data/ground-truth/<G>/id, id
        prefix = [f"{group}/", f"imaging-data/ground-truth/{group}/", ""][i % 3]
        ids = [c for c in CASES if (group, c) != drop]
        files[f"{group}.zip"] = _zip({f"{prefix}{c}.nii.gz": f"{group}{c}".encode() for c in ids})
    files["images-1.zip"] = _zip({f"CT_1/{c}.nii.gz": b"ct" + c.encode() for c in CASES[:2]})
    files["images-2.zip"] = _zip({f"imaging-data/images/CT_2/{CASES[2]}.nii.gz": b"ct3"})
    files["images-3.zip"] = _zip({f"PT_1/{c}.nii.gz": b"pt" + c.encode() for c in CASES})
    return files


def _table(base: str, files: dict[str, bytes]) -> dict:
    tbl = builtin_table("v2")
    tbl["base_url"] = f"{base}/enhance"
    for f in tbl["files"]:
        data = files[f["name"]]
        f["size"], f["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    return tbl


@pytest.fixture
def release():
    files = _release()
    with FakeServer() as server:
        for name, data in files.items():
            server.files[f"/enhance/{name}"] = data
        yield server, files


def test_builtin_v2_table_has_the_13_files_of_the_release() -> None:
    tbl = builtin_table("v2")
    kinds = [f["kind"] for f in tbl["files"]]
    assert len(kinds) == 13
    assert (kinds.count("metadata"), kinds.count("labels"), kinds.count("images")) == (3, 7, 3)
    names = {f["name"] for f in tbl["files"]}
    assert {"CT-details.xlsx", "PT-details.xlsx", "labels.json"} <= names
    assert {f"{g}.zip" for g in ENHANCE_GROUPS} <= names


def test_v2_without_a_host_says_how_to_give_one() -> None:
    with pytest.raises(DownloadError, match="--base-url"):
        enhance_specs(load_table(release="v2"))


def test_base_url_from_flag_or_environment(monkeypatch) -> None:
    specs = enhance_specs(load_table(base_url="https://a.example/x/"), only=["Organs"])
    assert [s.url for s in specs] == ["https://a.example/x/Organs.zip"]
    monkeypatch.setenv("PETCORPUS_ENHANCE_URL", "https://b.example")
    assert enhance_specs(load_table(), only=["metadata"])[0].url == (
        "https://b.example/CT-details.xlsx"
    )


def test_only_selects_kinds_and_groups() -> None:
    tbl = load_table(base_url="http://h")
    names = lambda only: sorted(s.relpath for s in enhance_specs(tbl, only=only))  # noqa: E731
    assert names(["metadata"]) == ["CT-details.xlsx", "PT-details.xlsx", "labels.json"]
    assert names(["labels"]) == sorted(f"{g}.zip" for g in ENHANCE_GROUPS)
    assert names(["organs", "Ribs"]) == ["Organs.zip", "Ribs.zip"]
    assert len(names(["images"])) == 3
    with pytest.raises(ValueError, match="--only"):
        names(["lungs"])


def test_v1_per_case_layout_lists_every_case_file() -> None:
    specs = enhance_specs(load_table(release="v1"), cases=2)
    assert len(specs) == 3 + 2 * 2 + 7 * 2
    urls = {s.url for s in specs}
    assert (
        "https://enhance-pet-1-6k.s3.us-west-2.amazonaws.com/imaging-data/images/CT/0002.nii.gz"
        in urls
    )
    assert (
        "https://enhance-pet-1-6k.s3.us-west-2.amazonaws.com/imaging-data/ground-truth/"
        "Peripheral-Bones/0001.nii.gz" in urls
    )
    full = enhance_specs(load_table(release="v1"))
    assert len(full) == 3 + 1597 * 9


def test_download_verify_unpack_and_count(release, tmp_path) -> None:
    server, files = release
    table = tmp_path / "table.json"
    table.write_text(json.dumps(_table(server.url, files)))
    dest = tmp_path / "enhance"
    report = download_enhance(dest, table=table, unpack=True, policy=POLICY, workers=3)
    assert report.ok, report.failed
    assert sorted(report.done) == sorted(files)  # the real names
    for name, data in files.items():
        assert (dest / name).read_bytes() == data
    gt = dest / "imaging-data" / "ground-truth"
    for g in ENHANCE_GROUPS:
        assert sorted(p.name for p in (gt / g).iterdir()) == [f"{c}.nii.gz" for c in CASES]
        assert (gt / g / "0002.nii.gz").read_bytes() == f"{g}0002".encode()
    images = dest / "imaging-data" / "images"
    assert sorted(p.name for p in images.iterdir()) == ["CT_1", "CT_2", "PT_1"]
    counts = check_counts(dest)
    assert counts.ok and counts.cases == 3
    assert counts.groups == dict.fromkeys(ENHANCE_GROUPS, 3)
    n = len(server.log)
    again = download_enhance(dest, table=table, unpack=True, policy=POLICY)
    assert again.done == [] and len(again.skipped) == 13 and len(server.log) == n


def test_missing_mask_is_reported(tmp_path) -> None:
    files = _release(drop=("Ribs", "0002"))
    with FakeServer() as server:
        for name, data in files.items():
            server.files[f"/enhance/{name}"] = data
        report = download_enhance(
            tmp_path, base_url=f"{server.url}/enhance", unpack=True, keep_zips=False, policy=POLICY
        )
    assert report.ok
    assert not list(tmp_path.glob("*.zip"))  # deleted after unpacking
    n = len(server.log)
    again = download_enhance(tmp_path, base_url=f"{server.url}/enhance", policy=POLICY)
    assert again.done == [] and len(again.skipped) == 13 and len(server.log) == n
    counts = check_counts(tmp_path)
    assert not counts.ok
    assert counts.missing["Ribs"] == ["0002"] and counts.groups["Ribs"] == 2
    assert counts.missing["Organs"] == []


def test_zips_fetched_earlier_are_unpacked_on_a_later_unpack_run(release, tmp_path) -> None:
    server, _ = release
    base = f"{server.url}/enhance"
    download_enhance(tmp_path, base_url=base, only=["Cardiac"], policy=POLICY)
    assert not (tmp_path / "imaging-data").exists()
    n = len(server.log)
    report = download_enhance(
        tmp_path, base_url=base, only=["Cardiac"], unpack=True, policy=POLICY
    )
    assert report.ok and len(server.log) == n
    assert len(list((tmp_path / "imaging-data/ground-truth/Cardiac").iterdir())) == 3


def test_wrong_checksum_in_table_fails_with_the_url(release, tmp_path) -> None:
    server, files = release
    tbl = _table(server.url, files)
    tbl["files"][0]["sha256"] = "0" * 64
    report = download_enhance(tmp_path, table=tbl, only=["metadata"], policy=POLICY)
    assert list(report.failed) == ["CT-details.xlsx"]
    assert f"{server.url}/enhance/CT-details.xlsx" in str(report.failed["CT-details.xlsx"])
    assert not Path(tmp_path / "CT-details.xlsx").exists()


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"name": "../x.zip"}, "is named '../x.zip'"),
        ({"name": "sub/x.zip"}, "is named 'sub/x.zip'"),
        ({"name": "..\\x.zip"}, "plain file name"),
        ({"name": "/etc/x.zip"}, "plain file name"),
        ({"name": "C:x.zip"}, "drive letter"),
        ({"name": ".."}, "plain file name"),
        ({"name": 3}, "is named 3"),
        ({"name": "x.zip", "group": "../../x"}, "group is named '../../x'"),
        ({"name": "x.zip", "url": "ftp://host/x.zip"}, "expected http://, https:// or file://"),
        ({"name": "x.zip", "url": "x.zip"}, "expected http://"),
        ({"name": "x.zip", "size": -1}, "has the size -1"),
        ({"name": "x.zip", "sha256": "abc"}, "has the sha256 'abc'"),
        ({"name": "CT-details.xlsx"}, "appears twice"),
    ],
    ids=[
        "dotdot",
        "subfolder",
        "backslash",
        "absolute",
        "drive",
        "bare-dotdot",
        "not-a-string",
        "group-dotdot",
        "ftp-url",
        "relative-url",
        "negative-size",
        "short-sha256",
        "duplicate",
    ],
)
def test_bad_table_entries_are_refused_when_the_table_is_loaded(tmp_path, entry, words) -> None:
    tbl = builtin_table("v2")
    tbl["files"].append(entry)
    path = tmp_path / "table.json"
    path.write_text(json.dumps(tbl))
    with pytest.raises(PetcorpusError) as info:
        load_table(path)
    assert info.value.reason is Reason.INVALID_VALUE
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "entry 14" in message and words in message
    with pytest.raises(PetcorpusError, match="entry 14"):  # a dict table, from Python
        download_enhance(tmp_path / "dest", table=tbl, base_url="https://host/x")
    assert not (tmp_path / "dest").exists()


def test_a_bad_base_url_is_refused(tmp_path) -> None:
    with pytest.raises(PetcorpusError, match=r"--base-url .* 'host/path'"):
        load_table(base_url="host/path")
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"base_url": "javascript:alert(1)", "files": []}))
    with pytest.raises(PetcorpusError, match="'base_url' has the URL"):
        load_table(path)
