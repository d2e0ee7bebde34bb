"""A PyTorch ``Dataset`` of random training patches from a corpus (``petcorpus[torch]``).

:class:`PatchDataset` reads any corpus :func:`~petcorpus.layouts.base.open_corpus` opens:
the HDF5 file (fast: the contiguous layout, ``build --hdf5-layout contiguous``, is
memory-mapped so a 96³ patch is one strided copy; the compressed layout reads the 4³ chunks
a patch overlaps) or the NIfTI folders (each sample decompresses its case's files, as
MONAI's ``LoadImaged`` does). Each item is a MONAI-style dict::

    {"ct": (1, X, Y, Z) float32, "suv": (1, X, Y, Z) float32, "label": (1, X, Y, Z) uint8,
     "meta": {"case": "<subject>/<study>", "origin": (3,) int64, "foreground": bool,
              "index": int, "shape": (3,) int64, "affine": (4, 4) float64}}

or, with ``stack=True``, ``{"image": (2, X, Y, Z), "label": ..., "meta": ...}`` (channels in
the order of ``images``: CT, SUV). ``meta["origin"]`` is the patch's first voxel in the
volume (negative where the volume is smaller than the patch and the patch is padded: CT
with -1024 HU, SUV and label with 0); ``meta["affine"]`` maps the patch's voxels to RAS+ mm.

Sampling follows nnU-Net (``oversample_foreground_percent``): a share of the patches is
centred on a random lesion voxel (kept inside the volume where it fits), the rest placed
uniformly. Which samples are foreground is a low-discrepancy (golden-ratio) sequence over
the index, so any run of N samples has ``round(N * share)`` of them within a few, and each
case gets its share too; a case without lesions gives a uniform patch (``meta["foreground"]``
False). Lesion voxels are those of the label (up to 10,000 sampled per case, as nnU-Net
samples class locations), found once per case and worker process.

Everything random is derived from ``(seed, epoch, index)``: the same seed gives the same
patches whatever the number of workers or their order; :meth:`PatchDataset.set_epoch`
draws new ones. No file handle is opened before the first item of each process and none
is pickled, so ``DataLoader(num_workers=N)`` works with fork, forkserver and spawn.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petcorpus._optional import import_optional
from petcorpus.datalists import Part, _split_root, select_cases
from petcorpus.errors import GeometryMismatchError, PetcorpusError, Reason
from petcorpus.layouts.base import Corpus, open_corpus
from petcorpus.splits import Split, read_split

# The install hint (and the pinned version's check) when torch is missing or too old.
import_optional("torch", extra="torch", purpose="petcorpus.torch")
import torch  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

__all__ = ["MAX_FOREGROUND_VOXELS", "PAD_VALUES", "PatchDataset"]

#: Lesion voxels kept per case to draw foreground centres from (nnU-Net samples 10,000).
MAX_FOREGROUND_VOXELS = 10_000
#: Value outside the volume, per volume name (others: 0).
PAD_VALUES: dict[str, float] = {"CT": -1024.0, "CTres": -1024.0}
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


class _Reader:
    """Shapes, blocks and affines of a corpus's volumes: HDF5 through ``read_block``,
    other layouts through :meth:`Case.volume` (the last case's volumes kept)."""

    def __init__(self, corpus: Corpus) -> None:
        from petcorpus.layouts.hdf5 import VOLUME_NAMES, H5Corpus

        self.corpus = corpus
        self.h5 = corpus if isinstance(corpus, H5Corpus) else None
        self._datasets = {v: k for k, v in VOLUME_NAMES.items()}
        self._cached: tuple[str, dict[str, Any]] = ("", {})

    def _volume(self, key: str, name: str) -> Any:
        if self._cached[0] != key:
            self._cached = (key, {})
        vols = self._cached[1]
        if name not in vols:
            vols[name] = self.corpus.case(key).volume(name)
        return vols[name]

    def _h5(self, key: str, name: str) -> tuple[str, str, str]:
        subject, _, study = key.partition("/")
        return subject, study, self._datasets.get(name, name)

    def shape(self, key: str, name: str) -> tuple[int, ...]:
        if self.h5 is not None:
            return self.h5.shape(*self._h5(key, name))
        return tuple(self._volume(key, name).shape)

    def block(self, key: str, name: str, slices: tuple[slice, ...]) -> np.ndarray:
        if self.h5 is not None:
            return np.asarray(self.h5.read_block(*self._h5(key, name), slices))
        return np.array(np.asarray(self._volume(key, name).array)[slices])

    def affine(self, key: str, name: str) -> np.ndarray:
        if self.h5 is not None:
            subject, study, ds = self._h5(key, name)
            aff = self.h5.file[f"{subject}/{study}/{ds}"].attrs.get("affine")
            return np.full((4, 4), np.nan) if aff is None else np.asarray(aff, np.float64)
        return np.asarray(self._volume(key, name).affine, dtype=np.float64)


class PatchDataset(Dataset[dict[str, Any]]):
    """Random patches of (CT, SUV, label) from a corpus, nnU-Net-style foreground sampling.

    Parameters
    ----------
    source : path
        An HDF5 corpus file or a corpus folder (anything :func:`open_corpus` opens).
    patch_size : (int, int, int)
        Patch shape in voxels.
    oversample_foreground : float
        Share of patches centred on a lesion voxel, 0-1 (nnU-Net's default 0.33).
    seed : int
        Seed of every random choice (with the epoch and the index).
    length : int, optional
        Samples per epoch (default: one per case); sample ``i`` is from case ``i % n``.
    cases : sequence of str, optional
        Case keys to use (default: those of ``part``/``fold`` of the split, or all).
    fold : int, optional
    part : {"all", "train", "val", "test"}
        Which part of the split (:func:`petcorpus.datalists.select_cases`); anything but
        ``"all"`` reads ``splits.json`` from the corpus folder (or the HDF5 file's folder)
        unless ``splits`` is given.
    splits : Split, optional
    stack : bool
        One ``"image"`` tensor with a channel per image instead of one key per image.
    images : sequence of (key, volume name)
        The images (default CT on the PET grid as ``ct``, SUV as ``suv``).
    label : str
        The lesion mask's volume name.
    layout : str, optional
        The layout's name when :func:`open_corpus` should not guess.

    Examples
    --------
    >>> ds = PatchDataset("corpus/corpus.h5", patch_size=(96, 96, 96))  # doctest: +SKIP
    >>> loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)  # doctest: +SKIP
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        patch_size: Sequence[int] = (96, 96, 96),
        oversample_foreground: float = 0.33,
        seed: int = 0,
        length: int | None = None,
        cases: Sequence[str] | None = None,
        fold: int | None = None,
        part: Part = "all",
        splits: Split | None = None,
        stack: bool = False,
        images: Sequence[tuple[str, str]] = (("ct", "CTres"), ("suv", "SUV")),
        label: str = "SEG",
        layout: str | None = None,
    ) -> None:
        super().__init__()
        self.patch_size = tuple(int(s) for s in patch_size)
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be three positive integers, got {patch_size}")
        if not 0.0 <= oversample_foreground <= 1.0:
            raise ValueError(
                f"oversample_foreground must be in [0, 1], got {oversample_foreground}"
            )
        self.source = Path(source)
        self.layout = layout
        self.oversample_foreground = float(oversample_foreground)
        self.seed = int(seed)
        self.stack = stack
        self.images = tuple((str(k), str(n)) for k, n in images)
        self.label = label
        self.epoch = 0
        with open_corpus(self.source, layout) as corpus:  # listed here, reopened per process
            if cases is not None:
                self.keys = [corpus.case(k).key for k in cases]
            else:
                if part != "all" and splits is None:
                    splits = read_split(_split_root(corpus))
                chosen = select_cases(corpus, splits, fold=fold, part=part)
                self.keys = [c.key for c, _ in chosen]
        if not self.keys:
            raise PetcorpusError(
                f"no case to sample from (part={part!r}, fold={fold})",
                path=self.source,
                reason=Reason.NO_SERIES,
            )
        self.length = len(self.keys) if length is None else int(length)
        self._corpus: Corpus | None = None
        self._reader: _Reader | None = None
        self._pid: int | None = None
        self._foreground: dict[str, np.ndarray] = {}

    # -- process-local state ---------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_corpus=None, _reader=None, _pid=None)  # never pickle a file handle
        return state

    def _open(self) -> _Reader:
        if self._reader is None or self._pid != os.getpid():
            # A forked worker inherits the parent's objects: open its own file instead.
            self._corpus = open_corpus(self.source, self.layout)
            self._reader = _Reader(self._corpus)
            self._pid = os.getpid()
        return self._reader

    def close(self) -> None:
        """Close this process's file (reopened on the next item)."""
        if self._corpus is not None and self._pid == os.getpid():
            self._corpus.close()
        self._corpus = self._reader = self._pid = None

    def set_epoch(self, epoch: int) -> None:
        """Draw other patches (before creating the epoch's workers)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    # -- sampling ------------------------------------------------------------------------

    def foreground_voxels(self, key: str) -> np.ndarray:
        """Flat indices of the lesion voxels of case ``key`` that centres are drawn from
        (all of them, or :data:`MAX_FOREGROUND_VOXELS` sampled with the seed), sorted."""
        if key not in self._foreground:
            reader = self._open()
            shape = reader.shape(key, self.label)
            mask = reader.block(key, self.label, tuple(slice(0, n) for n in shape))
            idx = np.flatnonzero(mask)
            if idx.size > MAX_FOREGROUND_VOXELS:
                rng = np.random.default_rng([self.seed, zlib.crc32(key.encode())])
                idx = np.sort(rng.choice(idx, MAX_FOREGROUND_VOXELS, replace=False))
            self._foreground[key] = idx
        return self._foreground[key]

    def is_foreground_sample(self, index: int) -> bool:
        """Whether sample ``index`` (this epoch) is centred on a lesion (if its case has
        one): ``(offset + index * golden ratio) mod 1 < oversample_foreground``."""
        offset = np.random.default_rng([self.seed, self.epoch, 0x0F0F]).random()
        return bool((offset + index * _GOLDEN) % 1.0 < self.oversample_foreground)

    def _shape(self, key: str) -> tuple[int, int, int]:
        reader = self._open()
        names = [n for _, n in self.images] + [self.label]
        shapes = {n: reader.shape(key, n) for n in names}
        shape = shapes[self.label]
        if len(shape) != 3 or any(s != shape for s in shapes.values()):
            shown = ", ".join(f"{n} {s}" for n, s in shapes.items())
            raise GeometryMismatchError(
                f"case {key}: the volumes are not on one 3-D grid ({shown})", path=self.source
            )
        return (int(shape[0]), int(shape[1]), int(shape[2]))

    def origin(self, index: int) -> tuple[str, tuple[int, int, int], bool]:
        """Case key, patch origin and whether it is a foreground patch, for sample ``index``."""
        if not 0 <= index < self.length:
            raise IndexError(f"sample {index} of {self.length}")
        key = self.keys[index % len(self.keys)]
        shape = self._shape(key)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        lo = [min(0, n - p) for n, p in zip(shape, self.patch_size, strict=True)]
        hi = [max(0, n - p) for n, p in zip(shape, self.patch_size, strict=True)]
        fg = self.foreground_voxels(key) if self.is_foreground_sample(index) else None
        if fg is not None and fg.size:
            centre = np.unravel_index(int(fg[rng.integers(fg.size)]), shape)
            origin = [
                int(np.clip(c - p // 2, a, b))
                for c, p, a, b in zip(centre, self.patch_size, lo, hi, strict=True)
            ]
            return key, (origin[0], origin[1], origin[2]), True
        o = [int(rng.integers(a, b + 1)) for a, b in zip(lo, hi, strict=True)]
        return key, (o[0], o[1], o[2]), False

    # -- reading -------------------------------------------------------------------------

    def _crop(
        self, key: str, name: str, origin: Sequence[int], shape: Sequence[int]
    ) -> np.ndarray:
        reader = self._open()
        src = tuple(
            slice(max(o, 0), min(o + p, n))
            for o, p, n in zip(origin, self.patch_size, shape, strict=True)
        )
        if any(s.stop <= s.start for s in src):
            raise ValueError(f"patch at {tuple(origin)} lies outside the volume {tuple(shape)}")
        block = reader.block(key, name, src)
        if block.shape == self.patch_size:
            return block
        out = np.full(self.patch_size, PAD_VALUES.get(name, 0), dtype=block.dtype)
        dst = tuple(slice(s.start - o, s.stop - o) for s, o in zip(src, origin, strict=True))
        out[dst] = block
        return out

    def read_patch(
        self, key: str, origin: Sequence[int], *, index: int = -1, foreground: bool = False
    ) -> dict[str, Any]:
        """The item for the patch of case ``key`` at ``origin`` (what ``__getitem__``
        returns for a drawn origin)."""
        shape = self._shape(key)
        origin = [int(o) for o in origin]
        arrays = {k: self._crop(key, n, origin, shape) for k, n in self.images}
        mask = self._crop(key, self.label, origin, shape)
        affine = self._open().affine(key, self.label).copy()
        affine[:3, 3] = affine[:3, :3] @ np.asarray(origin, np.float64) + affine[:3, 3]
        item: dict[str, Any] = {}
        tensors = {k: torch.from_numpy(np.asarray(a, np.float32)[None]) for k, a in arrays.items()}
        if self.stack:
            item["image"] = torch.cat(list(tensors.values()), dim=0)
        else:
            item.update(tensors)
        item["label"] = torch.from_numpy(np.asarray(mask, np.uint8)[None])
        item["meta"] = {
            "case": key,
            "origin": torch.tensor(origin, dtype=torch.int64),
            "foreground": foreground,
            "index": index,
            "shape": torch.tensor(shape, dtype=torch.int64),
            "affine": torch.from_numpy(affine),
        }
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        key, origin, fg = self.origin(int(index))
        return self.read_patch(key, origin, index=int(index), foreground=fg)
