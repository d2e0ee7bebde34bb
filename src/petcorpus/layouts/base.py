"""The common shape of every corpus layout: a :class:`Corpus` iterates :class:`Case` objects.

In the spirit of nnU-Net's ``imageio`` readers (one small interface, one registry) and
nibabel's image classes (one class per format): each layout module (autoPET NIfTI folders,
ENHANCE.PET, HDF5, a flat folder of masks) implements these two classes, and every reader
outside ``layouts/`` (pictures, metrics, organ statistics, the report) goes through them.
No code outside ``layouts/`` knows a layout's file names.

A :class:`Case` has

- ``key``: stable and unique in its corpus, ``"<subject>/<study>"`` for the autoPET and HDF5
  layouts, the four-digit case number (``"0001"``) for ENHANCE.PET, the file stem for a flat
  folder;
- ``metadata``: what the layout stores beside the images (the autoPET sidecar, the HDF5
  study attributes, the ENHANCE spreadsheet rows), a dict;
- volumes by name, read only when asked for: :meth:`Case.names`, :meth:`Case.has`,
  :meth:`Case.volume`. Names are the autoPET file names wherever the content is the same
  (``CT``, ``PET``, ``SUV``, ``CTres``, ``SEG``), whatever the layout stores on disk.

:func:`open_corpus` picks the layout of a path (or takes the one named) from
:data:`LAYOUTS`. A new layout is one module with a :class:`Corpus` subclass and one line in
:data:`LAYOUTS`.
"""

from __future__ import annotations

import abc
import importlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from petcorpus.errors import PetcorpusError, Reason

if TYPE_CHECKING:
    from petcorpus.volume import Volume

__all__ = ["LAYOUTS", "Case", "Corpus", "corpus_class", "open_corpus"]

#: Layout name → ``"module:Class"``, in the order :func:`open_corpus` tries them.
LAYOUTS: Mapping[str, str] = {
    "hdf5": "petcorpus.layouts.hdf5:H5Corpus",
    "enhance": "petcorpus.layouts.enhance:EnhanceCorpus",
    "nnunet": "petcorpus.layouts.nnunet:NnunetDataset",
    "autopet": "petcorpus.layouts.autopet:AutopetCorpus",
    "flat": "petcorpus.layouts.flat:FlatCorpus",
}


class Case(abc.ABC):
    """One case (study) of a corpus: a key, metadata and volumes read on demand."""

    #: ``"<subject>/<study>"``, or the layout's own case id (see the module docstring).
    key: str

    @property
    @abc.abstractmethod
    def metadata(self) -> dict[str, Any]:
        """What the layout stores beside the images ({} when nothing)."""

    @abc.abstractmethod
    def names(self) -> tuple[str, ...]:
        """Names of the volumes this case holds, in the layout's order."""

    def has(self, name: str) -> bool:
        """Whether the case holds the volume ``name``."""
        return name in self.names()

    @abc.abstractmethod
    def volume(self, name: str) -> Volume:
        """Read the volume ``name``.

        Raises
        ------
        PetcorpusError
            The case has no such volume (reason ``NO_SERIES``); ``CorruptFileError`` when
            it cannot be read.
        """

    def source(self, name: str) -> str:
        """Where the volume ``name`` is read from (a path, ``archive!member``, ...), for
        messages."""
        return f"{self.key}:{name}"

    def voxel_ml(self, name: str) -> float:
        """Volume of one voxel of ``name`` in ml, as the layout states it.

        Defaults to the volume's affine; NIfTI layouts return the header's ``pixdim[1] *
        pixdim[2] * pixdim[3] / 1000`` in float32, as the autoPET challenge scripts compute
        it, without reading the image data.
        """
        return self.volume(name).voxel_volume_ml

    def _missing(self, name: str) -> PetcorpusError:
        shown = ", ".join(self.names()) or "nothing"
        return PetcorpusError(
            f"case {self.key} has no {name} (it has {shown})",
            path=self.source(name),
            reason=Reason.NO_SERIES,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key!r})"


class Corpus(abc.ABC):
    """A corpus on disk: iterate its cases, or get one by key."""

    #: The layout's name in :data:`LAYOUTS`.
    layout: ClassVar[str]
    #: The folder or file the corpus was opened from.
    root: Path

    @classmethod
    @abc.abstractmethod
    def sniff(cls, path: Path) -> bool:
        """Whether ``path`` looks like this layout (cheap: names and magic bytes only)."""

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Corpus:
        """Open ``path`` as this layout."""
        return cls(path)  # type: ignore[call-arg]

    @abc.abstractmethod
    def cases(self) -> Iterator[Case]:
        """Every case, sorted by key."""

    def keys(self) -> list[str]:
        """The keys of every case, sorted."""
        return [c.key for c in self.cases()]

    def case(self, key: str) -> Case:
        """The case ``key``.

        Raises
        ------
        PetcorpusError
            No such case (reason ``NO_SERIES``).
        """
        for c in self.cases():
            if c.key == key:
                return c
        raise PetcorpusError(f"no case {key} in the corpus", path=self.root,
                             reason=Reason.NO_SERIES)  # fmt: skip

    def close(self) -> None:
        """Release open files (nothing for folder layouts)."""
        return None

    def __enter__(self) -> Corpus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def corpus_class(layout: str) -> type[Corpus]:
    """The :class:`Corpus` subclass registered for ``layout`` in :data:`LAYOUTS`."""
    if layout not in LAYOUTS:
        raise PetcorpusError(
            f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}",
            reason=Reason.INVALID_VALUE,
        )
    module, _, name = LAYOUTS[layout].partition(":")
    cls: type[Corpus] = getattr(importlib.import_module(module), name)
    return cls


def open_corpus(path: str | os.PathLike[str], layout: str | None = None) -> Corpus:
    """Open a corpus, its layout named or found by :meth:`Corpus.sniff` (in :data:`LAYOUTS`
    order: an HDF5 file, an ENHANCE.PET root, an nnU-Net raw dataset, autoPET study
    folders, a flat folder).

    Raises
    ------
    PetcorpusError
        ``path`` does not exist, or no layout recognises it (reason ``NO_SERIES``).
    """
    p = Path(path)
    if layout is not None:
        return corpus_class(layout).open(p)
    if not p.exists():
        raise PetcorpusError("no such file or folder", path=p, reason=Reason.NO_SERIES)
    for name in LAYOUTS:
        cls = corpus_class(name)
        if cls.sniff(p):
            return cls.open(p)
    raise PetcorpusError(
        f"not a corpus in a layout petcorpus reads ({', '.join(LAYOUTS)})",
        path=p,
        reason=Reason.NO_SERIES,
    )
