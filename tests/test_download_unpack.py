"""Safe unpacking: traversal, absolute paths, links out of DEST and zip bombs are refused."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

from petcorpus.download import UnpackLimits, safe_extract
from petcorpus.errors import DownloadError, Reason


def _zip(path: Path, members: list[tuple[str, bytes]], links: dict[str, str] | None = None):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def _all_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_good_archive_extracts_everything_atomically(tmp_path) -> None:
    members = [("Organs/0001.nii.gz", b"a" * 10), ("Organs/0002.nii.gz", b"b")]
    arc = _zip(tmp_path / "ok.zip", members, links={"Organs/latest.nii.gz": "0002.nii.gz"})
    dest = tmp_path / "dest"
    written = safe_extract(arc, dest)
    assert [p.name for p in written] == ["0001.nii.gz", "0002.nii.gz"]
    assert (dest / "Organs/0001.nii.gz").read_bytes() == b"a" * 10
    assert os.readlink(dest / "Organs/latest.nii.gz") == "0002.nii.gz"
    assert not any(p.name.endswith(".unpack-tmp") for p in dest.rglob("*"))


@pytest.mark.parametrize(
    ("members", "links", "words"),
    [
        ([("ok.txt", b"x"), ("../evil", b"pwned")], None, "'..' component"),
        ([("ok.txt", b"x"), ("a/../../evil", b"pwned")], None, "'..' component"),
        ([("ok.txt", b"x"), ("{abs}", b"pwned")], None, "absolute path"),
        ([("ok.txt", b"x"), ("C:/evil", b"pwned")], None, "absolute path"),
        ([("ok.txt", b"x")], {"link": "../../evil"}, "outside the target"),
        ([("ok.txt", b"x")], {"link": "/etc/passwd"}, "outside the target"),
        ([("ok.txt", b"x")], {"sub/link": "../../evil"}, "outside the target"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "drive", "symlink", "abs-symlink", "deep-link"],
)
def test_unsafe_members_are_refused_and_nothing_is_written(tmp_path, members, links, words):
    outside = tmp_path / "outside"
    outside.mkdir()
    members = [(n.replace("{abs}", str(outside / "evil")), d) for n, d in members]
    arc = _zip(tmp_path / "bad.zip", members, links)
    dest = tmp_path / "box" / "dest"
    before = _all_files(tmp_path)
    with pytest.raises(DownloadError) as info:
        safe_extract(arc, dest)
    assert info.value.reason is Reason.UNSAFE_ARCHIVE
    assert words in str(info.value) and "bad.zip" in str(info.value)
    after = _all_files(tmp_path)
    assert after - before <= {"box", "box/dest"}  # checked before writing anything
    assert not (outside / "evil").exists() and not (tmp_path / "evil").exists()


def test_zip_bomb_is_refused_by_ratio(tmp_path) -> None:
    arc = _zip(tmp_path / "bomb.zip", [("zeros.bin", bytes(8 << 20))])
    assert arc.stat().st_size < 100_000  # 8 MiB of zeros deflate >80:1
    with pytest.raises(DownloadError, match="zip bomb") as info:
        safe_extract(arc, tmp_path / "dest")
    assert info.value.reason is Reason.UNSAFE_ARCHIVE
    assert not (tmp_path / "dest" / "zeros.bin").exists()


def test_total_expanded_size_is_capped(tmp_path) -> None:
    arc = _zip(tmp_path / "big.zip", [("a", os.urandom(600)), ("b", os.urandom(600))])
    with pytest.raises(DownloadError, match="over the cap of 1000 bytes"):
        safe_extract(arc, tmp_path / "dest", limits=UnpackLimits(max_total_bytes=1000))
    assert not (tmp_path / "dest" / "a").exists()


def test_not_a_zip_is_a_corrupt_file(tmp_path) -> None:
    bad = tmp_path / "x.zip"
    bad.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(DownloadError) as info:
        safe_extract(bad, tmp_path / "dest")
    assert info.value.reason is Reason.CORRUPT_FILE
