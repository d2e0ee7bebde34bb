"""Load one single-frame image series (CT, PET, ...) into a :class:`~petcorpus.volume.Volume`.

Slices are read and decoded in parallel threads (each decoded as soon as it is read, so
the encoded bytes and the volume are never in memory together), sorted along the slice
normal (the cross product of ImageOrientationPatient's row and column directions), checked
(same orientation, rows/columns and pixel spacing; positions on one line along the normal;
uniform spacing, no duplicates) and rescaled per slice: CT to int16 HU, PET to float32 in
the series' Units. CT lands in a SimpleITK image's buffer, which resampling uses as is.

Voxel order is the one DICOM stores and SimpleITK's ImageSeriesReader returns:
``i`` = column, ``j`` = row, ``k`` = ascending position along the normal. The affine is the
one ITK builds: direction columns = row direction, column direction, normal; spacing =
PixelSpacing[1], PixelSpacing[0] and |last − first position| / (n − 1); origin = the first
slice's ImagePositionPatient; then flipped from LPS to RAS.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from os import PathLike
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder, pixel_array
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from petcorpus.dicom.io import check_file, os_error, read_dataset
from petcorpus.dicom.scan import SeriesInfo
from petcorpus.errors import (
    CorruptFileError,
    GeometryMismatchError,
    MissingTagError,
    PetcorpusError,
    Reason,
    SliceGapError,
    UnsupportedError,
    printable,
)
from petcorpus.volume import Volume, lps_to_ras

# check_file, os_error and read_dataset live in petcorpus.dicom.io; importable from here too
__all__ = ["LoadedSeries", "affine_lps", "check_file", "load_series", "os_error", "read_dataset"]

log = logging.getLogger(__name__)

_NATIVE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
#: relative tolerance on the slice spacing (a missing slice doubles it)
_SPACING_RTOL = 0.01
#: orientation cosines must agree within this
_ORIENT_ATOL = 1e-4
#: in-plane offset between consecutive slices (gantry tilt / misstacking), mm
_INPLANE_ATOL = 0.01


@dataclasses.dataclass(frozen=True)
class LoadedSeries:
    """A loaded series: the volume and, in slice order, its headers, SOP UIDs and files."""

    volume: Volume
    datasets: tuple[Dataset, ...]
    sop_instance_uids: tuple[str, ...]
    files: tuple[Path, ...]
    modality: str
    series_uid: str
    #: positions of the slices along the normal (mm, ascending)
    positions: tuple[float, ...]


def _need(ds: Dataset, keyword: str, path: Path) -> object:
    v = ds.get(keyword)
    if v is None or v == "":
        raise MissingTagError(f"{keyword} is missing or empty", path=path)
    return v


def _check_length(ds: Dataset, path: Path) -> None:
    """Native (uncompressed) pixel data must hold Rows x Columns x frames samples."""
    if ds.file_meta.TransferSyntaxUID not in _NATIVE:
        return
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    nbytes = int(ds.Rows) * int(ds.Columns) * frames * spp * int(ds.BitsAllocated) // 8
    if len(ds.PixelData) < nbytes:
        raise CorruptFileError(
            f"PixelData holds {len(ds.PixelData)} bytes, {nbytes} expected (truncated file)",
            path=path,
        )


def _pixels(ds: Dataset, path: Path) -> np.ndarray:
    """Stored values of a single-frame slice, shape (rows, columns)."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise UnsupportedError(
            "multi-frame (enhanced) images are not supported; export single-frame slices",
            path=path,
        )
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise UnsupportedError("colour images are not supported", path=path)
    if "PixelData" not in ds:
        raise CorruptFileError("no PixelData (file truncated?)", path=path)
    ts = ds.file_meta.TransferSyntaxUID
    bits = int(ds.BitsAllocated)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    stored_bits = int(ds.get("BitsStored", bits))
    if ts in _NATIVE and bits in (8, 16, 32) and stored_bits == bits:
        dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
        return np.frombuffer(ds.PixelData, dtype=dtype, count=rows * cols).reshape(rows, cols)
    plugin = _plugin(ts)
    try:
        try:
            arr = pixel_array(ds, decoding_plugin=plugin)
        except Exception:
            if not plugin:
                raise
            log.debug("%s: pylibjpeg failed on %s, trying pydicom's other plugins", path, ts)
            arr = pixel_array(ds)
    except Exception as exc:
        raise CorruptFileError(
            f"cannot decode pixel data ({ts.name}: {type(exc).__name__}: {exc})", path=path
        ) from exc
    if arr.shape != (rows, cols):
        raise CorruptFileError(f"decoded shape {arr.shape} != ({rows}, {cols})", path=path)
    return arr


def _plugin(ts: UID) -> str:
    """``"pylibjpeg"`` where it can decode ``ts`` (our documented choice), else pydicom's pick."""
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        return ""
    return "pylibjpeg" if "pylibjpeg" in decoder.available_plugins else ""


def _float_list(ds: Dataset, keyword: str, n: int, path: Path) -> np.ndarray:
    """A DS/FD multi-value as float64, parsed from the raw bytes when still raw (fast)."""
    elem = ds.get_item(keyword)
    if elem is None or elem.value in (None, b"", ""):
        raise MissingTagError(f"{keyword} is missing or empty", path=path)
    v = elem.value
    try:
        if isinstance(v, bytes) and getattr(elem, "VR", None) in ("DS", None):
            arr = np.array([float(x.strip(b" \x00")) for x in v.split(b"\\")], dtype=np.float64)
        else:
            v = ds[keyword].value
            vals = [v] if isinstance(v, (int, float, str)) else v
            arr = np.array([float(x) for x in vals], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise GeometryMismatchError(f"{keyword} = {v!r} is not numeric", path=path) from exc
    if arr.size != n:
        raise GeometryMismatchError(f"{keyword} has {arr.size} values, {n} expected", path=path)
    if not np.isfinite(arr).all():  # NaN compares false: it would pass every check below
        raise GeometryMismatchError(
            f"{keyword} = {arr.tolist()} is not a finite number",
            path=path,
            reason=Reason.INVALID_VALUE,
        )
    return arr


def _float1(ds: Dataset, keyword: str, default: float, path: Path) -> float:
    """A single DS value as a finite float (``default`` when absent or empty)."""
    elem = ds.get_item(keyword)
    if elem is None or elem.value in (None, b"", ""):
        return default
    v = elem.value
    try:
        value = (
            float(v.split(b"\\")[0].strip(b" \x00"))
            if isinstance(v, bytes)
            else float(ds[keyword].value)
        )
    except (TypeError, ValueError) as exc:
        raise PetcorpusError(f"{keyword} = {v!r} is not a number", path=path) from exc
    if not math.isfinite(value):
        raise PetcorpusError(f"{keyword} = {value} is not a finite number", path=path)
    return value


def affine_lps(
    orientation: np.ndarray, pixel_spacing: np.ndarray, origin: np.ndarray, slice_step: float
) -> np.ndarray:
    """The voxel → LPS mm affine of a stack (ITK's geometry).

    Parameters
    ----------
    orientation : (6,) array
        ImageOrientationPatient: row direction (along a row, i.e. the column index ``i``)
        then column direction (down a column, the row index ``j``).
    pixel_spacing : (2,) array
        PixelSpacing = (row spacing, column spacing): the distance between rows (along ``j``)
        and between columns (along ``i``).
    origin : (3,) array
        ImagePositionPatient of the first slice (centre of its first voxel).
    slice_step : float
        Distance between consecutive slices along the normal (mm, > 0).
    """
    row_dir = orientation[:3]
    col_dir = orientation[3:]
    normal = np.cross(row_dir, col_dir)
    aff = np.eye(4)
    aff[:3, 0] = row_dir * pixel_spacing[1]
    aff[:3, 1] = col_dir * pixel_spacing[0]
    aff[:3, 2] = normal * slice_step
    aff[:3, 3] = origin
    return aff


def _rescale(ds: Dataset, path: Path) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) of one slice, checked (reason INVALID_VALUE).

    Each PET slice carries its own slope: a PET slice without one is refused (MISSING_TAG),
    as is a PET slope below zero (negative activity); other modalities default to the
    identity. A zero slope, or a value that is not a finite number, is refused.
    """
    pet = str(ds.get("Modality", "") or "") == "PT"
    if pet and ds.get("RescaleSlope") in (None, ""):
        raise MissingTagError(
            "(0028,1053) RescaleSlope is missing or empty; each PET slice needs its own",
            path=path,
        )
    slope = _float1(ds, "RescaleSlope", 1.0, path)
    if slope == 0.0 or (pet and slope < 0.0):
        raise PetcorpusError(
            f"(0028,1053) RescaleSlope = {slope:g}: "
            + ("a PET slope must be positive" if pet else "a slope cannot be zero"),
            path=path,
        )
    return slope, _float1(ds, "RescaleIntercept", 0.0, path)


def _decode_into(out: np.ndarray, ds: Dataset, path: Path) -> bool:
    """Decode one slice, rescale it into ``out`` (int16 or float32) and drop its bytes.

    float32: ``stored * slope + intercept`` computed in float64 and rounded once. int16:
    exact integer arithmetic when slope is 1 and the intercept integral, else rounded;
    values outside int16 are clipped. Returns whether any was.
    """
    slope, inter = _rescale(ds, path)
    px = _pixels(ds, path)
    del ds.PixelData  # peak memory: the encoded bytes are not needed any more
    if out.dtype != np.int16:
        t = px * slope  # float64: exact products, rounded once to float32 below
        if inter != 0.0:
            t += inter
        out[...] = t
        return False
    if slope == 1.0 and inter.is_integer():
        lo, hi = int(px.min()), int(px.max())
        if lo + inter >= -32768 and hi + inter <= 32767 and lo >= -32768 and hi <= 32767:
            np.add(px, int(inter), out=out, dtype=np.int16, casting="unsafe")
            return False
        v = px.astype(np.int32) + int(inter)
    else:
        v = np.rint(px * slope + inter)
    clipped = bool(v.min() < -32768 or v.max() > 32767)
    np.clip(v, -32768, 32767, out=out, casting="unsafe")
    return clipped


def _series_path(files: Sequence[Path]) -> Path:
    """What names a whole series in an error: its folder, else (files of many) its first file."""
    parents = {f.parent for f in files}
    return files[0].parent if len(parents) == 1 else files[0]


def _check_on_one_line(
    ipps: np.ndarray, diffs: np.ndarray, normal: np.ndarray, files: Sequence[Path]
) -> None:
    """Consecutive positions must step along the normal of ImageOrientationPatient.

    A tilted CT gantry shifts every slice sideways in proportion to its step along the
    normal (the stack is sheared): reported as GANTRY_TILT with the angle. Sideways offsets
    that are not proportional (misstacked or mixed slices) are a GEOMETRY_MISMATCH.
    """
    inplane = np.diff(ipps, axis=0) - np.outer(diffs, normal)
    if np.max(np.abs(inplane)) <= _INPLANE_ATOL:
        return
    shear = np.median(inplane / diffs[:, None], axis=0)  # sideways mm per mm along the normal
    if np.max(np.abs(inplane - np.outer(diffs, shear))) <= _INPLANE_ATOL:
        angle = math.degrees(math.atan(float(np.linalg.norm(shear))))
        along = float(np.median(diffs))
        raise GeometryMismatchError(
            f"gantry tilt of {angle:.2f}°: consecutive slices step {along:.4f} mm along the "
            f"normal of ImageOrientationPatient and {along * np.linalg.norm(shear):.4f} mm "
            f"sideways (ImagePositionPatient {files[0].name} → {files[1].name}); tilted "
            "series are not resampled: reconstruct without tilt, or convert this series "
            "with dcm2niix, which resamples it",
            path=_series_path(files),
            reason=Reason.GANTRY_TILT,
        )
    a = int(np.argmax(np.max(np.abs(inplane), axis=1)))
    raise GeometryMismatchError(
        f"slice positions are not on one line along the normal of ImageOrientationPatient: "
        f"{ipps[a].tolist()} ({files[a].name}) → {ipps[a + 1].tolist()} "
        f"({files[a + 1].name}) is {np.linalg.norm(inplane[a]):.4f} mm off it",
        path=files[a + 1],
    )


def _spacing_gap(
    pos: np.ndarray, diffs: np.ndarray, files: Sequence[Path]
) -> tuple[int, str] | None:
    """Where the spacing along the normal is not uniform: (index of the gap, what it is)."""
    n = len(pos)
    typical = float(np.median(diffs))
    mean = float(pos[-1] - pos[0]) / (n - 1)
    bad = np.nonzero(np.abs(diffs - typical) > _SPACING_RTOL * typical)[0]
    if not bad.size and abs(mean - typical) <= _SPACING_RTOL * typical:
        return None
    a = int(bad[0]) if bad.size else int(np.argmax(np.abs(diffs - typical)))
    return a, (
        f"slice spacing is not uniform: {diffs[a]:.4f} mm between positions "
        f"{pos[a]:.4f} and {pos[a + 1]:.4f} mm ({files[a].name} → {files[a + 1].name}), "
        f"the other slices are {typical:.4f} mm apart"
    )


def _unreadable_slice(
    unreadable: Sequence[tuple[Path, str]], series_uid: str, gap: str
) -> CorruptFileError:
    """A gap in a series beside files the scan could not read: the files are the cause."""
    (path, why), *more = unreadable
    if not more:
        cause = "this file is probably the missing slice"
    else:
        names = "; ".join(f"{p.name}: {r}" for p, r in more[:3])
        extra = f" and {len(more) - 3} more" if len(more) > 3 else ""
        cause = (
            f"this file and {len(more)} more unreadable there ({names}{extra}) are "
            "probably the missing slices"
        )
    return CorruptFileError(
        f"{why}; series {series_uid}, whose files sit in this folder, has a gap ({gap}): {cause}",
        path=path,
    )


def _series_files(
    series: SeriesInfo | Sequence[str | PathLike[str]] | str | PathLike[str],
) -> list[Path]:
    """The files :func:`load_series` reads (a folder's non-hidden files, sorted)."""
    if isinstance(series, SeriesInfo):
        files = list(series.files)
    elif isinstance(series, (str, PathLike)):
        where = Path(series)
        if where.is_dir():
            files = sorted(
                p for p in where.iterdir() if not p.name.startswith(".") and not p.is_dir()
            )
        else:
            files = [where]  # a single file; read_dataset names it if it is missing
    else:
        files = [Path(p) for p in series]
    if not files:
        folder = series if isinstance(series, (str, PathLike)) else None
        raise PetcorpusError("no files in the series", path=folder, reason=Reason.NO_SERIES)
    return files


def load_series(
    series: SeriesInfo | Sequence[str | PathLike[str]] | str | PathLike[str],
    *,
    workers: int | None = None,
) -> LoadedSeries:
    """Read, check, sort and rescale one image series.

    Parameters
    ----------
    series : SeriesInfo, sequence of paths, or path
        The series' files (any order), or a folder: every file in it (hidden files
        aside) is read as a slice of the one series. A single file is a one-slice series.
    workers : int, optional
        Threads reading and decoding slices (default: the CPU count).

    Returns
    -------
    LoadedSeries
        ``.volume`` is int16 HU for CT, float32 ``stored * RescaleSlope + RescaleIntercept``
        (per slice; Bq/ml for BQML, counts for CNTS) for PET, and for other modalities int16
        when the rescale is integral and every value fits, else float32. CT values outside
        int16 are clipped (with a warning).

    Raises
    ------
    CorruptFileError
        A truncated, zero-byte, unreadable or non-DICOM file (named). Also for a gap in a
        :class:`SeriesInfo` whose folder holds files the scan could not read
        (``series.unreadable``): the first of them is named as the missing slice.
    GeometryMismatchError
        Orientation, rows/columns or pixel spacing differ between slices (the file named),
        or positions are not on one line along the normal; reason GANTRY_TILT (with the
        angle) when every slice is shifted sideways in proportion to its step, as a tilted
        CT gantry does.
    SliceGapError
        Non-uniform spacing (a missing slice) or, with reason DUPLICATE_SLICE, two slices at
        one position; the positions are in the message.
    """
    # files beside the series that the scan could not read (they may be its slices)
    unreadable = series.unreadable if isinstance(series, SeriesInfo) else ()
    files = _series_files(series)
    n_workers = workers or os.cpu_count() or 1

    def read(p: Path) -> Dataset:
        ds = read_dataset(p)
        if "PixelData" not in ds:
            raise CorruptFileError("no PixelData: truncated file, or not an image", path=p)
        for kw in ("Rows", "Columns", "BitsAllocated"):
            _need(ds, kw, p)
        _check_length(ds, p)
        return ds

    # CT and PET have a fixed output dtype, so each slice is decoded as soon as its file is
    # read and its encoded bytes dropped: the series never sits in memory twice. Slices go
    # to their place in the given order (the scan's order is already sorted along the
    # normal; any other order costs one permutation below).
    first = read(files[0])
    rows, cols = int(first.Rows), int(first.Columns)
    modality = str(first.get("Modality", "") or "")
    n = len(files)
    block: np.ndarray | None = None
    if modality == "PT":
        block = np.empty((n, rows, cols), dtype=np.float32)
    elif modality == "CT":
        # CT is resampled onto the PET grid: in a SimpleITK buffer it goes there uncopied.
        from petcorpus.resample import new_image_array

        block = new_image_array((n, rows, cols), np.int16)

    def read_decode(k: int) -> tuple[Dataset, bool]:
        ds = first if k == 0 else read(files[k])
        if block is not None and (int(ds.Rows), int(ds.Columns)) == (rows, cols):
            return ds, _decode_into(block[k], ds, files[k])
        return ds, False

    if n_workers > 1 and n > 1:
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            decoded = list(pool.map(read_decode, range(n)))
    else:
        decoded = [read_decode(k) for k in range(n)]
    dss = [ds for ds, _ in decoded]
    clipped = any(c for _, c in decoded)
    del decoded

    # -- geometry checks ----------------------------------------------------------------------
    f0 = files[0]
    iop0 = _float_list(first, "ImageOrientationPatient", 6, f0)
    ps0 = _float_list(first, "PixelSpacing", 2, f0)
    series_uid = str(first.get("SeriesInstanceUID", "") or "")
    ipps = np.empty((n, 3))
    for k, (ds, p) in enumerate(zip(dss, files, strict=True)):
        iop = _float_list(ds, "ImageOrientationPatient", 6, p)
        if np.max(np.abs(iop - iop0)) > _ORIENT_ATOL:
            raise GeometryMismatchError(
                f"ImageOrientationPatient {iop.tolist()} differs from {iop0.tolist()} "
                f"in {f0.name}: mixed orientations in one series",
                path=p,
            )
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise GeometryMismatchError(
                f"Rows/Columns {int(ds.Rows)}x{int(ds.Columns)} differ from {rows}x{cols} "
                f"in {f0.name}",
                path=p,
            )
        ps = _float_list(ds, "PixelSpacing", 2, p)
        if np.max(np.abs(ps - ps0)) > 1e-4 * max(1.0, float(ps0.max())):
            raise GeometryMismatchError(
                f"PixelSpacing {ps.tolist()} differs from {ps0.tolist()} in {f0.name}", path=p
            )
        if str(ds.get("SeriesInstanceUID", "") or "") != series_uid:
            raise GeometryMismatchError(
                f"SeriesInstanceUID {ds.get('SeriesInstanceUID')} differs from {series_uid} "
                f"in {f0.name}: files of two series",
                path=p,
            )
        ipps[k] = _float_list(ds, "ImagePositionPatient", 3, p)
    normal = np.cross(iop0[:3], iop0[3:])
    pos = ipps @ normal
    order = np.argsort(pos, kind="stable")
    pos = pos[order]
    ipps = ipps[order]
    dss = [dss[i] for i in order]
    files = [files[i] for i in order]
    if block is not None and np.any(order != np.arange(n)):
        block = block[order]

    if n > 1:
        diffs = np.diff(pos)
        for a in range(n - 1):
            if diffs[a] < 1e-3:
                raise SliceGapError(
                    f"two slices at position {pos[a]:.4f} mm along the normal: "
                    f"{files[a].name} and {files[a + 1].name}",
                    path=files[a + 1],
                    reason=Reason.DUPLICATE_SLICE,
                )
        _check_on_one_line(ipps, diffs, normal, files)
        gap = _spacing_gap(pos, diffs, files)
        if gap is not None:
            if unreadable:
                raise _unreadable_slice(unreadable, series_uid, gap[1])
            raise SliceGapError(f"{gap[1]}; a slice is missing?", path=files[gap[0] + 1])
        step = float(np.linalg.norm(ipps[-1] - ipps[0]) / (n - 1))
    else:
        step = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
    if unreadable:
        log.warning(
            "%s: %d unreadable file(s) beside series %s (%s); the series has no gap, so they "
            "are taken not to be its slices",
            printable(str(_series_path(files))),
            len(unreadable),
            series_uid,
            # names that are not UTF-8 as \xNN: a log record must encode (also for pytest-xdist)
            ", ".join(f"{printable(q.name)}: {r}" for q, r in unreadable[:3]),
        )
    aff = affine_lps(iop0, ps0, ipps[0], step)

    if block is None:
        # Other modalities: int16 when every slice's rescale is integral, else float32 —
        # known only now, so the slices are decoded in a second pass.
        # Integral values are decoded exactly (int32) and kept as int16 when they fit.
        rescale = [_rescale(ds, p) for ds, p in zip(dss, files, strict=True)]
        integral = all(s == 1.0 and float(b).is_integer() for s, b in rescale)
        block = np.empty((n, rows, cols), dtype=np.int32 if integral else np.float32)
        for k in range(n):
            _decode_into(block[k], dss[k], files[k])
        if integral:
            fits = block.min() >= -32768 and block.max() <= 32767
            block = block.astype(np.int16 if fits else np.float32)
    if clipped:
        log.warning("%s: rescaled values outside int16 were clipped", files[0].parent)
    affine = lps_to_ras(aff)
    if modality == "CT":  # unless permuted into a plain array above
        from petcorpus.resample import set_image_geometry

        set_image_geometry(block, affine)
    return LoadedSeries(
        volume=Volume(block.transpose(2, 1, 0), affine),
        datasets=tuple(dss),
        sop_instance_uids=tuple(str(ds.get("SOPInstanceUID", "")) for ds in dss),
        files=tuple(files),
        modality=modality,
        series_uid=series_uid,
        positions=tuple(float(x) for x in pos),
    )
