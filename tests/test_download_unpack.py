"""Safe unpacking: traversal, absolute paths, links, special files and bombs are refused.

Every refusal is checked to leave nothing behind: the listing of DEST's parent is the same
before and after.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from petcorpus.download import UnpackLimits, safe_extract
from petcorpus.download import unpack as unpack_mod
from petcorpus.errors import DownloadError, Reason, UnsafeArchiveError

# (name, kind, payload): kind is file, dir, symlink, hardlink, fifo or chr
Entry = tuple[str, str, bytes | str]


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


def _zip_entries(path: Path, entries: list[Entry]) -> Path:
    modes = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}
    modes |= {"fifo": stat.S_IFIFO, "chr": stat.S_IFCHR}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, kind, payload in entries:
            info = zipfile.ZipInfo(name + ("/" if kind == "dir" else ""))
            info.create_system = 3
            info.external_attr = (modes[kind] | 0o755) << 16
            data = payload.encode() if isinstance(payload, str) else payload
            zf.writestr(info, data)
    return path


def _tar(path: Path, entries: list[Entry], mode: str = "w") -> Path:
    types = {
        "file": tarfile.REGTYPE,
        "dir": tarfile.DIRTYPE,
        "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE,
        "fifo": tarfile.FIFOTYPE,
        "chr": tarfile.CHRTYPE,
    }
    with tarfile.open(path, mode) as tf:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.type = types[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = str(payload)
                tf.addfile(info)
            elif kind == "file":
                data = payload.encode() if isinstance(payload, str) else payload
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return path


def _archive(fmt: str, path: Path, entries: list[Entry]) -> Path:
    return (
        _zip_entries(path.with_suffix(".zip"), entries)
        if fmt == "zip"
        else _tar(path.with_suffix(".tar"), entries)
    )


def _listing(root: Path) -> set[str]:
    """Every entry under ``root`` (links not followed, hidden names included)."""
    out = set()
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            out.add(os.path.relpath(os.path.join(folder, name), root))
    return out


@pytest.fixture
def box(tmp_path):
    """DEST's parent holding a file beside DEST that no archive may touch."""
    parent = tmp_path / "box"
    parent.mkdir()
    (parent / "beside.txt").write_text("precious")
    return parent


def _refused(arc: Path, dest: Path, *words: str, allow_links: bool = False, **kw):
    """Unpacking ``arc`` is refused with all ``words``, leaving DEST's parent unchanged."""
    parent = dest.parent
    before = _listing(parent)
    with pytest.raises(DownloadError) as info:
        safe_extract(arc, dest, allow_links=allow_links, **kw)
    message = str(info.value)
    assert arc.name in message and "\n" not in message
    for word in words:
        assert word in message
    assert _listing(parent) == before
    assert (parent / "beside.txt").read_text() == "precious"
    return info.value


def test_good_archive_extracts_everything_and_leaves_no_staging(tmp_path, box) -> None:
    members = [("Organs/0001.nii.gz", b"a" * 10), ("Organs/0002.nii.gz", b"b")]
    arc = _zip(tmp_path / "ok.zip", members)
    dest = box / "dest"
    written = safe_extract(arc, dest)
    assert written == [dest / "Organs/0001.nii.gz", dest / "Organs/0002.nii.gz"]
    assert (dest / "Organs/0001.nii.gz").read_bytes() == b"a" * 10
    assert _listing(box) == {"beside.txt", "dest", "dest/Organs"} | {
        f"dest/Organs/000{i}.nii.gz" for i in (1, 2)
    }


def test_tar_gz_extracts_and_merges_into_an_existing_folder(tmp_path, box) -> None:
    arc = _tar(tmp_path / "ok.tar.gz", [("d/x.txt", "file", "x"), ("y.txt", "file", "y")], "w:gz")
    dest = box / "dest"
    (dest / "d").mkdir(parents=True)
    (dest / "keep.txt").write_text("keep")
    assert safe_extract(arc, dest) == [dest / "d/x.txt", dest / "y.txt"]
    assert (dest / "d/x.txt").read_text() == "x" and (dest / "keep.txt").read_text() == "keep"
    assert _listing(box) == {"beside.txt", "dest", "dest/d", "dest/d/x.txt"} | {
        "dest/keep.txt",
        "dest/y.txt",
    }


@pytest.mark.parametrize("fmt", ["zip", "tar"])
@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("../evil", "'..' component"),
        ("a/../../evil", "'..' component"),
        ("..\\evil", "'..' component"),
        ("{abs}", "absolute path"),
        ("C:/evil", "drive letter"),
    ],
    ids=["dotdot", "nested-dotdot", "backslash-dotdot", "absolute", "drive"],
)
def test_paths_out_of_dest_are_refused(tmp_path, box, fmt, name, words) -> None:
    name = name.replace("{abs}", str(box / "beside.txt"))
    arc = _archive(fmt, tmp_path / "bad", [("ok.txt", "file", "x"), (name, "file", "pwned")])
    err = _refused(arc, box / "dest", words, repr(name))
    assert err.reason is Reason.UNSAFE_ARCHIVE and isinstance(err, UnsafeArchiveError)
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize(
    ("fmt", "entry", "words"),
    [
        ("zip", ("link", "symlink", "ok.txt"), "is a symbolic link"),
        ("tar", ("link", "symlink", "ok.txt"), "is a symbolic link"),
        ("tar", ("link", "hardlink", "ok.txt"), "is a hard link"),
    ],
    ids=["zip-symlink", "tar-symlink", "tar-hardlink"],
)
def test_links_are_refused_by_default_even_inside(tmp_path, box, fmt, entry, words) -> None:
    arc = _archive(fmt, tmp_path / "links", [("ok.txt", "file", "x"), entry])
    err = _refused(arc, box / "dest", words, "'link'", "--allow-links")
    assert err.reason is Reason.UNSAFE_ARCHIVE


@pytest.mark.parametrize("fmt", ["zip", "tar"])
@pytest.mark.parametrize("kind", ["fifo", "chr"])
def test_devices_and_fifos_are_refused(tmp_path, box, fmt, kind) -> None:
    arc = _archive(fmt, tmp_path / "dev", [("ok.txt", "file", "x"), ("dev", kind, b"")])
    _refused(arc, box / "dest", "'dev'", "special file")


# the chain of the issue: each link alone looks inside, together they reach DEST's parent
CHAIN: list[Entry] = [
    ("a/b/c/d", "dir", b""),
    ("a/b/c/d/s2", "symlink", "../../../.."),
    ("s1", "symlink", "a/b/c/d/s2/../../../.."),
    ("s1/beside.txt", "file", "pwned"),
]


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_two_link_chain_is_refused_with_and_without_allow_links(tmp_path, box, fmt) -> None:
    arc = _archive(fmt, tmp_path / "chain", CHAIN)
    _refused(arc, box / "dest", "'a/b/c/d/s2'", "symbolic link")
    _refused(arc, box / "dest", "'s1'", "leads outside the target", allow_links=True)


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_nothing_is_written_through_a_link_even_an_inside_one(tmp_path, box, fmt) -> None:
    entries: list[Entry] = [("a", "dir", b""), ("s1", "symlink", "a"), ("s1/x", "file", "x")]
    arc = _archive(fmt, tmp_path / "through", entries)
    _refused(arc, box / "dest", "'s1/x'", "written through the link 's1'", allow_links=True)


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        (("up", "symlink", "../beside.txt"), "leads outside"),
        (("abs", "symlink", "/etc/passwd"), "leads outside"),
        (("loop", "symlink", "loop/x"), "leads outside"),
        (("hard", "hardlink", "../beside.txt"), "not an earlier file inside"),
        (("hard", "hardlink", "later.txt"), "not an earlier file inside"),
    ],
    ids=["up", "absolute", "loop", "hard-up", "hard-later"],
)
def test_allow_links_still_refuses_links_that_leave(tmp_path, box, entry, words) -> None:
    entries = [("ok.txt", "file", "x"), entry, ("later.txt", "file", "y")]
    arc = _tar(tmp_path / "out.tar", entries)
    _refused(arc, box / "dest", repr(entry[0]), words, allow_links=True)


def test_allow_links_happy_path(tmp_path, box) -> None:
    entries: list[Entry] = [
        ("data/a.nii.gz", "file", "AAA"),
        ("data/sub/b.nii.gz", "file", "BB"),
        ("latest", "symlink", "data/a.nii.gz"),
        ("data/sub/up", "symlink", "../a.nii.gz"),
        ("alias", "symlink", "data/sub/up"),  # a chain that stays inside
        ("copy.nii.gz", "hardlink", "data/a.nii.gz"),
    ]
    dest = box / "dest"
    written = safe_extract(_tar(tmp_path / "ok.tar", entries), dest, allow_links=True)
    assert written == [dest / "data/a.nii.gz", dest / "data/sub/b.nii.gz", dest / "copy.nii.gz"]
    assert os.readlink(dest / "latest") == "data/a.nii.gz"
    assert (dest / "alias").read_text() == "AAA" and (dest / "copy.nii.gz").read_text() == "AAA"
    zipped = _zip(tmp_path / "ok.zip", [("d/a.txt", b"A")], links={"d/l": "a.txt"})
    safe_extract(zipped, box / "z", allow_links=True)
    assert os.readlink(box / "z/d/l") == "a.txt"


def test_a_link_already_in_dest_is_not_written_through(tmp_path, box) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = box / "dest"
    dest.mkdir()
    (dest / "out").symlink_to(outside)
    arc = _zip(tmp_path / "via.zip", [("out/x.txt", b"pwned")])
    _refused(arc, dest, "is a link")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    "entries",
    [
        [("a", "file", "x"), ("a/b", "file", "y")],
        [("a/b", "file", "y"), ("a", "file", "x")],
        [("a", "dir", b""), ("a", "symlink", "b")],
    ],
    ids=["file-then-child", "child-then-file", "dir-and-link"],
)
def test_conflicting_members_are_refused(tmp_path, box, entries) -> None:
    arc = _tar(tmp_path / "conflict.tar", entries)
    _refused(arc, box / "dest", "'a", allow_links=True)


def _bomb(path: Path, members: int = 256, size: int = 1 << 20) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for i in range(members):
            zf.writestr(f"part{i:03d}.bin", bytes(size))
    return path


@pytest.mark.slow
def test_many_small_members_cannot_add_up_to_a_bomb(tmp_path, box) -> None:
    arc = _bomb(tmp_path / "bomb.zip")  # 256 members of 1 MiB of zeros
    assert arc.stat().st_size < 300_000
    err = _refused(arc, box / "dest", "zip bomb", "--max-ratio")
    assert err.reason is Reason.UNSAFE_ARCHIVE
    # the same archive is accepted when the cap is raised on purpose
    safe_extract(arc, box / "dest", limits=UnpackLimits(max_ratio=2000))
    assert len(list((box / "dest").iterdir())) == 256


def test_small_archives_are_exempt_from_the_ratio_cap(tmp_path, box) -> None:
    arc = _zip(tmp_path / "seg.zip", [("seg.dcm", bytes(8 << 20))])  # >800:1, but 8 MiB
    assert safe_extract(arc, box / "dest") == [box / "dest/seg.dcm"]
    _refused(arc, box / "other", "zip bomb", limits=UnpackLimits(ratio_floor_bytes=0))


def test_total_expanded_size_and_free_disk_are_capped(tmp_path, box) -> None:
    arc = _zip(tmp_path / "big.zip", [("a", os.urandom(600)), ("b", os.urandom(600))])
    limits = UnpackLimits(max_total_bytes=1000)
    _refused(arc, box / "dest", "'b'", "over the cap of 1000 bytes", limits=limits)
    limits = UnpackLimits(disk_margin_bytes=1 << 62)
    _refused(arc, box / "dest", "free on the target's disk", limits=limits)


def _lie_about_sizes(path: Path, declared: int) -> None:
    """Rewrite every member's uncompressed size (local and central headers) to ``declared``."""
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(signature)
        while at >= 0:
            struct.pack_into("<I", data, at + offset, declared)
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))


def test_a_member_that_lies_about_its_size_is_refused(tmp_path, box) -> None:
    arc = _bomb(tmp_path / "liar.zip", members=4, size=4 << 20)
    _lie_about_sizes(arc, 1000)
    assert sum(i.file_size for i in zipfile.ZipFile(arc).infolist()) == 4000
    err = _refused(arc, box / "dest", "part000.bin")
    assert err.reason is Reason.CORRUPT_FILE  # zipfile stops at the declared size: bad CRC


@pytest.mark.slow
def test_caps_are_enforced_while_streaming(tmp_path, box, monkeypatch) -> None:
    """Even if the declared sizes passed, the bytes written are counted against the cap."""
    monkeypatch.setattr(unpack_mod, "_check_sizes", lambda *args: None)
    arc = _bomb(tmp_path / "bomb.zip")
    with pytest.raises(UnsafeArchiveError, match="zip bomb"):
        safe_extract(arc, box / "deep/er/dest")
    assert _listing(box) == {"beside.txt"}  # no staging, nor the parents it created


def test_not_an_archive_is_a_corrupt_file(tmp_path, box) -> None:
    bad = tmp_path / "x.zip"
    bad.write_bytes(b"<html>rate limited</html>")
    err = _refused(bad, box / "dest", "not a zip or tar archive")
    assert err.reason is Reason.CORRUPT_FILE


def test_a_killed_unpack_leaves_a_stage_remove_stale_temps_knows(
    tmp_path, box, monkeypatch
) -> None:
    """The staging folder carries the atomic writers' temporary name (``.tmp-<name>-...``)."""
    from petcorpus.atomic import remove_stale_temps

    arc = _zip(tmp_path / "ok.zip", [("a.txt", b"a")])
    stages = []

    def killed(archive, stage, home):
        stages.append(stage)
        raise KeyboardInterrupt  # killed between staging and the move into place

    monkeypatch.setattr(unpack_mod, "_install", killed)
    monkeypatch.setattr(unpack_mod.shutil, "rmtree", lambda *a, **k: None)  # as if -9
    with pytest.raises(KeyboardInterrupt):
        safe_extract(arc, box / "dest")
    (stage,) = stages
    assert stage.parent == box and stage.name.startswith(".tmp-dest-") and stage.is_dir()
    assert remove_stale_temps(box) == [stage]
