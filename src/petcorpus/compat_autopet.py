"""Compat mode (``convert --compat autopet``): the published recipe's five files, re-made.

A conversion, not a format: the files it produces are ordinary autoPET-layout folders
(:mod:`petcorpus.layouts.autopet` writes them, in the dtypes of
:data:`~petcorpus.layouts.autopet.COMPAT_DTYPES`).

The published files were made by lab-midas/TCIA_processing ``tcia_dicom_to_nifti.py``:
``dicom2nifti.convert_directory(reorient=True)`` for CT and PET, SUV =
``(nib.load(PET).get_fdata() * factor).astype(float32)``, SEG = ``pixel_array`` transposed
(2, 1, 0) (and flipped on axis 1 when ImageOrientationPatient[4] == 1) with the PET affine,
CTres = ``nilearn.image.resample_to_img(ct, pet, fill_value=-1024)``. The functions below
reproduce those files from `Volume`s read in DICOM order:

- :func:`to_compat_orientation`: dicom2nifti's reorientation (voxel axes L, A, S).
- :func:`compat_pet_values`: dicom2nifti's rescale (dtype and rounding of the flavour).
- :func:`compat_ct`, :func:`compat_suv`, :func:`compat_ctres`, :func:`compat_seg`.
- :func:`compat_volumes`: all five at once (what ``convert --compat autopet`` calls).

Two flavours, because dicom2nifti changed how it rescales:

``"published"`` (dicom2nifti 2.3.x, pinned in the recipe's requirements.txt, used for the
TCIA release): CT int16, PET float32 = ``float32(stored) * float32(slope) + intercept``
in float32, CTres float32 (nilearn casts int16 to float32).
``"current"`` (dicom2nifti >= 2.4, which rescales with pydicom's modality LUT): CT and PET
float64 = ``float64(stored) * slope + intercept``, CTres float64.
In both, SUV is float32 and SEG uint8.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from petcorpus.errors import GeometryMismatchError, Reason
from petcorpus.layouts.autopet import COMPAT_DTYPES, CompatFlavor
from petcorpus.volume import Volume

__all__ = [
    "compat_ct",
    "compat_ctres",
    "compat_pet_values",
    "compat_seg",
    "compat_suv",
    "compat_volumes",
    "recipe_seg",
    "recover_stored",
    "to_compat_orientation",
]


def _compat_axes(volume: Volume) -> tuple[list[int], list[bool]]:
    """dicom2nifti's choice: which source axis becomes L, A, S and whether it is reversed."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(volume.affine)  # per source axis: (RAS axis, sign)
    order = [0, 0, 0]
    for src_axis, (ras_axis, _) in enumerate(ornt):
        order[int(ras_axis)] = src_axis
    # Target: i increases to the Left (RAS axis 0 negative), j to Anterior, k to Superior.
    target_sign = (-1.0, 1.0, 1.0)
    flips = [bool(ornt[order[r], 1] != target_sign[r]) for r in range(3)]
    return order, flips


def to_compat_orientation(volume: Volume) -> Volume:
    """Reorient like ``dicom2nifti.convert_directory(..., reorient=True)``: axes L, A, S.

    dicom2nifti orders the voxel axes sagittal (i, increasing to the patient's Left),
    coronal (j, to Anterior), axial (k, to Superior); nibabel calls that ``('L', 'A', 'S')``.
    For an axial head-first-supine series read in DICOM order (i = column → L,
    j = row → P, k = slice, ascending z → S) that is a flip of j. The affine is rebuilt the
    way dicom2nifti does it (columns permuted/negated, the new origin is the old affine
    applied to the voxel that becomes index 0), so the result matches dicom2nifti's header
    to the last bit when the input affine does.
    """
    order, flips = _compat_axes(volume)
    arr = np.moveaxis(volume.array, order, [0, 1, 2])
    for axis, flip in enumerate(flips):
        if flip:
            arr = np.flip(arr, axis=axis)
    aff = volume.affine
    new = np.eye(4)
    point = [0, 0, 0, 1]
    for axis in range(3):
        new[:, axis] = aff[:, order[axis]]
        if flips[axis]:
            new[:, axis] = -new[:, axis]
            point[order[axis]] = volume.shape[order[axis]] - 1
    new[:, 3] = np.dot(aff, point)
    return Volume(arr, new)


def recover_stored(
    rescaled: Volume, rescale: Sequence[tuple[float, float]], *, name: str = "PET"
) -> np.ndarray:
    """The stored integers of a series from its rescaled volume (DICOM slice order on k).

    ``rescaled`` holds ``float32(stored * slope + intercept)`` per slice ``k`` (as
    ``load_series`` returns it); for 16-bit stored values the float32 rounding (relative
    6e-8) is far below half a stored step, so ``rint((value - intercept) / slope)`` gives
    the stored value back exactly. Checked: recomputing must give ``rescaled`` bit for bit.
    """
    arr = np.asarray(rescaled.array)
    if len(rescale) != arr.shape[2]:
        raise ValueError(f"{len(rescale)} rescale pairs for {arr.shape[2]} slices")
    slopes = np.array([float(s) for s, _ in rescale], dtype=np.float64)
    inters = np.array([float(b) for _, b in rescale], dtype=np.float64)
    stored = np.rint((arr.astype(np.float64) - inters) / slopes).astype(np.int64)
    again = (stored * slopes + inters).astype(arr.dtype)
    if not np.array_equal(again, arr):
        bad = int(np.count_nonzero(again != arr))
        raise GeometryMismatchError(
            f"{name}: {bad} voxels are not stored * slope + intercept of their slice; "
            "pass the series' own per-slice (RescaleSlope, RescaleIntercept) in slice order",
            reason=Reason.INVALID_VALUE,
        )
    return stored


def compat_pet_values(
    stored: np.ndarray,
    rescale: Sequence[tuple[float, float]],
    flavor: CompatFlavor = "published",
) -> np.ndarray:
    """Rescale stored values (k = slice) the way the flavour's dicom2nifti does.

    ``published``: float32 arithmetic, ``float32(stored) * float32(slope) + float32(inter)``
    (dicom2nifti 2.3 ``do_scaling``); ``current``: ``float64(stored) * slope + intercept``
    (pydicom's ``apply_modality_lut``).
    """
    slopes = np.array([float(s) for s, _ in rescale], dtype=np.float64)
    inters = np.array([float(b) for _, b in rescale], dtype=np.float64)
    if flavor == "current":
        out = stored.astype(np.float64) * slopes
        out += inters
        return out
    if flavor == "published":
        out32 = stored.astype(np.float32) * slopes.astype(np.float32)
        out32 += inters.astype(np.float32)
        return out32
    raise ValueError(f"flavor must be 'published' or 'current', got {flavor!r}")


def compat_ct(ct: Volume, flavor: CompatFlavor = "published") -> Volume:
    """CT.nii.gz of the recipe: reoriented (L, A, S); int16 (published) or float64 (current).

    CT rescale (slope 1, integral intercept) is exact, so HU values are unchanged.
    """
    out = to_compat_orientation(ct)
    return out.with_array(out.array.astype(COMPAT_DTYPES[flavor]["CT"], copy=False))


def compat_suv(pet_compat: Volume, factor: float) -> Volume:
    """SUV.nii.gz of the recipe: ``(PET as float64 * factor).astype(float32)``.

    ``pet_compat`` is the recipe's PET (``compat_pet_values`` reoriented); the factor is the
    recipe's (``suv_factor(..., time_reference="autopet")``; it ignores Units, so a Philips
    CNTS series gets counts x factor, as the recipe does).
    """
    data = np.asarray(pet_compat.array).astype(np.float64) * float(factor)
    return pet_compat.with_array(data.astype(np.float32))


def compat_ctres(
    ct_compat: Volume, pet_compat: Volume, flavor: CompatFlavor = "published"
) -> Volume:
    """CTres.nii.gz of the recipe: nilearn ``resample_to_img(ct, pet, fill_value=-1024)``.

    Cubic B-spline with prefilter (scipy ``order=3``), constant fill -1024; float32 for an
    int16 CT (published), float64 for a float64 CT (current).
    """
    from petcorpus.resample import resample_autopet

    # The recipe resamples the images it loaded back from CT.nii.gz and PET.nii.gz, whose
    # affines the NIfTI header holds in float32: use those, not the exact float64 ones
    # (0.01 HU differences otherwise).
    def as_loaded(vol: Volume) -> Volume:
        return Volume(vol.array, vol.affine.astype(np.float32).astype(np.float64))

    out = resample_autopet(
        as_loaded(ct_compat),
        as_loaded(pet_compat),
        fill=-1024.0,
        dtype=COMPAT_DTYPES[flavor]["CTres"],
    )
    return Volume(out.array, pet_compat.affine)


def compat_seg(mask: Volume, pet_compat: Volume) -> Volume:
    """SEG.nii.gz in compat mode: the lesion mask (placed by position) on the compat PET grid.

    ``mask`` is the union of the SEG's segments on the PET grid in any orientation (e.g.
    ``load_seg(...).union()`` on the DICOM-order PET). It equals the recipe's SEG whenever
    the recipe is right (one segment, one frame per PET slice, frames in slice order); for
    SEGs with omitted or shuffled frames, or several segments, the recipe's array is
    misplaced (or of the wrong shape) and this one is the true mask (see docs/formats.md).
    """
    out = to_compat_orientation(mask)
    if not out.same_grid(pet_compat, atol=1e-4):
        raise GeometryMismatchError(
            f"the mask's grid {out!r} is not the PET grid {pet_compat!r} after reorientation"
        )
    data = (np.asarray(out.array) != 0).astype(np.uint8)
    return Volume(data, pet_compat.affine)


def recipe_seg(seg: Any, pet_compat: Volume) -> Volume:
    """The recipe's SEG literally (for comparison only): frames stacked in stored order.

    ``pixel_array`` (frames, rows, columns) transposed to (columns, rows, frames), flipped
    on axis 1 when the first frame's ImageOrientationPatient[4] is 1, with the PET affine.
    Only correct when the SEG holds exactly one frame per PET slice in ascending order.
    """
    arr = np.transpose(np.asarray(seg.pixel_array), (2, 1, 0))
    iop = seg.PerFrameFunctionalGroupsSequence[0]
    orientation = (
        iop.PlaneOrientationSequence[0].ImageOrientationPatient
        if "PlaneOrientationSequence" in iop
        else seg.SharedFunctionalGroupsSequence[0]
        .PlaneOrientationSequence[0]
        .ImageOrientationPatient
    )
    if orientation[4] == 1:
        arr = np.flip(arr, 1)
    if arr.shape != pet_compat.shape:
        raise GeometryMismatchError(
            f"the recipe's SEG array {arr.shape} does not fit the PET {pet_compat.shape} "
            "(frames omitted or several segments)"
        )
    return Volume(np.ascontiguousarray(arr), pet_compat.affine)


def compat_volumes(
    *,
    ct: Volume,
    pet_rescaled: Volume,
    suv_factor: float,
    seg: Volume | None,
    bqml_factor: float | None = None,
    pet_rescale: Sequence[tuple[float, float]] | None = None,
    flavor: CompatFlavor = "published",
) -> tuple[Volume, Volume, Volume, Volume, Volume | None]:
    """The five files of the published recipe from DICOM-order volumes.

    Parameters
    ----------
    ct : Volume
        CT in HU as read (any orientation, any integer/float dtype).
    pet_rescaled : Volume
        PET as ``load_series`` returns it: ``stored * slope + intercept`` per slice, in the
        series' Units (the recipe does not apply Philips' Bq/ml factor), k = slice order.
    suv_factor : float
        The recipe's factor (``compute_suv(autopet_reference_file(pet_dir),
        time_reference="autopet").suv_bw``).
    seg : Volume or None
        Lesion mask on the PET grid (DICOM order), from :func:`petcorpus.dicom.seg.load_seg`.
    bqml_factor : float, optional
        Ignored (the recipe writes PET in the series' own Units); accepted for symmetry.
    pet_rescale : sequence of (slope, intercept), optional
        Per slice k of ``pet_rescaled``. With it, the stored values are recovered and
        rescaled the flavour's way, so PET and SUV are bit-identical to the recipe's.
        Without it, PET is ``pet_rescaled`` cast to the flavour's dtype (SUV may then differ
        from the recipe by one float32 ulp in some voxels).
    flavor : {"published", "current"}
        dicom2nifti 2.3 (the TCIA release) or >= 2.4 (see the module docstring).

    Returns
    -------
    (ct, pet, suv, ctres, seg)
        In compat orientation and dtypes; ``seg`` None when no mask was given.
    """
    del bqml_factor
    if flavor not in COMPAT_DTYPES:
        raise ValueError(f"flavor must be 'published' or 'current', got {flavor!r}")
    if pet_rescale is not None:
        stored = recover_stored(pet_rescaled, pet_rescale)
        pet_values = pet_rescaled.with_array(compat_pet_values(stored, pet_rescale, flavor))
    else:
        pet_values = pet_rescaled.with_array(
            np.asarray(pet_rescaled.array).astype(COMPAT_DTYPES[flavor]["PET"])
        )
    pet_c = to_compat_orientation(pet_values)
    ct_c = compat_ct(ct, flavor)
    suv_c = compat_suv(pet_c, suv_factor)
    ctres_c = compat_ctres(ct_c, pet_c, flavor)
    seg_c = compat_seg(seg, pet_c) if seg is not None else None
    return ct_c, pet_c, suv_c, ctres_c, seg_c
