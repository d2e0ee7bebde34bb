"""Reading NIfTI files for the folder layouts (autoPET, flat): one place for the errors."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np

from petcorpus.errors import CorruptFileError, PetcorpusError
from petcorpus.nifti import read_nifti
from petcorpus.volume import Volume

__all__ = ["header_voxel_ml", "load_nifti"]


def _image(path: Path) -> nib.Nifti1Image:
    try:
        return cast("nib.Nifti1Image", nib.load(str(path)))
    except Exception as exc:  # nibabel raises many kinds for truncated/invalid files
        raise CorruptFileError(f"cannot read NIfTI: {exc}", path=path) from exc


def load_nifti(path: Path) -> Volume:
    """The file as a :class:`Volume` (stored dtype, :func:`petcorpus.nifti.read_nifti`); an
    unreadable file is a :class:`~petcorpus.errors.CorruptFileError` naming it."""
    try:
        return read_nifti(path)
    except PetcorpusError:
        raise
    except Exception as exc:  # nibabel, gzip and numpy raise many kinds for damaged files
        raise CorruptFileError(f"cannot read NIfTI: {exc}", path=path) from exc


def header_voxel_ml(path: Path) -> float:
    """``pixdim[1] * pixdim[2] * pixdim[3] / 1000`` in the header's float32, as the autoPET
    challenge scripts compute the voxel volume (only the header is read)."""
    pix = np.asarray(_image(path).header["pixdim"], dtype=np.float32)
    return float(pix[1] * pix[2] * pix[3] / np.float32(1000))
