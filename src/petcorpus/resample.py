"""Resampling a `Volume` onto another grid (SimpleITK by default, scipy for autoPET compat).

Free functions over volumes, as nibabel's ``processing.resample_from_to``: the `Volume`
class knows nothing of resampling, and this module imports it, never the other way round.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from petcorpus.volume import Volume, VolumeStream

__all__ = [
    "SLAB",
    "image_array",
    "new_image_array",
    "resample_autopet",
    "resample_sitk",
    "resample_stream",
    "resample_to",
    "set_image_geometry",
    "sitk_image",
]

_INTERPOLATORS = {
    "nearest": sitk.sitkNearestNeighbor,
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
}


#: Output slices per SimpleITK call when resampling slab by slab (linear, nearest): a slab
#: of a 400 x 400 PET grid is ~10 MB of float32, written out while it is still in cache,
#: and no whole resampled volume is ever allocated.
SLAB = 16

_SITK_PIXEL = {
    np.dtype(np.uint8): sitk.sitkUInt8,
    np.dtype(np.int8): sitk.sitkInt8,
    np.dtype(np.uint16): sitk.sitkUInt16,
    np.dtype(np.int16): sitk.sitkInt16,
    np.dtype(np.uint32): sitk.sitkUInt32,
    np.dtype(np.int32): sitk.sitkInt32,
    np.dtype(np.float32): sitk.sitkFloat32,
    np.dtype(np.float64): sitk.sitkFloat64,
}


def resample_to(
    source: Volume,
    target: Volume,
    interpolation: Literal["nearest", "linear", "bspline"] = "linear",
    fill: float = 0.0,
    dtype: npt.DTypeLike | None = None,
    compat: Literal["autopet"] | None = None,
    threads: int | None = None,
) -> Volume:
    """Resample ``source`` onto ``target``'s grid (nibabel's ``resample_from_to`` for Volumes).

    Parameters
    ----------
    source : Volume
        The voxels to resample.
    target : Volume
        The grid (shape + affine) to sample on; its voxel values are not used.
    interpolation : {"nearest", "linear", "bspline"}
        Interpolator (SimpleITK, multi-threaded). ``bspline`` is cubic.
    fill : float
        Value outside the source's field of view (e.g. -1024 for CT).
    dtype : dtype, optional
        Output dtype; default float32 for linear/bspline, the input dtype for nearest.
    compat : {"autopet"}, optional
        Reproduce the published autoPET recipe (:func:`resample_autopet`: nilearn
        ``resample_to_img`` with ``interpolation="continuous"``, scipy.ndimage cubic
        B-spline with prefilter, constant fill, float32). ``interpolation`` is then ignored.
    threads : int, optional
        SimpleITK threads (default: all cores); the compat path is single-threaded.

    Examples
    --------
    >>> v = Volume(np.arange(8, dtype=np.int16).reshape(2, 2, 2), np.eye(4))
    >>> resample_to(v, v, interpolation="nearest").array.ravel().tolist()
    [0, 1, 2, 3, 4, 5, 6, 7]
    """
    if compat == "autopet":
        return resample_autopet(source, target, fill=fill)
    if compat is not None:
        raise ValueError(f"unknown compat mode {compat!r}; use 'autopet' or None")
    return resample_sitk(
        source, target, interpolation=interpolation, fill=fill, dtype=dtype, threads=threads
    )


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
    The voxels are those of :func:`resample_stream` (the same slabs, assembled).
    """
    return resample_stream(
        source, target, interpolation=interpolation, fill=fill, dtype=dtype, threads=threads
    ).to_volume()


def resample_stream(
    source: Volume,
    target: Volume,
    interpolation: Literal["nearest", "linear", "bspline"] = "linear",
    fill: float = 0.0,
    dtype: npt.DTypeLike | None = None,
    threads: int | None = None,
    slab: int = SLAB,
) -> VolumeStream:
    """:func:`resample_sitk` as a :class:`~petcorpus.volume.VolumeStream`: the target grid
    is resampled ``slab`` slices at a time, when the stream is read.

    A writer that compresses each slab as it comes (:func:`petcorpus.nifti.write_nifti`)
    never holds the resampled volume whole. B-spline resampling is one slab (SimpleITK
    computes the spline coefficients of the whole source on every call).
    """
    if interpolation not in _INTERPOLATORS:
        raise ValueError(
            f"interpolation must be one of {sorted(_INTERPOLATORS)}, got {interpolation!r}"
        )
    if slab < 1:
        raise ValueError(f"slab must be >= 1, got {slab}")
    out_dtype = np.dtype(
        dtype if dtype is not None else source.dtype if interpolation == "nearest" else np.float32
    )
    ni, nj, nk = target.shape
    step = nk if interpolation == "bspline" else slab
    aff = target.affine_lps
    spacing, direction, _ = target.sitk_geometry()

    def slabs() -> Iterator[np.ndarray]:
        src = sitk_image(source)
        # The output grid is set directly (no reference image: that would copy the target's
        # voxels), and interpolation reads the source in its own type and writes float32.
        resampler = sitk.ResampleImageFilter()
        resampler.SetOutputSpacing(spacing)
        resampler.SetOutputDirection(direction)
        resampler.SetInterpolator(_INTERPOLATORS[interpolation])
        resampler.SetDefaultPixelValue(float(fill))
        if threads is not None:
            resampler.SetNumberOfThreads(max(1, int(threads)))
        if interpolation != "nearest":
            resampler.SetOutputPixelType(sitk.sitkFloat32)
        for k0 in range(0, nk, step):
            k1 = min(nk, k0 + step)
            resampler.SetSize([int(ni), int(nj), int(k1 - k0)])
            resampler.SetOutputOrigin((aff @ np.array([0.0, 0.0, k0, 1.0]))[:3].tolist())
            out = resampler.Execute(src)
            yield image_array(out).transpose(2, 1, 0).astype(out_dtype, copy=False)

    return VolumeStream(target.shape, target.affine, out_dtype, slabs)


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


def new_image_array(shape: tuple[int, int, int], dtype: npt.DTypeLike) -> np.ndarray:
    """A zeroed ``(z, y, x)`` array whose memory is a SimpleITK image's pixel buffer.

    A `Volume` over it (transposed to ``(i, j, k)``) goes to SimpleITK without a copy
    (:func:`sitk_image`): :func:`petcorpus.dicom.load_series` reads CT into one, so the CT
    is not duplicated for resampling.
    """
    dt = np.dtype(dtype)
    if dt not in _SITK_PIXEL:
        raise ValueError(f"no SimpleITK pixel type for {dt}")
    image = sitk.Image([int(shape[2]), int(shape[1]), int(shape[0])], _SITK_PIXEL[dt])
    return image_array(image)


def set_image_geometry(array: np.ndarray, affine: npt.ArrayLike) -> bool:
    """Give the SimpleITK image behind ``array`` (from :func:`new_image_array`) the geometry
    of the RAS+ ``affine`` of a `Volume` over ``array.transpose(2, 1, 0)``.

    Returns False (and does nothing) when ``array`` is not such a buffer. Call it once,
    before the image is shared: SimpleITK copies the pixels of an image that another
    reference holds when its geometry changes, which would leave ``array`` behind.
    """
    owner = _image_owner(array)
    if owner is None:
        return False
    spacing, direction, origin = Volume(array.transpose(2, 1, 0), affine).sitk_geometry()
    owner.image.SetSpacing(spacing)
    owner.image.SetDirection(direction)
    owner.image.SetOrigin(origin)
    return True


def sitk_image(volume: Volume) -> sitk.Image:
    """``volume`` as a SimpleITK image (LPS geometry), for reading only.

    When the volume's array is the whole buffer of a SimpleITK image with the volume's
    geometry (:func:`new_image_array`, :func:`set_image_geometry`), that image is returned
    and shares the volume's memory: do not modify it. Otherwise this is
    :meth:`Volume.to_sitk` (a copy).
    """
    owner = _image_owner(volume.array.transpose(2, 1, 0))
    if owner is not None:
        spacing, direction, origin = volume.sitk_geometry()
        image = owner.image
        if (
            np.allclose(image.GetSpacing(), spacing, rtol=0, atol=1e-9)
            and np.allclose(image.GetDirection(), direction, rtol=0, atol=1e-12)
            and np.allclose(image.GetOrigin(), origin, rtol=0, atol=1e-9)
        ):
            return image
    return volume.to_sitk()


def _image_owner(zyx: np.ndarray) -> _ImageBuffer | None:
    """The `_ImageBuffer` whose whole buffer ``zyx`` is, in SimpleITK's own layout."""
    base: object = zyx.base  # numpy's stubs say ndarray | None; any object can own memory
    while isinstance(base, np.ndarray):
        base = base.base
    if not isinstance(base, _ImageBuffer) or not zyx.flags.c_contiguous:
        return None
    interface = base.__array_interface__
    same = (
        zyx.__array_interface__["data"][0] == interface["data"][0]
        and zyx.shape == tuple(interface["shape"])
        and zyx.dtype == np.dtype(interface["typestr"])
    )
    return base if same else None


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
