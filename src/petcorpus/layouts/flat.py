"""A flat folder of masks, one NIfTI file per case: ``<root>/<case>.nii.gz`` (or ``.nii``).

The shape of nnU-Net's ``labelsTr`` and of most prediction folders. Each case holds one
volume, named ``SEG`` (the case's mask); its key is the file name without the extension.
:func:`mask_cases` reads a folder of masks in either this layout or the autoPET one, as
``petcorpus evaluate`` takes them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from petcorpus.errors import PetcorpusError, Reason
from petcorpus.layouts._nifti import header_voxel_ml, load_nifti
from petcorpus.layouts.autopet import AutopetCase, AutopetCorpus, file_name
from petcorpus.layouts.base import Case, Corpus
from petcorpus.volume import Volume

__all__ = ["MASK", "FlatCase", "FlatCorpus", "find_prediction", "mask_cases", "mask_name"]

#: The name of a flat case's one volume.
MASK = "SEG"
_SUFFIXES = (".nii.gz", ".nii")


def _stem(path: Path) -> str:
    return path.name.removesuffix(".gz").removesuffix(".nii")


class FlatCase(Case):
    """One NIfTI file as a case with a single volume, ``SEG``; no metadata."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.key = _stem(self.path)

    @property
    def metadata(self) -> dict[str, Any]:
        return {}

    def names(self) -> tuple[str, ...]:
        return (MASK,) if self.path.is_file() else ()

    def volume(self, name: str) -> Volume:
        if name != MASK:
            raise self._missing(name)
        return load_nifti(self.path)

    def source(self, name: str) -> str:
        return str(self.path)

    def voxel_ml(self, name: str) -> float:
        if name != MASK:
            raise self._missing(name)
        return header_voxel_ml(self.path)


class FlatCorpus(Corpus):
    """Every ``*.nii.gz`` / ``*.nii`` file directly in ``root``, sorted by file name; of
    ``x.nii`` and ``x.nii.gz`` the latter is the case ``x``."""

    layout = "flat"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise PetcorpusError("not a folder", path=self.root, reason=Reason.NO_SERIES)

    @classmethod
    def sniff(cls, path: Path) -> bool:
        return path.is_dir() and bool(_files(path))

    def cases(self) -> Iterator[FlatCase]:
        files: dict[str, Path] = {}
        for f in _files(self.root):
            files[_stem(f)] = f
        for f in files.values():
            yield FlatCase(f)


def _files(root: Path) -> list[Path]:
    return sorted(p for suffix in _SUFFIXES for p in root.glob(f"*{suffix}") if p.is_file())


def mask_name(case: Case) -> str:
    """The mask of a case in a folder of masks: ``SEG``, else ``PRED`` (autoPET layout)."""
    return "PRED" if case.has("PRED") and not case.has("SEG") else "SEG"


def mask_cases(folder: str | os.PathLike[str]) -> dict[str, Case]:
    """Case key → case of a folder of masks (ground truth or predictions).

    The autoPET layout when any ``<subject>/<study>/`` holds a ``SEG`` or ``PRED`` mask
    (keys ``<subject>/<study>``; :func:`mask_name` says which), else the flat layout (key =
    file name without extension).

    Raises
    ------
    PetcorpusError
        ``folder`` is not a folder, or holds no mask (reason ``NO_SERIES``).
    """
    root = Path(folder)
    if not root.is_dir():
        raise PetcorpusError("not a folder", path=root, reason=Reason.INVALID_VALUE)
    studies = [c for c in AutopetCorpus(root).cases() if c.has("SEG") or c.has("PRED")]
    # Cases with a SEG first, then those with only a PRED, each sorted by key.
    studies.sort(key=lambda c: (not c.has("SEG"), c.key))
    cases: dict[str, Case] = {c.key: c for c in studies}
    if not cases:
        cases = {c.key: c for c in FlatCorpus(root).cases()}
    if not cases:
        raise PetcorpusError(
            f"no masks found: expected <subject>/<study>/{file_name('SEG')} or "
            f"<case>{_SUFFIXES[0]}",
            path=root,
            reason=Reason.NO_SERIES,
        )
    return cases


def find_prediction(
    folder: str | os.PathLike[str],
    subject: str,
    study: str,
    *,
    aliases: Sequence[str] = (),
) -> tuple[Case, str] | None:
    """The predicted mask of one study in a prediction folder, as ``(case, volume name)``.

    Tried in order: ``<folder>/<subject>/<study>/`` holding a ``PRED``, then a ``SEG``
    (autoPET layout), then the flat files ``<subject>_<study>`` (the case id of an nnU-Net
    export, :func:`petcorpus.pipeline.export_nnunet`, and of nnU-Net's own autoPET
    conversion), the ``aliases`` (the case ids of the challenge release the study was
    imported from: :func:`petcorpus.layouts.nnunet.release_case_ids`), ``<study>``,
    ``<subject>`` (``.nii.gz``, then ``.nii``). None when there is none.
    """
    root = Path(folder)
    study_case = AutopetCase(root / subject / study)
    for name in ("PRED", "SEG"):
        if study_case.has(name):
            return study_case, name
    for stem in dict.fromkeys((f"{subject}_{study}", *aliases, study, subject)):
        for suffix in _SUFFIXES:
            path = root / f"{stem}{suffix}"
            if path.is_file():
                return FlatCase(path), MASK
    return None
