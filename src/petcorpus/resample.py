"""Resampling a `Volume` onto another grid (SimpleITK by default, scipy for autoPET compat)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

if TYPE_CHECKING:
    from petcorpus.volume import Volume

__all__ = ["image_array", "resample_autopet", "resample_sitk"]

_INTERPOLATORS = {
    "nearest": sitk.sitkNearestNeighbor,
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
}


def resample_sitk(
    source: Volume,
    target: Volume,
    interpolation: Literal["nearest", "linear", "bspline"] = "linear",
    fill: float = 0.0,
    dtype: npt.DTypeLike | None = None,
    threads: int | None = None,
) -> Volume:
    """Resample ``source`` onto ``target``'s grid with SimpleITK.

    ``threads`` caps SimpleITK's threads (default: its global default, all cores); a batch
    running one study per core passes 1 so that N workers use N cores, not N x cores.
    """
    from petcorpus.volume import Volume

    if interpolation not in _INTERPOLATORS:
        raise ValueError(
            f"interpolation must be one of {sorted(_INTERPOLATORS)}, got {interpolation!r}"
        )
    if dtype is None:
        dtype = source.dtype if interpolation == "nearest" else np.float32
    src = source.to_sitk()
    # The output grid is set directly (no reference image: that would copy the target's
    # voxels), and interpolation reads the source in its own type and writes float32.
    aff = target.affine_lps
    spacing = target.spacing
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(n) for n in target.shape])
    resampler.SetOutputSpacing(spacing.tolist())
    resampler.SetOutputOrigin(aff[:3, 3].tolist())
    resampler.SetOutputDirection((aff[:3, :3] / spacing).ravel().tolist())
    resampler.SetInterpolator(_INTERPOLATORS[interpolation])
    resampler.SetDefaultPixelValue(float(fill))
    if threads is not None:
        resampler.SetNumberOfThreads(max(1, int(threads)))
    if interpolation != "nearest":
        resampler.SetOutputPixelType(sitk.sitkFloat32)
    out = resampler.Execute(src)
    del src
    array = image_array(out).transpose(2, 1, 0).astype(dtype, copy=False)
    return Volume(array, target.affine)


class _ImageBuffer:
    """A SimpleITK image's pixel buffer as a numpy array interface that owns the image."""

    def __init__(self, image: sitk.Image) -> None:
        self.image = image  # the array's base is this object, so the image lives as long
        interface = dict(sitk.GetArrayViewFromImage(image).__array_interface__)
        interface["data"] = (interface["data"][0], False)  # MakeUnique: the buffer is ours
        self.__array_interface__ = interface


def image_array(image: sitk.Image) -> np.ndarray:
    """The pixels of ``image`` as a writeable (z, y, x) array, without copying them.

    ``sitk.GetArrayFromImage`` copies (another whole volume of fresh memory);
    ``GetArrayViewFromImage`` is only valid while the caller keeps the image. This array
    keeps the image alive itself.
    """
    return np.asarray(_ImageBuffer(image))


def resample_autopet(
    source: Volume,
    target: Volume,
    fill: float = -1024.0,
    dtype: npt.DTypeLike = np.float32,
) -> Volume:
    """The published autoPET CTres recipe: cubic B-spline (scipy, with prefilter), float32.

    nilearn's ``resample_to_img(ct, pet, fill_value=-1024)`` maps each target voxel through
    ``inv(source.affine) @ target.affine`` and interpolates with ``scipy.ndimage`` order 3
    on the data; this does the same without nilearn. scipy prefilters (cubic B-spline
    coefficients) and interpolates in float64 whatever the input dtype and casts to the
    output dtype at the end, so ``dtype`` only sets the final rounding: nilearn's output dtype
    is the input's for float data (float64 for a dicom2nifti >= 2.4 CT) and float32 for an
    int16 CT (dicom2nifti 2.3, the published files). Equal to nilearn's ``resample_to_img``
    within 1e-3 HU (tests/test_compat_autopet.py); the remaining difference comes from
    nilearn reading the affines back from the float32 NIfTI header.
    """
    from scipy import ndimage

    from petcorpus.volume import Volume

    transform = np.linalg.inv(source.affine) @ target.affine
    data = np.asarray(source.array)
    if data.dtype.kind not in "f":
        data = data.astype(np.float32)  # exact for int16 HU; scipy works in float64 anyway
    linear = transform[:3, :3]
    if np.allclose(linear, np.diag(np.diag(linear))):
        matrix: np.ndarray = np.diag(linear)
    else:
        matrix = linear
    out = ndimage.affine_transform(
        data,
        matrix,
        offset=transform[:3, 3],
        output_shape=target.shape,
        output=np.dtype(dtype),
        order=3,
        mode="constant",
        cval=float(fill),
    )
    return Volume(out, target.affine)
