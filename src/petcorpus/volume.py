"""`Volume`: a 3-D array in NIfTI voxel order plus a 4x4 RAS+ affine in millimetres.

This is the one type every stage passes around. The convention is nibabel's:
``affine @ [i, j, k, 1]`` gives the RAS+ world position (mm) of the *centre* of voxel
``array[i, j, k]``. SimpleITK and DICOM use LPS+; the flip between the two lives in
:func:`lps_to_ras` and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from os import PathLike
from typing import Any, cast

import nibabel as nib
import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from petcorpus.errors import GeometryMismatchError

__all__ = ["LPS_TO_RAS", "Volume", "VolumeStream", "lps_to_ras"]

#: Multiplying an LPS affine on the left by this gives the RAS affine (and back: it is
#: its own inverse). DICOM and ITK are LPS+, NIfTI/nibabel RAS+.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
LPS_TO_RAS.setflags(write=False)


def lps_to_ras(affine: npt.ArrayLike) -> np.ndarray:
    """Convert a 4x4 affine between LPS+ and RAS+ (the map is an involution).

    >>> lps_to_ras(np.eye(4))[:3, :3].diagonal().tolist()
    [-1.0, -1.0, 1.0]
    """
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


def _checked_affine(affine: npt.ArrayLike) -> np.ndarray:
    aff = np.array(affine, dtype=np.float64, copy=True)
    if aff.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {aff.shape}")
    if not np.all(np.isfinite(aff)):
        raise ValueError("affine contains NaN or infinite values")
    if not np.allclose(aff[3], [0, 0, 0, 1]):
        raise ValueError(f"affine's last row must be [0, 0, 0, 1], got {aff[3].tolist()}")
    if abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise ValueError("affine is singular: a voxel axis has zero length or two are parallel")
    aff.setflags(write=False)
    return aff


class Volume:
    """A 3-D image: voxel array in NIfTI (i, j, k) order and a RAS+ affine in mm.

    Parameters
    ----------
    array : (I, J, K) array-like
        Voxel values. Kept as given (no copy) so large volumes are not duplicated.
    affine : (4, 4) array-like
        Voxel index → RAS+ mm. Copied and made read-only.

    Examples
    --------
    >>> v = Volume(np.zeros((4, 5, 6), np.int16), np.diag([2.0, 2.0, 3.0, 1.0]))
    >>> v.shape, v.spacing.tolist(), v.orientation
    ((4, 5, 6), [2.0, 2.0, 3.0], ('R', 'A', 'S'))
    """

    __slots__ = ("_affine", "_array")

    def __init__(self, array: npt.ArrayLike, affine: npt.ArrayLike) -> None:
        arr = np.asarray(array)
        if arr.ndim != 3:
            raise ValueError(f"a Volume is 3-D, got an array of shape {arr.shape}")
        self._array = arr
        self._affine = _checked_affine(affine)

    # -- plain data -------------------------------------------------------------------------
    @property
    def array(self) -> np.ndarray:
        """Voxel values, indexed ``[i, j, k]``."""
        return self._array

    @property
    def affine(self) -> np.ndarray:
        """Read-only 4x4 voxel → RAS+ mm affine."""
        return self._affine

    @property
    def affine_lps(self) -> np.ndarray:
        """The same affine in DICOM/ITK's LPS+ convention."""
        return lps_to_ras(self._affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        i, j, k = self._array.shape
        return (i, j, k)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._array.dtype

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along i, j, k in mm (the column norms of the affine)."""
        return np.sqrt(np.sum(self._affine[:3, :3] ** 2, axis=0))

    @property
    def direction(self) -> np.ndarray:
        """Unit vectors of the voxel axes in RAS+ (columns)."""
        return self._affine[:3, :3] / self.spacing

    @property
    def orientation(self) -> tuple[str, str, str]:
        """Axis codes (nibabel's ``aff2axcodes``), e.g. ``('L', 'P', 'S')``."""
        codes = nib.aff2axcodes(self._affine)
        return (str(codes[0]), str(codes[1]), str(codes[2]))

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(abs(np.linalg.det(self._affine[:3, :3])) / 1000.0)

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.4g}" for s in self.spacing)
        return (
            f"Volume(shape={self.shape}, dtype={self.dtype}, spacing=({sp}) mm, "
            f"orientation={''.join(self.orientation)})"
        )

    def with_array(self, array: npt.ArrayLike) -> Volume:
        """A new Volume on the same grid with other voxel values."""
        arr = np.asarray(array)
        if arr.shape != self.shape:
            raise GeometryMismatchError(
                f"array shape {arr.shape} does not match the grid {self.shape}"
            )
        return Volume(arr, self._affine)

    # -- geometry ---------------------------------------------------------------------------
    def voxel_to_world(self, ijk: npt.ArrayLike) -> np.ndarray:
        """Map voxel indices (..., 3) to RAS+ mm."""
        pts = np.asarray(ijk, dtype=np.float64)
        return pts @ self._affine[:3, :3].T + self._affine[:3, 3]

    def world_to_voxel(self, xyz: npt.ArrayLike) -> np.ndarray:
        """Map RAS+ mm points (..., 3) to (fractional) voxel indices."""
        pts = np.asarray(xyz, dtype=np.float64)
        inv = np.linalg.inv(self._affine)
        return pts @ inv[:3, :3].T + inv[:3, 3]

    def same_grid(self, other: Volume, atol: float = 1e-4) -> bool:
        """True when ``other`` has this shape and an affine equal within ``atol`` mm."""
        return self.shape == other.shape and bool(
            np.allclose(self._affine, other._affine, rtol=0.0, atol=atol)
        )

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """RAS+ min and max corners over all voxel centres."""
        corners = np.array(
            [
                [i, j, k]
                for i in (0, self.shape[0] - 1)
                for j in (0, self.shape[1] - 1)
                for k in (0, self.shape[2] - 1)
            ],
            dtype=np.float64,
        )
        world = self.voxel_to_world(corners)
        return world.min(axis=0), world.max(axis=0)

    # -- nibabel ----------------------------------------------------------------------------
    @classmethod
    def from_nifti(cls, source: str | PathLike[str] | nib.Nifti1Image) -> Volume:
        """Read a NIfTI file (or take a loaded image) with its stored dtype and scaling.

        Integer data without scaling keep their dtype; data with ``scl_slope`` are read as
        nibabel's scaled float array.
        """
        img = cast(
            "nib.Nifti1Image",
            source if isinstance(source, nib.spatialimages.SpatialImage) else nib.load(source),
        )
        if len(img.shape) != 3:
            raise ValueError(f"{getattr(img, 'get_filename', lambda: '')()}: not 3-D: {img.shape}")
        hdr = img.header
        slope, inter = hdr.get_slope_inter() if hasattr(hdr, "get_slope_inter") else (None, None)
        if slope in (None, 1.0) and inter in (None, 0.0):
            array = np.asanyarray(img.dataobj)
        else:
            array = img.get_fdata(dtype=np.float32)
        return cls(array, img.affine)

    def to_nifti(self, dtype: npt.DTypeLike | None = None) -> nib.Nifti1Image:
        """Return a NIfTI-1 image with qform and sform both set (code 1, scanner) and mm units."""
        arr = self._array if dtype is None else self._array.astype(dtype, copy=False)
        img = nib.Nifti1Image(arr, self._affine)
        img.set_qform(self._affine, code=1)
        img.set_sform(self._affine, code=1)
        img.header.set_xyzt_units(xyz="mm", t="sec")
        img.header.set_data_dtype(arr.dtype)
        return img

    # -- SimpleITK --------------------------------------------------------------------------
    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Volume:
        """Take a 3-D SimpleITK image (LPS+, array ``[z, y, x]``)."""
        if image.GetDimension() != 3:
            raise ValueError(f"SimpleITK image must be 3-D, got {image.GetDimension()}-D")
        spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
        direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
        affine_lps = np.eye(4)
        affine_lps[:3, :3] = direction * spacing
        affine_lps[:3, 3] = image.GetOrigin()
        array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
        return cls(array, lps_to_ras(affine_lps))

    def sitk_geometry(self) -> tuple[list[float], list[float], list[float]]:
        """SimpleITK's spacing, direction (row-major 3x3) and origin of this grid (LPS+)."""
        aff = self.affine_lps
        spacing = self.spacing
        return spacing.tolist(), (aff[:3, :3] / spacing).ravel().tolist(), aff[:3, 3].tolist()

    def to_sitk(self) -> sitk.Image:
        """Return a SimpleITK image with origin, spacing and direction in LPS+.

        Resampling is :func:`petcorpus.resample.resample_to` (a free function, as nibabel's
        ``processing.resample_from_to``).
        """
        arr = self._array
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8)
        image = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
        spacing, direction, origin = self.sitk_geometry()
        image.SetSpacing(spacing)
        image.SetDirection(direction)
        image.SetOrigin(origin)
        return image

    # -- construction ---------------------------------------------------------------------
    @staticmethod
    def stack_affine(
        spacing: Sequence[float], origin: Sequence[float], direction: npt.ArrayLike | None = None
    ) -> np.ndarray:
        """Build a RAS+ affine from spacing (mm), origin (RAS+ mm) and direction columns."""
        d = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
        aff = np.eye(4)
        aff[:3, :3] = d * np.asarray(spacing, dtype=np.float64)
        aff[:3, 3] = origin
        return aff


class VolumeStream:
    """A volume that is produced slab by slab along ``k``, for writers that never hold it.

    Parameters
    ----------
    shape : (I, J, K)
        Grid of the whole volume.
    affine : (4, 4) array-like
        Voxel index → RAS+ mm, as for `Volume`.
    dtype : dtype
        dtype of every slab.
    slabs : callable
        Returns an iterator of ``(I, J, k1 - k0)`` arrays covering ``k = 0 .. K-1`` in
        order. Each call starts the production again (a stream can be read more than once).

    Examples
    --------
    >>> parts = [np.zeros((2, 2, 2), np.int16), np.ones((2, 2, 1), np.int16)]
    >>> s = VolumeStream((2, 2, 3), np.eye(4), np.int16, lambda: iter(parts))
    >>> s.to_volume().array[0, 0].tolist()
    [0, 0, 1]
    """

    __slots__ = ("_affine", "_dtype", "_shape", "_slabs")

    def __init__(
        self,
        shape: Sequence[int],
        affine: npt.ArrayLike,
        dtype: npt.DTypeLike,
        slabs: Callable[[], Iterator[np.ndarray]],
    ) -> None:
        if len(shape) != 3:
            raise ValueError(f"a VolumeStream is 3-D, got shape {tuple(shape)}")
        i, j, k = (int(n) for n in shape)
        self._shape = (i, j, k)
        self._affine = _checked_affine(affine)
        self._dtype = np.dtype(dtype)
        self._slabs = slabs

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    @property
    def affine(self) -> np.ndarray:
        return self._affine

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._dtype

    def __repr__(self) -> str:
        return f"VolumeStream(shape={self._shape}, dtype={self._dtype})"

    def slabs(self) -> Iterator[np.ndarray]:
        """The slabs in ``k`` order, each checked against the grid and the dtype."""
        i, j, k = self._shape
        done = 0
        for slab in self._slabs():
            if slab.ndim != 3 or slab.shape[:2] != (i, j) or slab.dtype != self._dtype:
                raise ValueError(
                    f"slab of shape {slab.shape} and dtype {slab.dtype} does not fit "
                    f"{self!r} at k={done}"
                )
            done += slab.shape[2]
            if done > k:
                raise ValueError(f"slabs run past k={k} of {self!r}")
            yield slab
        if done != k:
            raise ValueError(f"slabs end at k={done}, {self!r} has {k}")

    def to_volume(self) -> Volume:
        """Assemble the slabs into one `Volume` (a single slab is used as it is)."""
        out: np.ndarray | None = None
        k0 = 0
        for slab in self.slabs():
            if k0 == 0 and slab.shape[2] == self._shape[2]:
                return Volume(slab, self._affine)
            if out is None:
                out = np.empty(self._shape, dtype=self._dtype, order="F")
            out[:, :, k0 : k0 + slab.shape[2]] = slab
            k0 += slab.shape[2]
        if out is None:  # K == 0 cannot be a Volume grid, but keep the error explicit
            raise ValueError(f"{self!r} produced no slabs")
        return Volume(out, self._affine)
