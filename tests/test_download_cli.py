"""``petcorpus download ...``: every command shown in docs/download.md, against local servers."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from petcorpus.cli import app
from tests._download_server import FakeServer
from tests.conftest import phantom
from tests.test_download_enhance import _release, _table
from tests.test_download_tcia import FakeNbia, _payload

runner = CliRunner()
FAST = ["--retries", "2", "--backoff", "0.01", "--timeout", "5", "--no-progress"]


@pytest.fixture
def enhance_server():
    files = _release()
    with FakeServer() as server:
        for name, data in files.items():
            server.files[f"/enhance/{name}"] = data
        yield server, files


@pytest.fixture(scope="module")
def payload():
    return _payload([phantom(seed=31, size="small", index=1)])


@pytest.fixture
def nbia(payload):
    with FakeServer() as server:
        yield FakeNbia(server, payload)


def test_enhance_table_prints_json() -> None:
    res = runner.invoke(app, ["download", "enhance-table", "--release", "v1"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["layout"] == "per-case"
    res = runner.invoke(app, ["download", "enhance-table"])
    assert len(json.loads(res.output)["files"]) == 13


def test_enhance_dry_run_lists_files_and_total_without_get(enhance_server, tmp_path) -> None:
    server, files = enhance_server
    base = f"{server.url}/enhance"
    res = runner.invoke(
        app, ["download", "enhance", str(tmp_path / "e"), "--base-url", base, "--dry-run", *FAST]
    )
    assert res.exit_code == 0, res.output
    total = sum(len(d) for d in files.values())
    assert "labels.json" in res.output and "Organs.zip" in res.output
    assert f"would fetch {total} B" in res.output or "would fetch" in res.output
    assert server.gets() == [] and len(server.log) == 13  # HEADs only


def test_enhance_download_with_env_base_url_then_rerun(enhance_server, tmp_path) -> None:
    server, _ = enhance_server
    env = {"PETCORPUS_ENHANCE_URL": f"{server.url}/enhance"}
    dest = str(tmp_path / "e")
    res = runner.invoke(
        app, ["download", "enhance", dest, "--only", "labels", "--unpack", *FAST], env=env
    )
    assert res.exit_code == 0, res.output
    assert "done 7" in res.output and "Organs" in res.output and "MISMATCH" not in res.output
    n = len(server.log)
    res = runner.invoke(app, ["download", "enhance", dest, "--only", "labels", *FAST], env=env)
    assert res.exit_code == 0 and "skipped (already complete) 7" in res.output
    assert len(server.log) == n


def test_enhance_with_table_file_and_failure_exit_code(enhance_server, tmp_path) -> None:
    server, files = enhance_server
    tbl = _table(server.url, files)
    tbl["files"][2]["url"] = f"{server.url}/gone/labels.json"
    table = tmp_path / "table.json"
    table.write_text(json.dumps(tbl))
    res = runner.invoke(
        app,
        [
            "download",
            "enhance",
            str(tmp_path / "e"),
            "--table",
            str(table),
            "--only",
            "metadata",
            *FAST,
        ],
    )
    assert res.exit_code == 1
    assert "failed 1" in res.output and "/gone/labels.json" in res.output


def test_enhance_v1_first_cases(tmp_path) -> None:
    with FakeServer() as server:
        for m in ("CT-details.xlsx", "PT-details.xlsx", "labels.json"):
            server.files[f"/v1/{m}"] = b"m"
        for c in ("0001",):
            for sub in (
                "images/CT",
                "images/PT",
                *(
                    f"ground-truth/{g}"
                    for g in (
                        "Body-Composition",
                        "Cardiac",
                        "Muscles",
                        "Organs",
                        "Peripheral-Bones",
                        "Ribs",
                        "Vertebrae",
                    )
                ),
            ):
                server.files[f"/v1/imaging-data/{sub}/{c}.nii.gz"] = b"nii" + c.encode()
        res = runner.invoke(
            app,
            [
                "download",
                "enhance",
                str(tmp_path),
                "--release",
                "v1",
                "--base-url",
                f"{server.url}/v1",
                "--cases",
                "1",
                "--unpack",
                *FAST,
            ],
        )
    assert res.exit_code == 0, res.output
    assert "done 12" in res.output
    assert (tmp_path / "imaging-data/ground-truth/Ribs/0001.nii.gz").read_bytes() == b"nii0001"
    assert "1 masks / 1 cases  ok" in res.output


@pytest.mark.slow
def test_autopet_download_dry_run_and_manifest(nbia, tmp_path) -> None:
    dest = tmp_path / "autopet"
    common = ["--nbia-url", nbia.base, "--clinical-url", nbia.clinical_url, *FAST]
    res = runner.invoke(app, ["download", "autopet", str(dest), "--dry-run", *common])
    assert res.exit_code == 0, res.output
    assert f"would fetch {len(nbia.truth)} series of {len(nbia.truth)}" in res.output
    assert nbia.image_gets() == []
    res = runner.invoke(app, ["download", "autopet", str(dest), "-j", "2", *common])
    assert res.exit_code == 0, res.output
    assert f"done {len(nbia.truth) + 1}" in res.output
    assert len(list(dest.rglob("*.dcm"))) == sum(len(v) for v in nbia.truth.values())
    manifest = tmp_path / "m.tcia"
    manifest.write_text("manifestVersion=3.0\nListOfSeriesToDownload=\n" + "\n".join(nbia.truth))
    res = runner.invoke(
        app, ["download", "autopet", str(dest), "--manifest", str(manifest), "--dry-run", *common]
    )
    assert f"would fetch 0 series of {len(nbia.truth)}" in res.output
    listing = tmp_path / "series.json"
    listing.write_text(json.dumps(nbia.rows))
    res = runner.invoke(
        app,
        [
            "download",
            "autopet",
            str(dest),
            "--series-list",
            str(listing),
            "--subjects",
            nbia.rows[0]["PatientID"],
            *common,
        ],
    )
    assert res.exit_code == 0 and "done 0" in res.output
    who = nbia.rows[0]["PatientID"]
    res = runner.invoke(
        app,
        [
            "download",
            "autopet",
            str(tmp_path / "b"),
            "--subjects",
            who,
            "--limit",
            "1",
            "--dry-run",
            *common,
        ],
    )
    assert res.exit_code == 0 and "would fetch 1 series of 1" in res.output
    assert any(f"PatientID={who}" in g[1] for g in nbia.server.gets())


def test_autopet_unreachable_server_exits_1_with_the_url(tmp_path) -> None:
    with FakeServer() as server:
        server.files["/nbia/getSeries?Collection=FDG-PET-CT-Lesions&format=json"] = b"[]"
        server.script["/nbia/getSeries?Collection=FDG-PET-CT-Lesions&format=json"] = [
            ("status", 502, None)
        ] * 5
        res = runner.invoke(
            app,
            [
                "download",
                "autopet",
                str(tmp_path),
                "--nbia-url",
                f"{server.url}/nbia",
                "--no-clinical",
                *FAST,
            ],
        )
    assert res.exit_code == 1
    assert "getSeries" in res.output and "502" in res.output


@pytest.mark.parametrize("dry_run", [False, True], ids=["download", "dry-run"])
def test_bad_table_entry_is_one_line_naming_the_table_and_the_entry(tmp_path, dry_run) -> None:
    table = tmp_path / "table.json"
    files = [{"name": "CT-details.xlsx", "kind": "metadata"}, {"name": "../x.zip"}]
    table.write_text(json.dumps({"base_url": "http://127.0.0.1:9/e", "files": files}))
    dest = tmp_path / "e"
    args = ["download", "enhance", str(dest), "--table", str(table), *FAST]
    res = runner.invoke(app, args + (["--dry-run"] if dry_run else []))
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
    assert "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    assert str(table) in lines[0] and "entry 2 is named '../x.zip'" in lines[0]
    assert not dest.exists() and not (tmp_path / "x.zip").exists()


def _zip_bytes(tmp_path, name: str, entries) -> bytes:
    from tests.test_download_unpack import _zip_entries

    return _zip_entries(tmp_path / name, entries).read_bytes()


def test_unpack_refuses_links_unless_allow_links_and_then_only_inside(tmp_path) -> None:
    """Organs.zip holds a link inside its folder; Ribs.zip the two-link chain of issue 14."""
    organs = [
        ("Organs/0001.nii.gz", "file", b"mask1"),
        ("Organs/latest.nii.gz", "symlink", "0001.nii.gz"),
    ]
    ribs = [
        ("a/b/c/d", "dir", b""),
        ("a/b/c/d/s2", "symlink", "../../../.."),
        ("s1", "symlink", "a/b/c/d/s2/../../../.."),
        ("s1/victim.txt", "file", b"pwned"),
    ]
    zips = {"Organs.zip": _zip_bytes(tmp_path, "o.zip", organs)}
    zips["Ribs.zip"] = _zip_bytes(tmp_path, "r.zip", ribs)
    (tmp_path / "victim.txt").write_text("precious")
    box = tmp_path / "box"
    box.mkdir()
    with FakeServer() as server:
        for name, data in zips.items():
            server.files[f"/enhance/{name}"] = data
        files = [{"name": n, "kind": "labels", "group": n[:-4]} for n in zips]
        table = tmp_path / "table.json"
        table.write_text(json.dumps({"base_url": f"{server.url}/enhance", "files": files}))
        args = ["download", "enhance", str(box / "e"), "--table", str(table), "--unpack", *FAST]
        res = runner.invoke(app, args)
        assert res.exit_code == 1
        assert res.output.count("[UNSAFE_ARCHIVE]") == 2 and "--allow-links" in res.output
        assert not (box / "e/imaging-data").exists()
        res = runner.invoke(app, [*args, "--allow-links"])
    assert res.exit_code == 1, res.output
    assert "failed 1" in res.output and "'s1'" in res.output and "leads outside" in res.output
    organs_out = box / "e/imaging-data/ground-truth/Organs"
    assert sorted(p.name for p in organs_out.iterdir()) == ["0001.nii.gz"]
    assert (organs_out / "0001.nii.gz").read_bytes() == b"mask1"
    assert (tmp_path / "victim.txt").read_text() == "precious"
    assert sorted(p.name for p in box.iterdir()) == ["e"]
