"""The corpus as HDF5: the published paths ``/<subject>/<study>/{ct,ctres,pet,suv,seg}``.

The published file (lab-midas/TCIA_processing ``tcia_nifti_to_hdf5.py``) stores every image
as float64 (``get_fdata()``), gzip level 4 with h5py's automatic chunks, and no geometry.
Ours keeps the paths and changes what was measured to matter (docs/benchmarks.md):

- native dtypes: ``ct`` int16 (HU), ``ctres``/``pet``/``suv`` float32, ``seg`` uint8;
- 32³ chunks, so a random 96³ training patch touches at most 4³ chunks;
- Blosc (LZ4, byte-shuffle) through ``hdf5plugin`` by default: 3-5x faster to write than
  gzip level 1 and 2-3x faster to read a patch, for a file ~10 % larger; ``gzip`` (readable
  by any HDF5 tool without plugins) and ``lzf`` are options;
- attributes: per dataset ``affine`` (4x4 RAS+ mm, nibabel's convention) and ``spacing``;
  per study group the caller's provenance (SUV factor and inputs, source UIDs ...), plus
  ``petcorpus_version`` and ``petcorpus_hdf5_format``.

``H5Options(compat=True)`` writes float64, auto chunks and gzip like the published file
(attributes are still added; they do not change the datasets). ``H5Options(contiguous=True)``
writes a training cache: each dataset one uncompressed run that :class:`H5Corpus`
memory-maps, so a random 96³ patch is one strided copy (~30x faster than the published file,
~5x the disk of the default).

Writing is the driver's job and is crash-safe in two ways:

- :func:`write_hdf5` writes a whole file atomically (temp file in the same folder, then
  ``os.replace``);
- :func:`append_study` adds one study at a time and survives a kill at any moment: the
  study goes to its own shard file ``<file>.d/<subject>/<study>.h5`` (temp + rename), then
  the index ``<file>`` — a small HDF5 file of external links at the published paths — is
  rewritten atomically. Readers (ours or plain h5py) see ``/<subject>/<study>/suv`` as
  usual; :func:`consolidate` copies everything into one self-contained file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal

import h5py
import numpy as np

from petcorpus.errors import CorruptFileError, PetcorpusError, UnsupportedError
from petcorpus.layouts.base import Case, Corpus
from petcorpus.volume import Volume

__all__ = [
    "DATASET_DTYPES",
    "FORMAT_VERSION",
    "VOLUME_NAMES",
    "H5Case",
    "H5Corpus",
    "H5Options",
    "H5Study",
    "append_study",
    "consolidate",
    "read_study",
    "rebuild_index",
    "shard_dir",
    "write_hdf5",
    "write_study_group",
]

#: Dataset name → stored dtype (native mode), in the published order.
DATASET_DTYPES: dict[str, np.dtype[Any]] = {
    "suv": np.dtype(np.float32),
    "ctres": np.dtype(np.float32),
    "ct": np.dtype(np.int16),
    "pet": np.dtype(np.float32),
    "seg": np.dtype(np.uint8),
}
#: Dataset name → the volume name it holds (:class:`~petcorpus.layouts.base.Case` names).
VOLUME_NAMES: dict[str, str] = {
    "suv": "SUV",
    "ctres": "CTres",
    "ct": "CT",
    "pet": "PET",
    "seg": "SEG",
}
#: Version of the attributes and layout written here (attribute ``petcorpus_hdf5_format``).
FORMAT_VERSION = 1

Compression = Literal["blosc-lz4", "gzip", "lzf", "none"]


@dataclasses.dataclass(frozen=True)
class H5Options:
    """How datasets are stored.

    Parameters
    ----------
    compression : {"blosc-lz4", "gzip", "lzf", "none"}
        Filter. ``blosc-lz4`` needs ``hdf5plugin`` to write and to read (``import
        hdf5plugin`` before h5py opens the file; :class:`H5Corpus` does this). ``gzip`` is
        readable everywhere.
    level : int, optional
        Compression level (gzip default 1, blosc default 5).
    chunks : (int, int, int) or None
        Chunk shape (clipped to the data shape); None lets h5py choose.
    shuffle : bool
        Byte-shuffle the values before compressing.
    compat : bool
        Published recipe: float64 datasets, automatic chunks, gzip level 4, no shuffle
        (``compression``, ``chunks``, ``shuffle`` and ``level`` are then ignored).
    contiguous : bool
        A training cache: each dataset one uncompressed run of native values (no chunks,
        no filter; ``compression``, ``chunks``, ``shuffle``, ``level`` are ignored). The
        file is ~5x larger than the default one, but :class:`H5Corpus` memory-maps such
        datasets, so a random 96³ patch is one strided copy instead of decompressing 64
        chunks (docs/benchmarks.md). Any HDF5 reader reads it; no plugin needed.
    """

    compression: Compression = "blosc-lz4"
    level: int | None = None
    chunks: tuple[int, int, int] | None = (32, 32, 32)
    shuffle: bool = True
    compat: bool = False
    contiguous: bool = False

    def __post_init__(self) -> None:
        if self.compat and self.contiguous:
            raise ValueError("compat (the published gzip layout) excludes contiguous")
        if self.compression not in ("blosc-lz4", "gzip", "lzf", "none"):
            raise ValueError(f"unknown compression {self.compression!r}")
        if self.chunks is not None and (
            len(self.chunks) != 3 or any(int(c) < 1 for c in self.chunks)
        ):
            raise ValueError(f"chunks must be three positive integers, got {self.chunks}")

    def dataset_kwargs(self, shape: tuple[int, ...]) -> dict[str, Any]:
        """Keyword arguments for ``h5py.Group.create_dataset``."""
        if self.compat:
            return {"chunks": True, "compression": "gzip", "track_times": False}
        kw: dict[str, Any] = {"track_times": False}
        if self.contiguous:
            return kw
        kw["chunks"] = (
            True
            if self.chunks is None
            else tuple(min(int(c), int(s)) for c, s in zip(self.chunks, shape, strict=True))
        )
        if self.compression == "gzip":
            kw.update(compression="gzip", compression_opts=self.level or 1, shuffle=self.shuffle)
        elif self.compression == "lzf":
            kw.update(compression="lzf", shuffle=self.shuffle)
        elif self.compression == "blosc-lz4":
            hdf5plugin = _hdf5plugin(required=True)
            shuffle = hdf5plugin.Blosc.SHUFFLE if self.shuffle else hdf5plugin.Blosc.NOSHUFFLE
            kw.update(hdf5plugin.Blosc(cname="lz4", clevel=self.level or 5, shuffle=shuffle))
        return kw

    def stored_dtype(self, name: str, dtype: np.dtype[Any]) -> np.dtype[Any]:
        if self.compat:
            return np.dtype(np.float64)
        return DATASET_DTYPES.get(name, np.dtype(dtype))


def _hdf5plugin(required: bool) -> Any:
    try:
        import hdf5plugin
    except ImportError as exc:
        if required:
            raise UnsupportedError(
                "Blosc compression needs hdf5plugin: pip install hdf5plugin "
                "(or write with H5Options(compression='gzip'))"
            ) from exc
        return None
    return hdf5plugin


@dataclasses.dataclass(frozen=True)
class H5Study:
    """One study for the HDF5 file: its names, volumes and group attributes.

    Attributes
    ----------
    subject, study : str
        Group names (the TCIA subject id and study folder name).
    volumes : mapping str → Volume
        Any of ``ct``, ``ctres``, ``pet``, ``suv``, ``seg`` (other names are stored as given).
    attrs : mapping
        Provenance for the study group: numbers, strings, arrays; mappings and lists of
        strings are stored as JSON text.
    """

    subject: str
    study: str
    volumes: Mapping[str, Volume]
    attrs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_case(cls, case: Case) -> H5Study:
        """A study from any layout's case: its volumes of :data:`VOLUME_NAMES` (as the
        datasets ``ct``, ``ctres``, ...) and its metadata as the group attributes. The key's
        last two parts are the subject and study group names."""
        vols = {ds: case.volume(name) for ds, name in VOLUME_NAMES.items() if case.has(name)}
        if not vols:
            raise PetcorpusError(
                f"no volume to store (none of {', '.join(VOLUME_NAMES.values())})",
                case.source(next(iter(VOLUME_NAMES.values()))),
            )
        *_, subject, study = ("", *case.key.split("/"))
        return cls(subject, study, vols, dict(case.metadata))

    @classmethod
    def from_autopet_folder(cls, folder: str | os.PathLike[str]) -> H5Study:
        """Load a study folder of the autoPET layout (its five volumes and sidecar)."""
        from petcorpus.layouts.autopet import AutopetCase

        return cls.from_case(AutopetCase(folder))


def _attr_value(value: Any) -> Any:
    if isinstance(value, Mapping) or (
        isinstance(value, list | tuple) and any(isinstance(v, str | Mapping) for v in value)
    ):
        return json.dumps(value, sort_keys=True, default=str)
    if value is None:
        return "null"
    return value


def write_study_group(
    h5: h5py.File | h5py.Group, study: H5Study, options: H5Options | None = None
) -> h5py.Group:
    """Write one study under ``/<subject>/<study>`` of an open file (no atomicity)."""
    from petcorpus import __version__

    options = options or H5Options()
    group = h5.require_group(study.subject).create_group(study.study)
    for key, value in sorted(study.attrs.items()):
        group.attrs[key] = _attr_value(value)
    group.attrs["petcorpus_version"] = __version__
    group.attrs["petcorpus_hdf5_format"] = FORMAT_VERSION
    for name in [*DATASET_DTYPES, *sorted(set(study.volumes) - set(DATASET_DTYPES))]:
        if name not in study.volumes:
            continue
        vol = study.volumes[name]
        dtype = options.stored_dtype(name, vol.dtype)
        data = np.asarray(vol.array)
        if data.dtype != dtype:
            if (
                options.compat
                or np.can_cast(data.dtype, dtype, "safe")
                or np.array_equal(data.astype(dtype), data)
            ):
                data = data.astype(dtype)
            else:
                raise PetcorpusError(
                    f"{study.subject}/{study.study}/{name}: {data.dtype} values do not fit "
                    f"the stored dtype {dtype} exactly"
                )
        if data.dtype.byteorder == ">":  # store little-endian: same bytes on every machine
            data = data.astype(data.dtype.newbyteorder("<"))
        ds = group.create_dataset(name, data=data, **options.dataset_kwargs(data.shape))
        ds.attrs["affine"] = np.asarray(vol.affine, dtype=np.float64)
        ds.attrs["spacing"] = np.asarray(vol.spacing, dtype=np.float64)
        ds.attrs["source_dtype"] = str(vol.dtype)
    return group


def _temp_beside(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    return Path(name)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_hdf5(
    path: str | os.PathLike[str], studies: Iterable[H5Study], options: H5Options | None = None
) -> Path:
    """Write a whole corpus file atomically: a temp file beside ``path``, then rename."""
    path = Path(path)
    with _atomic_h5(path) as f:
        for st in studies:
            write_study_group(f, st, options)
    return path


@contextlib.contextmanager
def _atomic_h5(path: Path) -> Iterator[h5py.File]:
    """A new HDF5 file written as a temp file beside ``path``, fsynced, then renamed in."""
    tmp = _temp_beside(path)
    try:
        with h5py.File(tmp, "w", libver=("earliest", "v110")) as f:
            yield f
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def shard_dir(path: str | os.PathLike[str]) -> Path:
    """Folder of the per-study shard files of an appendable file: ``<file>.d``."""
    path = Path(path)
    return path.with_name(path.name + ".d")


def append_study(
    path: str | os.PathLike[str], study: H5Study, options: H5Options | None = None
) -> Path:
    """Add (or replace) one study in an appendable corpus file; crash-safe at any moment.

    The study is written to ``<file>.d/<subject>/<study>.h5`` (temp file + rename), then
    the index ``<file>`` is rebuilt atomically with an external link per study at
    ``/<subject>/<study>``. Returns the shard's path.
    """
    shard = shard_dir(path) / study.subject / f"{study.study}.h5"
    write_hdf5(shard, [study], options)
    rebuild_index(path)
    return shard


def rebuild_index(path: str | os.PathLike[str]) -> Path:
    """Rewrite the index file from the complete shards on disk; remove stale temp files."""
    path = Path(path)
    root = shard_dir(path)
    # Temp files of a killed writer (only the driver writes, so none is in use now).
    for tmp in [*root.glob("*/.*.tmp"), *path.parent.glob(f".{path.name}.*.tmp")]:
        tmp.unlink(missing_ok=True)
    entries = sorted((p.parent.name, p.stem) for p in root.glob("*/*.h5"))
    with _atomic_h5(path) as f:
        f.attrs["petcorpus_hdf5_format"] = FORMAT_VERSION
        f.attrs["shards"] = root.name
        for subject, study in entries:
            rel = f"{root.name}/{subject}/{study}.h5"
            f.require_group(subject)[study] = h5py.ExternalLink(rel, f"/{subject}/{study}")
    return path


def consolidate(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Copy an index file and its shards into one self-contained file (atomically).

    Chunks are copied as stored (no recompression).
    """
    _hdf5plugin(required=False)
    src, dest = Path(src), Path(dest)
    with _open(src) as fin, _atomic_h5(dest) as fout:
        for subject, study in _iter_studies(fin):
            fin.copy(
                fin[f"{subject}/{study}"],
                fout.require_group(subject),
                name=study,
                expand_external=True,
            )
    return dest


def _open(source: str | os.PathLike[str] | IO[bytes], **kw: Any) -> h5py.File:
    _hdf5plugin(required=False)
    try:
        return h5py.File(source, "r", **kw)
    except (OSError, ValueError) as exc:
        name = source if isinstance(source, str | os.PathLike) else "<file object>"
        raise CorruptFileError(f"cannot open as HDF5: {exc}", path=name) from exc


def _iter_studies(f: h5py.File) -> Iterator[tuple[str, str]]:
    for subject in sorted(f):
        node = f.get(subject)
        if not isinstance(node, h5py.Group):
            continue
        for study in sorted(node):
            yield subject, study


class H5Corpus(Corpus):
    """Read a corpus HDF5 file (ours, an index of shards, or a published-style file).

    As a :class:`~petcorpus.layouts.base.Corpus` its cases are :class:`H5Case` objects
    (key ``<subject>/<study>``, volumes named as :data:`VOLUME_NAMES` says, metadata = the
    study attributes); :meth:`read_block` reads patches.

    Parameters
    ----------
    source : path or binary file object
        The file. External links of an index resolve relative to the index's folder.
    rdcc_nbytes : int, optional
        h5py chunk-cache size per dataset.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> v = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.eye(4))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = write_hdf5(pathlib.Path(d, "c.h5"), [H5Study("S1", "st", {"suv": v})])
    ...     with H5Corpus(p) as h5:
    ...         h5.studies(), h5.read_block("S1", "st", "suv", np.s_[1, 2, :]).tolist()
    ([('S1', 'st')], [20.0, 21.0, 22.0, 23.0])
    """

    layout = "hdf5"

    def __init__(
        self, source: str | os.PathLike[str] | IO[bytes], *, rdcc_nbytes: int | None = None
    ) -> None:
        kw = {} if rdcc_nbytes is None else {"rdcc_nbytes": rdcc_nbytes}
        self._file = _open(source, **kw)
        self.source = source
        self.root = Path(source) if isinstance(source, str | os.PathLike) else Path("<file>")
        self._maps: dict[tuple[str, str, str], np.ndarray | None] = {}
        self._datasets: dict[tuple[str, str, str], h5py.Dataset] = {}

    def close(self) -> None:
        self._maps.clear()
        self._datasets.clear()
        self._file.close()

    def __enter__(self) -> H5Corpus:
        return self

    @classmethod
    def sniff(cls, path: Path) -> bool:
        return path.is_file() and h5py.is_hdf5(path)

    def cases(self) -> Iterator[H5Case]:
        for subject, study in self.studies():
            yield H5Case(self, subject, study)

    def case(self, key: str) -> H5Case:
        subject, _, study = key.partition("/")
        self._group(subject, study)  # raises when absent
        return H5Case(self, subject, study)

    @property
    def file(self) -> h5py.File:
        """The open h5py file (for anything this class does not cover)."""
        return self._file

    def studies(self) -> list[tuple[str, str]]:
        """All (subject, study) pairs, sorted."""
        return list(_iter_studies(self._file))

    def _group(self, subject: str, study: str) -> h5py.Group:
        try:
            g = self._file[f"{subject}/{study}"]
        except KeyError:
            raise PetcorpusError(
                f"no study /{subject}/{study} in this file", path=str(self.source)
            ) from None
        if not isinstance(g, h5py.Group):
            raise CorruptFileError(f"/{subject}/{study} is not a group", path=str(self.source))
        return g

    def _dataset(self, subject: str, study: str, name: str) -> h5py.Dataset:
        g = self._group(subject, study)
        if name not in g:
            raise PetcorpusError(
                f"/{subject}/{study} has no dataset {name!r} (has: {', '.join(sorted(g))})",
                path=str(self.source),
            )
        return g[name]

    def names(self, subject: str, study: str) -> list[str]:
        """Dataset names of a study."""
        return sorted(self._group(subject, study))

    def attrs(self, subject: str, study: str) -> dict[str, Any]:
        """Study-group attributes (JSON text decoded back to objects)."""
        out: dict[str, Any] = {}
        for k, v in self._group(subject, study).attrs.items():
            if isinstance(v, bytes):
                v = v.decode()
            if isinstance(v, str) and (v[:1] in "{[" or v == "null"):
                with contextlib.suppress(json.JSONDecodeError):
                    v = json.loads(v)
            out[k] = v.item() if isinstance(v, np.generic) else v
        return out

    def read(self, subject: str, study: str, name: str) -> Volume:
        """The whole dataset as a :class:`Volume` (stored dtype, stored affine).

        Raises
        ------
        PetcorpusError
            The dataset has no ``affine`` attribute (a published-style file); use
            :meth:`read_block` with ``np.s_[...]`` for the bare array.
        """
        ds = self._dataset(subject, study, name)
        if "affine" not in ds.attrs:
            raise PetcorpusError(
                f"/{subject}/{study}/{name} has no affine attribute (a published-style file); "
                "read the array with read_block(..., np.s_[...])",
                path=str(self.source),
            )
        mapped = self._mapped(subject, study, name)
        return Volume(ds[()] if mapped is None else np.array(mapped), ds.attrs["affine"])

    def read_block(self, subject: str, study: str, name: str, slices: Any) -> np.ndarray:
        """Read a sub-block (e.g. ``np.s_[0:96, 10:106, 40:136]``) as a new array.

        Only the chunks the block overlaps are read; a contiguous dataset
        (``H5Options(contiguous=True)``) is memory-mapped and only the block's bytes copied.
        """
        key = (subject, study, name)
        if key not in self._maps:
            self._mapped(subject, study, name)
        mapped = self._maps[key]
        if mapped is not None:
            return np.array(mapped[slices])
        return self._datasets[key][slices]

    def _mapped(self, subject: str, study: str, name: str) -> np.ndarray | None:
        """A read-only memory map of a contiguous, unfiltered dataset, else None (cached,
        with the dataset: an h5py path lookup costs about as much as a mapped patch)."""
        key = (subject, study, name)
        if key not in self._maps:
            ds = self._dataset(subject, study, name)
            self._datasets[key] = ds
            self._maps[key] = _memory_map(ds)
        return self._maps[key]

    def shape(self, subject: str, study: str, name: str) -> tuple[int, ...]:
        return tuple(self._dataset(subject, study, name).shape)


class H5Case(Case):
    """One study group of an :class:`H5Corpus` (reads through the open file)."""

    def __init__(self, corpus: H5Corpus, subject: str, study: str) -> None:
        self.corpus = corpus
        self.subject = subject
        self.study = study
        self.key = f"{subject}/{study}"

    @property
    def metadata(self) -> dict[str, Any]:
        """The study group's attributes (see :meth:`H5Corpus.attrs`)."""
        return self.corpus.attrs(self.subject, self.study)

    def _datasets(self) -> dict[str, str]:
        """Volume name → dataset name, in the published order then the others sorted."""
        present = self.corpus.names(self.subject, self.study)
        out = {VOLUME_NAMES[d]: d for d in VOLUME_NAMES if d in present}
        out.update({d: d for d in present if d not in VOLUME_NAMES})
        return out

    def names(self) -> tuple[str, ...]:
        return tuple(self._datasets())

    def volume(self, name: str) -> Volume:
        datasets = self._datasets()
        if name not in datasets:
            raise self._missing(name)
        return self.corpus.read(self.subject, self.study, datasets[name])

    def source(self, name: str) -> str:
        dataset = self._datasets().get(name, name)
        return f"{self.corpus.root}:/{self.subject}/{self.study}/{dataset}"


def _memory_map(ds: h5py.Dataset) -> np.ndarray | None:
    """Map ``ds`` straight from its file when HDF5 stores it as one plain run of bytes."""
    if ds.chunks is not None or ds.compression is not None or ds.external or ds.size == 0:
        return None
    if ds.dtype.kind not in "biuf":
        return None
    offset = ds.id.get_offset()  # None until written (or when the data is elsewhere)
    path = Path(ds.file.filename)
    if offset is None or not path.is_file():  # e.g. a file object: h5py reads it instead
        return None
    # A plain ndarray view of the map: slicing a np.memmap subclass costs ~0.15 ms more
    # per patch than the copy itself.
    mapped = np.memmap(path, dtype=ds.dtype, mode="r", offset=offset, shape=ds.shape)
    return mapped.view(np.ndarray)


def read_study(path: str | os.PathLike[str], subject: str, study: str) -> dict[str, Volume]:
    """All volumes of one study."""
    with H5Corpus(path) as h5:
        return {n: h5.read(subject, study, n) for n in h5.names(subject, study)}
