"""NIfTI writing (deterministic, atomic, clean headers) and the atomic file/folder helpers."""

from __future__ import annotations

import gzip
import hashlib
import itertools

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from petcorpus import __version__
from petcorpus.atomic import atomic_dir, atomic_write, remove_stale_temps, temp_sibling
from petcorpus.nifti import read_nifti, write_nifti
from petcorpus.volume import Volume


def _oblique_volume(dtype=np.float32) -> Volume:
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal((7, 6, 5)) * 100).astype(dtype)
    theta = 0.3
    rot = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    )
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([-2.0, 1.5, 3.0])
    aff[:3, 3] = [10.5, -20.25, 300.0]
    return Volume(arr, aff)


def test_round_trip_geometry_and_values(tmp_path):
    vol = _oblique_volume()
    path = write_nifti(vol, tmp_path / "a.nii.gz")
    back = read_nifti(path)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
    # SimpleITK (an independent reader) sees the same grid, in LPS.
    img = sitk.ReadImage(str(path))
    assert Volume.from_sitk(img).same_grid(vol, atol=1e-4)
    np.testing.assert_array_equal(Volume.from_sitk(img).array, vol.array)


def test_header_codes_units_and_no_identifiers(tmp_path):
    vol = _oblique_volume(np.int16)
    path = write_nifti(vol, tmp_path / "ct.nii.gz")
    hdr = nib.load(path).header
    assert int(hdr["qform_code"]) == 1
    assert int(hdr["sform_code"]) == 1
    assert hdr.get_xyzt_units()[0] == "mm"
    assert hdr.get_data_dtype() == np.dtype("<i2")
    assert hdr["descrip"].item() == f"petcorpus {__version__}".encode()
    assert hdr["aux_file"].item() == b""
    assert hdr.get_slope_inter() == (None, None)
    np.testing.assert_allclose(hdr.get_qform(), vol.affine, atol=1e-5)


def test_bytes_reproducible_and_fixed_gzip_header(tmp_path):
    vol = _oblique_volume()
    a = write_nifti(vol, tmp_path / "a.nii.gz").read_bytes()
    b = write_nifti(vol, tmp_path / "sub.nii.gz").read_bytes()  # other name, later time
    assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest()
    # gzip header: magic, deflate, FLG without FNAME, MTIME zero.
    assert a[:3] == b"\x1f\x8b\x08"
    assert a[3] & 0x08 == 0
    assert a[4:8] == b"\x00\x00\x00\x00"
    # It is standard gzip: the stdlib decompresses it to header + little-endian data.
    raw = gzip.decompress(a)
    assert len(raw) == 352 + vol.array.size * 4
    np.testing.assert_array_equal(
        np.frombuffer(raw[352:], "<f4").reshape(vol.shape, order="F"), vol.array
    )


def test_zlib_fallback_and_dtype_cast(tmp_path):
    vol = _oblique_volume()
    path = write_nifti(vol, tmp_path / "z.nii.gz", compressor="zlib", level=6, dtype=np.int16)
    back = read_nifti(path)
    assert back.dtype == np.int16
    np.testing.assert_array_equal(back.array, vol.array.astype(np.int16))
    with pytest.raises(ValueError, match="0-3"):
        write_nifti(vol, tmp_path / "bad.nii.gz", level=6)


def test_uncompressed_and_bool(tmp_path):
    vol = Volume(np.eye(4, dtype=bool)[:, :, None].repeat(3, axis=2), np.eye(4))
    back = read_nifti(write_nifti(vol, tmp_path / "m.nii"))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back.array, vol.array.astype(np.uint8))


def test_non_contiguous_array(tmp_path):
    base = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    vol = Volume(base[::-1, :, ::2], np.eye(4))
    np.testing.assert_array_equal(
        read_nifti(write_nifti(vol, tmp_path / "v.nii.gz")).array, vol.array
    )


def test_atomic_write_failure_leaves_old_file(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def killed() -> None:
        with atomic_write(target, "w") as fh:
            fh.write("new")
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        killed()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_atomic_dir_replaces_and_cleans(tmp_path):
    final = tmp_path / "subj" / "study"
    with atomic_dir(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".tmp-study-")
        (tmp / "a").write_text("1")
    with atomic_dir(final) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert sorted(p.name for p in final.parent.iterdir()) == ["study"]
    # A failure inside the block keeps the previous result and removes the temp folder.

    def killed() -> None:
        with atomic_dir(final) as tmp:
            (tmp / "c").write_text("3")
            raise KeyError("boom")

    with pytest.raises(KeyError):
        killed()
    assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert sorted(p.name for p in final.parent.iterdir()) == ["study"]


def test_remove_stale_temps(tmp_path):
    (tmp_path / "s" / ".tmp-study-1234").mkdir(parents=True)
    (tmp_path / "s" / ".tmp-study-1234" / "CT.nii.gz").write_bytes(b"x")
    (tmp_path / "s" / "keep").mkdir()
    (tmp_path / "s" / "keep" / ".tmp-PET.nii.gz-ab").write_bytes(b"x")
    (tmp_path / "s" / "keep" / "PET.nii.gz").write_bytes(b"x")
    removed = remove_stale_temps(tmp_path)
    assert [p.name for p in removed] == [".tmp-study-1234", ".tmp-PET.nii.gz-ab"]
    assert sorted(p.name for p in (tmp_path / "s").rglob("*")) == ["PET.nii.gz", "keep"]


def test_sha256_computed_while_writing_equals_the_file_hash(tmp_path):
    import hashlib

    import numpy as np

    from petcorpus.nifti import write_nifti_sha256
    from petcorpus.volume import Volume

    vol = Volume(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6), np.eye(4))
    for name in ("a.nii.gz", "b.nii"):
        path, digest = write_nifti_sha256(vol, tmp_path / name)
        assert digest == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.skipif(not hasattr(__import__("os"), "posix_fadvise"), reason="POSIX only")
def test_drop_cache_writes_the_same_bytes_and_drops_after_the_fsync(tmp_path, monkeypatch):
    import os

    from petcorpus.nifti import write_nifti_sha256

    vol = Volume(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), np.eye(4))
    calls: list[str] = []
    real_fsync, real_fadvise = os.fsync, os.posix_fadvise
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        os,
        "posix_fadvise",
        lambda fd, off, n, advice: (
            calls.append(f"fadvise {advice}"),
            real_fadvise(fd, off, n, advice),
        )[1],
    )
    kept = write_nifti_sha256(vol, tmp_path / "kept.nii.gz")
    assert not any(c.startswith("fadvise") for c in calls)
    dropped = write_nifti_sha256(vol, tmp_path / "dropped.nii.gz", drop_cache=True)
    # file fsync, then drop (only once the data are on disk), then the folder's fsync
    assert calls[-3:] == ["fsync", f"fadvise {os.POSIX_FADV_DONTNEED}", "fsync"]
    assert kept[1] == dropped[1]
    assert (tmp_path / "kept.nii.gz").read_bytes() == (tmp_path / "dropped.nii.gz").read_bytes()
    assert hashlib.sha256((tmp_path / "dropped.nii.gz").read_bytes()).hexdigest() == dropped[1]


def test_a_stream_writes_the_bytes_of_the_whole_volume(tmp_path):
    from petcorpus.nifti import write_nifti_sha256
    from petcorpus.volume import VolumeStream

    vol = _oblique_volume()
    arr = np.asfortranarray(vol.array)
    stream = VolumeStream(
        vol.shape, vol.affine, arr.dtype, lambda: (arr[:, :, k : k + 2] for k in range(0, 5, 2))
    )
    a = write_nifti_sha256(vol, tmp_path / "whole.nii.gz", dtype=np.float32)
    b = write_nifti_sha256(stream, tmp_path / "stream.nii.gz", dtype=np.float32)
    assert a[1] == b[1]
    assert (tmp_path / "whole.nii.gz").read_bytes() == (tmp_path / "stream.nii.gz").read_bytes()


@pytest.mark.skipif(
    not __import__("sys").platform.startswith("linux"), reason="sync_file_range(2) is Linux-only"
)
def test_write_behind_drops_what_is_on_disk_while_writing(tmp_path, monkeypatch):
    import os

    from petcorpus import atomic

    real = atomic._sync_file_range()
    assert real is not None
    calls: list[tuple] = []

    def sfr(fd, off, n, flags):
        calls.append(("sfr", off, n, flags))
        return real(fd, off, n, flags)

    real_fadvise = os.posix_fadvise
    monkeypatch.setattr(
        os,
        "posix_fadvise",
        lambda fd, off, n, adv: (calls.append(("drop", off, n)), real_fadvise(fd, off, n, adv))[1],
    )
    data = np.random.default_rng(0).bytes(5 * 4096 + 100)
    with open(tmp_path / "f", "wb") as raw:
        monkeypatch.setattr(atomic, "_sync_file_range", lambda: sfr)
        wb = atomic._WriteBehind(raw, window=4096)
        for k in range(0, len(data), 1000):
            wb.write(data[k : k + 1000])
    assert (tmp_path / "f").read_bytes() == data
    drops = [c for c in calls if c[0] == "drop"]
    assert drops and drops[0][1] == 0
    # each dropped range was first written out and waited for, and ranges follow each other
    for (_, off, n), (_, nxt, _) in itertools.pairwise(drops):
        assert nxt == off + n
    for _, off, n in drops:
        assert ("sfr", off, n, 7) in calls  # WAIT_BEFORE | WRITE | WAIT_AFTER
    assert drops[-1][1] + drops[-1][2] < len(data)  # the newest window is still being written


def test_a_resumable_download_part_is_no_stale_temp(tmp_path):
    """``<name>.part`` is a download to resume (HTTP Range), not a killed writer's leftover."""
    (tmp_path / "PETCT_x.zip.part").write_bytes(b"half")
    (tmp_path / ".tmp-PETCT_x.zip-0a1b2c3d").write_bytes(b"x")
    assert [p.name for p in remove_stale_temps(tmp_path)] == [".tmp-PETCT_x.zip-0a1b2c3d"]
    assert [p.name for p in tmp_path.iterdir()] == ["PETCT_x.zip.part"]


def test_temp_sibling_is_the_one_scheme(tmp_path):
    a, b = temp_sibling(tmp_path / "CT.nii.gz"), temp_sibling(tmp_path / "CT.nii.gz")
    assert a != b and a.parent == tmp_path and a.name.startswith(".tmp-CT.nii.gz-")
    a.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == [a]


# -- reading: the ISA-L fast path gives nibabel's values, affine and dtype ----------------
def _nib_volume(path):
    img = nib.load(str(path))
    return np.asanyarray(img.dataobj) if img.header.get_slope_inter() in (
        (None, None),
        (1.0, 0.0),
    ) else img.get_fdata(dtype=np.float32), img.affine


def _written_by_nibabel(tmp_path, name, arr, *, extension=False, slope=None, version=1):
    aff = np.array([[-2.0, 0.1, 0, 10], [0, 2.5, 0, -20], [0.2, 0, 3.0, 5], [0, 0, 0, 1]])
    cls = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    img = cls(arr, aff)
    if extension:
        img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment of some length"))
    if slope is not None:
        img.header.set_slope_inter(slope, 3.0)
    path = tmp_path / name
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize(
    ("dtype", "extension", "slope", "version", "suffix"),
    [
        (np.float32, False, None, 1, ".nii.gz"),
        (np.int16, True, None, 1, ".nii.gz"),  # vox_offset beyond 352
        (np.uint8, False, None, 1, ".nii.gz"),
        (">f4", False, None, 1, ".nii.gz"),  # big-endian data: nibabel's path
        (np.int16, False, 0.5, 1, ".nii.gz"),  # scaled: nibabel's float32 path
        (np.float32, False, None, 2, ".nii.gz"),  # NIfTI-2: nibabel's path
        (np.float32, False, None, 1, ".nii"),
    ],
)
@pytest.mark.parametrize("in_zip", [False, True], ids=["file", "zip-member"])
def test_read_nifti_equals_nibabel(tmp_path, dtype, extension, slope, version, suffix, in_zip):
    """Files on disk and members of a zip archive (ENHANCE's download) read alike."""
    import zipfile

    rng = np.random.default_rng(0)
    arr = (rng.random((7, 5, 4)) * 100).astype(dtype)
    path = _written_by_nibabel(tmp_path, "x" + suffix, arr, extension=extension, slope=slope,
                               version=version)  # fmt: skip
    want, affine = _nib_volume(path)
    if in_zip:
        archive = tmp_path / "a.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.write(path, "case/x" + suffix)
        got = read_nifti(archive, member="case/x" + suffix)
    else:
        got = read_nifti(path)
    assert got.array.dtype == want.dtype
    np.testing.assert_array_equal(got.array, want)
    np.testing.assert_array_equal(got.affine, affine)


def test_read_nifti_of_our_own_files_is_writable_fortran_ordered(tmp_path):
    vol = Volume(np.arange(60, dtype=np.float32).reshape(3, 4, 5), np.diag([2.0, 3.0, 4.0, 1]))
    got = read_nifti(write_nifti(vol, tmp_path / "v.nii.gz"))
    np.testing.assert_array_equal(got.array, vol.array)
    assert got.array.flags.f_contiguous and got.array.flags.writeable


def test_read_nifti_of_a_cut_file_raises(tmp_path):
    vol = Volume(np.random.default_rng(1).random((40, 40, 40)).astype(np.float32), np.eye(4))
    path = write_nifti(vol, tmp_path / "v.nii.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises((EOFError, OSError)):
        read_nifti(path)
