"""The corpus HDF5 layout: exact round trips, patch reads, atomic and resumable writes."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from petcorpus.errors import PetcorpusError
from petcorpus.layouts.hdf5 import (
    H5Corpus,
    H5Options,
    H5Study,
    append_study,
    consolidate,
    read_study,
    rebuild_index,
    shard_dir,
    write_hdf5,
)
from petcorpus.volume import Volume
from tests.conftest import phantom

REPO = Path(__file__).resolve().parents[1]


def _study(seed: int = 31, subject: str | None = None) -> H5Study:
    st = phantom(seed=seed, size="small", vendor="siemens", diagnosis="LYMPHOMA")
    t = st.truth
    ctres = t.pet_labels.with_array(t.pet_labels.array.astype(np.float32) * 10.5 - 1024)
    return H5Study(
        subject=subject or st.subject_id,
        study=st.study_folder,
        volumes={
            "ct": t.ct_hu,
            "ctres": ctres,
            "pet": t.pet_bqml,
            "suv": t.suv,
            "seg": t.lesion_mask,
        },
        attrs={
            "suv_factor": t.suv_factors["bw"],
            "suv_inputs": {"weight_kg": t.weight_kg, "dose_bq": t.injected_dose_bq},
            "source_uids": [st.ct[0].SeriesInstanceUID, st.pet[0].SeriesInstanceUID],
        },
    )


def _assert_same(vol: Volume, ref: Volume) -> None:
    assert vol.dtype == ref.dtype
    np.testing.assert_array_equal(vol.array, ref.array)
    np.testing.assert_array_equal(vol.affine, ref.affine)


@pytest.mark.parametrize("compression", ["blosc-lz4", "gzip", "lzf", "none"])
def test_round_trip_is_exact(tmp_path: Path, compression: str) -> None:
    study = _study()
    path = write_hdf5(tmp_path / "c.h5", [study], H5Options(compression=compression))
    got = read_study(path, study.subject, study.study)
    assert sorted(got) == ["ct", "ctres", "pet", "seg", "suv"]
    for name, vol in study.volumes.items():
        _assert_same(got[name], vol)
    with h5py.File(path) as f:
        g = f[f"{study.subject}/{study.study}"]
        assert {n: g[n].dtype.str for n in g} == {
            "ct": "<i2",
            "ctres": "<f4",
            "pet": "<f4",
            "suv": "<f4",
            "seg": "|u1",
        }
        assert g["suv"].chunks == (32, 32, 32)
        np.testing.assert_array_equal(g["suv"].attrs["spacing"], study.volumes["suv"].spacing)


def test_round_trip_from_the_autopet_nifti_files(tmp_path: Path) -> None:
    import nibabel as nib

    study = _study()
    folder = tmp_path / "nifti" / study.subject / study.study
    folder.mkdir(parents=True)
    names = {"ct": "CT", "ctres": "CTres", "pet": "PET", "suv": "SUV", "seg": "SEG"}
    for name, vol in study.volumes.items():
        nib.save(vol.to_nifti(), folder / f"{names[name]}.nii.gz")
    (folder / "petcorpus.json").write_text('{"suv_factor": 0.5, "time_reference": "qiba"}')
    loaded = H5Study.from_autopet_folder(folder)
    assert (loaded.subject, loaded.study) == (study.subject, study.study)
    path = write_hdf5(tmp_path / "c.h5", [loaded])
    with H5Corpus(path) as h5:
        for name, fname in names.items():
            ref = nib.load(folder / f"{fname}.nii.gz")
            vol = h5.read(study.subject, study.study, name)
            np.testing.assert_array_equal(vol.array, np.asanyarray(ref.dataobj))
            assert vol.dtype == ref.get_data_dtype()
            np.testing.assert_allclose(vol.affine, ref.affine, atol=1e-6)
        attrs = h5.attrs(study.subject, study.study)
        assert attrs["suv_factor"] == 0.5 and attrs["time_reference"] == "qiba"


def test_attributes(tmp_path: Path) -> None:
    from petcorpus import __version__

    study = _study()
    path = write_hdf5(tmp_path / "c.h5", [study])
    with H5Corpus(path) as h5:
        attrs = h5.attrs(study.subject, study.study)
    assert attrs["suv_factor"] == pytest.approx(study.attrs["suv_factor"], rel=0, abs=0)
    assert attrs["suv_inputs"] == study.attrs["suv_inputs"]
    assert attrs["source_uids"] == study.attrs["source_uids"]
    assert attrs["petcorpus_version"] == __version__
    assert attrs["petcorpus_hdf5_format"] == 1


def test_compat_writes_float64_like_the_published_file(tmp_path: Path) -> None:
    study = _study()
    path = write_hdf5(tmp_path / "c.h5", [study], H5Options(compat=True))
    with h5py.File(path) as f:
        g = f[f"{study.subject}/{study.study}"]
        for name, vol in study.volumes.items():
            ds = g[name]
            assert ds.dtype == np.float64 and ds.compression == "gzip"
            assert ds.compression_opts == 4 and not ds.shuffle
            np.testing.assert_array_equal(ds[()], vol.array.astype(np.float64))
        # the published recipe: h5py's automatic chunks for gzip
        with h5py.File(tmp_path / "ref.h5", "w") as ref:
            d = ref.create_dataset(
                "x", data=study.volumes["suv"].array.astype(float), compression="gzip"
            )
            assert g["suv"].chunks == d.chunks


def test_a_value_that_does_not_fit_the_native_dtype_is_an_error(tmp_path: Path) -> None:
    vol = Volume(np.full((4, 4, 4), 0.5), np.eye(4))
    with pytest.raises(PetcorpusError, match="do not fit"):
        write_hdf5(tmp_path / "c.h5", [H5Study("S", "s", {"seg": vol})])
    assert not list(tmp_path.iterdir())  # neither the file nor a temp file


class _CountingFile(io.RawIOBase):
    """A file object that records the byte ranges h5py reads."""

    def __init__(self, path: Path) -> None:
        self._f = path.open("rb")
        self.reads: list[tuple[int, int]] = []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, b) -> int:  # type: ignore[override]
        pos = self._f.tell()
        n = self._f.readinto(b)
        self.reads.append((pos, n or 0))
        return n or 0

    def close(self) -> None:
        self._f.close()
        super().close()


def test_a_96_block_reads_only_its_chunks(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(200, 200, 160)).astype(np.float32)
    vol = Volume(data, np.eye(4))
    path = write_hdf5(tmp_path / "c.h5", [H5Study("S", "s", {"suv": vol})])
    start = (37, 70, 20)
    block = tuple(slice(s, s + 96) for s in start)
    # the chunks a 96³ block at this offset intersects, from HDF5's own chunk index
    with h5py.File(path) as f:
        ds = f["S/s/suv"]
        storage = ds.id.get_storage_size()
        needed = set()
        for ci in range(start[0] // 32, (start[0] + 95) // 32 + 1):
            for cj in range(start[1] // 32, (start[1] + 95) // 32 + 1):
                for ck in range(start[2] // 32, (start[2] + 95) // 32 + 1):
                    info = ds.id.get_chunk_info_by_coord((ci * 32, cj * 32, ck * 32))
                    needed.add((info.byte_offset, info.size))
    assert len(needed) == 4 * 4 * 4
    counting = _CountingFile(path)
    with H5Corpus(counting) as h5:
        h5.shape("S", "s", "suv")  # open the dataset (object header) first
        counting.reads.clear()
        got = h5.read_block("S", "s", "suv", block)
    np.testing.assert_array_equal(got, data[block])
    data_reads = [r for r in counting.reads if r in needed]
    assert set(data_reads) == needed  # every needed chunk read, each in one read
    other = sum(n for r in counting.reads if r not in needed for _, n in [r])
    assert other < 64 * 1024  # the chunk index, not data
    total = sum(n for _, n in counting.reads)
    assert total <= sum(size for _, size in needed) + 64 * 1024
    assert total < storage / 3  # 64 of 245 chunks


def test_contiguous_layout_is_memory_mapped_and_reads_the_same(tmp_path: Path) -> None:
    study = _study()
    chunked = write_hdf5(tmp_path / "chunked.h5", [study])
    flat = write_hdf5(tmp_path / "flat.h5", [study], H5Options(contiguous=True))
    with h5py.File(flat) as f:
        ds = f[f"{study.subject}/{study.study}/suv"]
        assert ds.chunks is None and ds.compression is None and ds.dtype == np.float32
    blocks = [np.s_[3:40, 10:50, 2:30], np.s_[5, :, ::3], np.s_[..., -1], np.s_[:, 7:9, :]]
    with H5Corpus(chunked) as a, H5Corpus(flat) as b, H5Corpus(io.BytesIO(flat.read_bytes())) as c:
        for name, vol in study.volumes.items():
            assert b._mapped(study.subject, study.study, name) is not None
            assert a._mapped(study.subject, study.study, name) is None  # chunked: h5py reads
            assert c._mapped(study.subject, study.study, name) is None  # no file to map
            for sl in blocks:
                got = b.read_block(study.subject, study.study, name, sl)
                assert got.flags.writeable and got.flags.owndata  # a copy, not a view
                np.testing.assert_array_equal(got, vol.array[sl])
                np.testing.assert_array_equal(
                    a.read_block(study.subject, study.study, name, sl), got
                )
                np.testing.assert_array_equal(
                    c.read_block(study.subject, study.study, name, sl), got
                )
            _assert_same(b.read(study.subject, study.study, name), vol)
    # Through an index of shards (what `build --hdf5` writes) the shard file is mapped.
    index = tmp_path / "corpus.h5"
    append_study(index, study, H5Options(contiguous=True))
    with H5Corpus(index) as h5:
        assert h5._mapped(study.subject, study.study, "ct") is not None
        _assert_same(h5.read(study.subject, study.study, "ct"), study.volumes["ct"])
    with pytest.raises(ValueError, match="excludes contiguous"):
        H5Options(compat=True, contiguous=True)


def test_write_is_atomic_and_reproducible(tmp_path: Path) -> None:
    a, b = _study(31), _study(32)
    p1 = write_hdf5(tmp_path / "one.h5", [a, b])
    p2 = write_hdf5(tmp_path / "two.h5", [a, b])
    assert hashlib.sha256(p1.read_bytes()).digest() == hashlib.sha256(p2.read_bytes()).digest()

    def failing():
        yield a
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError):
        write_hdf5(p1, failing())
    assert hashlib.sha256(p1.read_bytes()).digest() == hashlib.sha256(p2.read_bytes()).digest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.h5", "two.h5"]


def test_append_builds_an_index_readable_anywhere(tmp_path: Path, monkeypatch) -> None:
    a, b = _study(31), _study(32)
    path = tmp_path / "corpus.h5"
    append_study(path, a)
    append_study(path, b)
    append_study(path, a)  # replacing a study is idempotent
    monkeypatch.chdir(tmp_path.parent)
    with H5Corpus(path) as h5:
        assert h5.studies() == sorted([(a.subject, a.study), (b.subject, b.study)])
        _assert_same(h5.read(b.subject, b.study, "suv"), b.volumes["suv"])
        block = h5.read_block(a.subject, a.study, "ct", np.s_[10:20, 5:50, 3])
    np.testing.assert_array_equal(block, a.volumes["ct"].array[10:20, 5:50, 3])
    # plain h5py sees the published paths too
    with h5py.File(path) as f:
        assert f[f"{a.subject}/{a.study}/seg"].shape == a.volumes["seg"].shape
    single = consolidate(path, tmp_path / "single.h5")
    for p in shard_dir(path).rglob("*.h5"):
        p.unlink()  # the consolidated file no longer needs the shards
    for st in (a, b):
        for name, vol in st.volumes.items():
            _assert_same(read_study(single, st.subject, st.study)[name], vol)


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    sys.path.insert(0, {repo!r})
    from petcorpus.layouts import hdf5
    from petcorpus.volume import Volume
    point = sys.argv[1]
    if point == "mid-dataset":
        real = hdf5.h5py.Group.create_dataset
        def create_dataset(self, name, *a, **k):
            if name == "pet":
                os._exit(9)
            return real(self, name, *a, **k)
        hdf5.h5py.Group.create_dataset = create_dataset
    else:
        real_replace = os.replace
        def replace(src, dst):
            if point == "before-index" and str(dst).endswith("corpus.h5"):
                os._exit(9)
            return real_replace(src, dst)
        hdf5.os.replace = replace
    v = Volume(np.arange(8 * 9 * 10, dtype=np.float32).reshape(8, 9, 10), np.eye(4))
    hdf5.append_study({path!r}, hdf5.H5Study("S3", "new", {{"suv": v, "pet": v}}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["mid-dataset", "before-index"])
def test_a_killed_append_loses_nothing(tmp_path: Path, point: str) -> None:
    a, b = _study(31), _study(32)
    path = tmp_path / "corpus.h5"
    append_study(path, a)
    append_study(path, b)
    before = path.read_bytes()
    script = _KILL_SCRIPT.format(repo=str(REPO / "src"), path=str(path))
    res = subprocess.run([sys.executable, "-c", script, point], capture_output=True, timeout=120)
    assert res.returncode == 9, res.stderr.decode()
    # the index is untouched and every earlier study reads back exactly
    assert path.read_bytes() == before
    with H5Corpus(path) as h5:
        assert h5.studies() == sorted([(a.subject, a.study), (b.subject, b.study)])
        _assert_same(h5.read(a.subject, a.study, "ct"), a.volumes["ct"])
    # a re-run completes and leaves no temp files
    v = Volume(np.arange(8 * 9 * 10, dtype=np.float32).reshape(8, 9, 10), np.eye(4))
    append_study(path, H5Study("S3", "new", {"suv": v, "pet": v}))
    rebuild_index(path)
    with H5Corpus(path) as h5:
        assert len(h5.studies()) == 3
        _assert_same(h5.read("S3", "new", "pet"), v)
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_published_style_file_reads_blocks_but_not_volumes(tmp_path: Path) -> None:
    arr = np.arange(4 * 5 * 6, dtype=np.float64).reshape(4, 5, 6)
    with h5py.File(tmp_path / "pub.h5", "w") as f:
        f.create_dataset("P/s/suv", data=arr, compression="gzip")
    with H5Corpus(tmp_path / "pub.h5") as h5:
        assert h5.studies() == [("P", "s")]
        np.testing.assert_array_equal(
            h5.read_block("P", "s", "suv", np.s_[1:3, :, 2]), arr[1:3, :, 2]
        )
        with pytest.raises(PetcorpusError, match="no affine"):
            h5.read("P", "s", "suv")
        with pytest.raises(PetcorpusError, match="no dataset 'ct'"):
            h5.read_block("P", "s", "ct", np.s_[0])
        with pytest.raises(PetcorpusError, match="no study"):
            h5.read("P", "other", "suv")
