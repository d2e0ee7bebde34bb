"""DICOM SEG → label map or binary masks on the grid of a reference image.

:func:`load_seg` reads a Segmentation (BINARY or FRACTIONAL) with highdicom and puts every
frame where it belongs on the reference grid, **by position**, never by frame index: SEG
frames may be stored in any order, and writers usually omit frames without content.

Placement of one frame
    1. Its slice: the index ``k`` of the source image it references (``Derivation Image
       Sequence``) in ``reference_sop_uids``, when given; otherwise from its
       ImagePositionPatient.
    2. Its pixels: ImagePositionPatient, the row/column directions (ImageOrientationPatient)
       and PixelSpacing, mapped into the reference's voxel indices with
       :meth:`Volume.world_to_voxel`. The frame origin must land on an integer voxel and the
       row/column steps on unit voxel steps (within :data:`VOXEL_TOLERANCE` voxels): the SEG
       must be on the reference grid, though its in-plane axes may be flipped or swapped
       relative to the reference's voxel axes. When a frame carries both a source
       reference and a position, the two must agree.
    3. A frame without a position (rare) is placed by its source image alone, assuming the
       reference voxel axes are (column, row, slice) as :func:`load_series` returns them.

Values
    BINARY frames are 0/1. FRACTIONAL frames (0..MaximumFractionalValue) are thresholded:
    a voxel belongs to the segment when its fraction is **>= 0.5**. Pixels of one segment
    written twice (two frames at one position) are combined with OR. A segment without any
    non-zero frame gives an all-zero mask (the published negative autoPET studies carry one).

Several segments
    ``SegResult.masks`` always holds one uint8 0/1 mask per segment number. A label map
    (``SegResult.labels``: voxel value = segment number, 0 = background) is only a faithful
    summary when no voxel belongs to two segments; when segments overlap, ``mode="auto"``
    returns the masks and ``labels=None`` (``overlapping=True``), and ``mode="labelmap"``
    raises, because a label map would silently drop voxels of all but one segment.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydicom.dataset import Dataset

from petcorpus.errors import (
    CorruptFileError,
    GeometryMismatchError,
    PetcorpusError,
    Reason,
    SegReferenceError,
)
from petcorpus.volume import Volume

__all__ = ["VOXEL_TOLERANCE", "SegResult", "load_seg"]

log = logging.getLogger(__name__)

#: How far (in voxels) a frame's pixel centres may be from the reference's voxel centres.
VOXEL_TOLERANCE = 0.01


@dataclasses.dataclass(frozen=True)
class SegResult:
    """A DICOM SEG placed on a reference grid.

    Attributes
    ----------
    labels : Volume or None
        Label map on the reference grid: 0 background, else the segment number (uint8, or
        uint16 beyond 255 segments). None when segments overlap (``mode="auto"``) or with
        ``mode="masks"``.
    masks : dict[int, Volume]
        One uint8 0/1 mask per segment number, on the reference grid.
    segments : list of (int, str)
        Segment numbers and labels, in segment-number order.
    overlapping : bool
        True when some voxel belongs to more than one segment.
    referenced_series_uid : str or None
        The series the SEG references (ReferencedSeriesSequence), if it says.
    segmentation_type : str
        ``"BINARY"`` or ``"FRACTIONAL"``.
    """

    labels: Volume | None
    masks: dict[int, Volume]
    segments: list[tuple[int, str]]
    overlapping: bool
    referenced_series_uid: str | None
    segmentation_type: str = "BINARY"

    def union(self) -> Volume:
        """The uint8 0/1 mask of voxels in any segment (e.g. "lesion" for autoPET).

        With one segment this is that segment's mask itself, not a copy.
        """
        masks = list(self.masks.values())
        if len(masks) == 1:  # the usual lesion SEG: the one mask is the union
            return masks[0]
        out = masks[0].array.copy(order="K")
        for m in masks[1:]:
            np.bitwise_or(out, m.array, out=out)
        return masks[0].with_array(out)


def _read(seg: str | PathLike[str] | Dataset) -> tuple[Dataset, str]:
    if isinstance(seg, Dataset):
        name = str(getattr(seg, "filename", "") or f"SEG {getattr(seg, 'SOPInstanceUID', '?')}")
        return seg, name
    import pydicom
    from pydicom.errors import InvalidDicomError

    from petcorpus.dicom.io import check_file, os_error

    path = Path(seg)
    check_file(path)  # zero bytes, not a regular file, unreadable: named with the OS error
    try:
        return pydicom.dcmread(path), str(path)
    except OSError as exc:
        raise CorruptFileError(f"unreadable: {os_error(exc)}", path=path) from exc
    except (InvalidDicomError, EOFError, ValueError) as exc:
        raise CorruptFileError(f"cannot read the DICOM SEG: {exc}", path=path) from exc


def _first(ds: Any, *keywords: str) -> Any:
    """Walk nested one-item sequences: ``_first(ds, "PlanePositionSequence", "...")``."""
    cur = ds
    for kw in keywords:
        if cur is None or kw not in cur:
            return None
        cur = cur[kw].value
        if (
            isinstance(cur, Sequence)
            and not isinstance(cur, str | bytes)
            and kw.endswith("Sequence")
        ):
            if len(cur) == 0:
                return None
            cur = cur[0]
    return cur


def _frame_attr(per_frame: Dataset | None, shared: Dataset | None, *path: str) -> Any:
    value = _first(per_frame, *path) if per_frame is not None else None
    if value is None and shared is not None:
        value = _first(shared, *path)
    return value


def _source_uids(frame: Dataset | None) -> list[str]:
    uids: list[str] = []
    if frame is None or "DerivationImageSequence" not in frame:
        return uids
    for der in frame.DerivationImageSequence:
        for src in der.get("SourceImageSequence", []):
            uid = src.get("ReferencedSOPInstanceUID")
            if uid:
                uids.append(str(uid))
    return uids


def _check_references(
    ds: Dataset,
    name: str,
    reference_series_uid: str | None,
    frame_of_reference_uid: str | None,
) -> str | None:
    seg_for = str(ds.get("FrameOfReferenceUID", "") or "")
    if frame_of_reference_uid and seg_for and seg_for != frame_of_reference_uid:
        raise SegReferenceError(
            f"the SEG's FrameOfReferenceUID {seg_for} is not the image's "
            f"{frame_of_reference_uid}: it segments another acquisition",
            path=name,
        )
    series = [
        str(item.get("SeriesInstanceUID", ""))
        for item in ds.get("ReferencedSeriesSequence", [])
        if item.get("SeriesInstanceUID")
    ]
    if reference_series_uid and series and reference_series_uid not in series:
        raise SegReferenceError(
            f"the SEG references series {', '.join(series)}, not the image series "
            f"{reference_series_uid}",
            path=name,
        )
    return series[0] if series else None


@dataclasses.dataclass(frozen=True)
class _Placement:
    """Where a (rows, cols) frame goes: fixed axis/index and the in-plane axis mapping."""

    slice_axis: int
    slice_index: int
    col_axis: int
    col_sign: int
    col_start: int
    row_axis: int
    row_sign: int
    row_start: int


def _unit_step(vec: np.ndarray) -> tuple[int, int] | None:
    """(axis, sign) if ``vec`` is ± a unit voxel step along one axis, else None."""
    axis = int(np.argmax(np.abs(vec)))
    sign = 1 if vec[axis] > 0 else -1
    expected = np.zeros(3)
    expected[axis] = sign
    if np.max(np.abs(vec - expected)) > VOXEL_TOLERANCE:
        return None
    return axis, sign


def _geometric_placement(
    reference: Volume,
    ipp_lps: np.ndarray,
    iop: np.ndarray,
    spacing: np.ndarray,
    name: str,
    frame_no: int,
) -> _Placement:
    flip = np.array([-1.0, -1.0, 1.0])
    origin = reference.world_to_voxel(ipp_lps * flip)
    along_row = reference.world_to_voxel((ipp_lps + iop[:3] * spacing[1]) * flip) - origin
    down_col = reference.world_to_voxel((ipp_lps + iop[3:] * spacing[0]) * flip) - origin
    col_step, row_step = _unit_step(along_row), _unit_step(down_col)
    if col_step is None or row_step is None or col_step[0] == row_step[0]:
        raise GeometryMismatchError(
            f"frame {frame_no}: the SEG's orientation {iop.tolist()} / pixel spacing "
            f"{spacing.tolist()} does not match the reference grid (one frame pixel must "
            f"be one voxel): resample the SEG or use the image it was drawn on",
            path=name,
        )
    rounded = np.rint(origin)
    if np.max(np.abs(origin - rounded)) > VOXEL_TOLERANCE:
        raise GeometryMismatchError(
            f"frame {frame_no}: ImagePositionPatient {ipp_lps.tolist()} falls between "
            f"voxels of the reference grid (voxel {np.round(origin, 3).tolist()})",
            path=name,
        )
    slice_axis = ({0, 1, 2} - {col_step[0], row_step[0]}).pop()
    return _Placement(
        slice_axis=slice_axis,
        slice_index=int(rounded[slice_axis]),
        col_axis=col_step[0],
        col_sign=col_step[1],
        col_start=int(rounded[col_step[0]]),
        row_axis=row_step[0],
        row_sign=row_step[1],
        row_start=int(rounded[row_step[0]]),
    )


def _paste(target: np.ndarray, frame: np.ndarray, p: _Placement, name: str, frame_no: int) -> None:
    rows, cols = frame.shape
    index: list[Any] = [None, None, None]
    index[p.slice_axis] = p.slice_index
    ranges = {}
    for axis, sign, start, n in (
        (p.col_axis, p.col_sign, p.col_start, cols),
        (p.row_axis, p.row_sign, p.row_start, rows),
    ):
        lo, hi = (start, start + n - 1) if sign > 0 else (start - n + 1, start)
        ranges[axis] = (lo, hi)
        index[axis] = slice(lo, hi + 1)
    for axis, (lo, hi) in [(p.slice_axis, (p.slice_index, p.slice_index)), *ranges.items()]:
        if lo < 0 or hi >= target.shape[axis]:
            raise GeometryMismatchError(
                f"frame {frame_no} lies outside the reference grid {target.shape} "
                f"(voxels {lo}..{hi} on axis {axis})",
                path=name,
            )
    # Arrange the (rows, cols) plane in the order of the two in-plane target axes.
    plane = frame if p.row_axis < p.col_axis else frame.T
    first_sign, second_sign = (
        (p.row_sign, p.col_sign) if p.row_axis < p.col_axis else (p.col_sign, p.row_sign)
    )
    if first_sign < 0:
        plane = plane[::-1, :]
    if second_sign < 0:
        plane = plane[:, ::-1]
    view = target[tuple(index)]
    np.bitwise_or(view, plane, out=view)


def load_seg(
    seg: str | PathLike[str] | Dataset,
    reference: Volume,
    *,
    reference_sop_uids: Sequence[str] | None = None,
    reference_series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    mode: Literal["auto", "labelmap", "masks"] = "auto",
) -> SegResult:
    """Place a DICOM SEG on the grid of ``reference`` (the image it segments).

    Parameters
    ----------
    seg : path or pydicom Dataset
        The Segmentation instance (BINARY or FRACTIONAL; any transfer syntax pydicom
        decodes).
    reference : Volume
        The grid to place it on (e.g. the PET or CT `Volume` from ``load_series``).
    reference_sop_uids : sequence of str, optional
        SOPInstanceUID of the reference's slice ``k`` at index ``k``; frames are then
        placed on the slice of the image they reference.
    reference_series_uid : str, optional
        The reference's SeriesInstanceUID; a SEG referencing other series is refused.
    frame_of_reference_uid : str, optional
        The reference's FrameOfReferenceUID; a SEG in another frame of reference is refused.
    mode : {"auto", "labelmap", "masks"}
        ``auto``: label map unless segments overlap (then masks only); ``labelmap``: raise
        if segments overlap; ``masks``: masks only.

    Returns
    -------
    SegResult

    Raises
    ------
    SegReferenceError
        The SEG's frame of reference, referenced series or source images are not the
        reference's (the message names the SEG file and both UIDs).
    GeometryMismatchError
        A frame is not on the reference grid (off-grid position, other orientation or
        pixel spacing, outside the volume).
    CorruptFileError
        Not a readable DICOM Segmentation.
    """
    import highdicom as hd

    if mode not in ("auto", "labelmap", "masks"):
        raise ValueError(f"mode must be 'auto', 'labelmap' or 'masks', got {mode!r}")
    ds, name = _read(seg)
    if str(ds.get("Modality", "")) != "SEG":
        raise CorruptFileError(f"not a DICOM SEG (Modality {ds.get('Modality')!r})", path=name)
    referenced_series = _check_references(ds, name, reference_series_uid, frame_of_reference_uid)
    try:
        # copy=True: highdicom converts the dataset's class in place otherwise.
        # A dataset read here is ours: highdicom may adopt it instead of deep-copying every
        # per-frame item (a caller's Dataset is copied, never changed).
        hseg = hd.seg.Segmentation.from_dataset(ds, copy=not isinstance(seg, str | PathLike))
        frames = np.asarray(hseg.pixel_array)
    except (AttributeError, KeyError, ValueError, TypeError, NotImplementedError) as exc:
        raise CorruptFileError(f"cannot decode the DICOM SEG: {exc}", path=name) from exc
    seg_type = str(hseg.segmentation_type.value)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.shape[0] != n_frames:
        raise CorruptFileError(
            f"{frames.shape[0]} decoded frames but NumberOfFrames is {n_frames}", path=name
        )
    if seg_type == "FRACTIONAL":
        max_value = float(ds.get("MaximumFractionalValue", 255) or 255)
        frames = (frames.astype(np.float64) >= 0.5 * max_value).astype(np.uint8)
    elif frames.dtype != np.uint8 or int(ds.get("BitsAllocated", 1) or 1) != 1:
        frames = np.not_equal(frames, 0).view(np.uint8)
    # else: 1-bit BINARY frames come unpacked as 0/1 uint8 already.

    segments = [
        (int(n), str(hseg.get_segment_description(int(n)).segment_label))
        for n in sorted(hseg.segment_numbers)
    ]
    # Fortran order, like the images: a frame is then one contiguous plane, and the mask
    # is written to NIfTI without a transposing copy.
    masks_arr = {n: np.zeros(reference.shape, dtype=np.uint8, order="F") for n, _ in segments}
    sop_index = (
        {str(uid): k for k, uid in enumerate(reference_sop_uids)} if reference_sop_uids else {}
    )
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence", []))
    if len(per_frame) != n_frames:
        raise CorruptFileError(
            f"{len(per_frame)} per-frame functional groups for {n_frames} frames", path=name
        )
    matched_sources = 0
    for f, group in enumerate(per_frame):
        number = _frame_attr(
            group, shared, "SegmentIdentificationSequence", "ReferencedSegmentNumber"
        )
        if number is None or int(number) not in masks_arr:
            raise CorruptFileError(f"frame {f + 1}: no valid ReferencedSegmentNumber", path=name)
        ipp = _frame_attr(group, shared, "PlanePositionSequence", "ImagePositionPatient")
        iop = _frame_attr(group, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        if iop is None:
            iop = ds.get("ImageOrientationPatient")
        spacing = _frame_attr(group, shared, "PixelMeasuresSequence", "PixelSpacing")
        sources = _source_uids(group)
        k_src = next((sop_index[u] for u in sources if u in sop_index), None)
        if sop_index and sources and k_src is not None:
            matched_sources += 1
        if ipp is not None and iop is not None and spacing is not None:
            placement = _geometric_placement(
                reference,
                np.array([float(x) for x in ipp]),
                np.array([float(x) for x in iop]),
                np.array([float(x) for x in spacing]),
                name,
                f + 1,
            )
            if k_src is not None and (placement.slice_axis != 2 or placement.slice_index != k_src):
                raise GeometryMismatchError(
                    f"frame {f + 1} references slice {k_src} of the image but its position "
                    f"is on slice {placement.slice_index} (axis {placement.slice_axis})",
                    path=name,
                )
        elif k_src is not None:
            placement = _Placement(2, k_src, 0, 1, 0, 1, 1, 0)
        else:
            raise GeometryMismatchError(
                f"frame {f + 1} has neither a position (ImagePositionPatient) nor a source "
                f"image among the reference's SOP instances: cannot place it",
                path=name,
            )
        _paste(masks_arr[int(number)], frames[f], placement, name, f + 1)

    if sop_index and not referenced_series:
        # No ReferencedSeriesSequence to check: the source images must be ours.
        any_sources = any(_source_uids(g) for g in per_frame)
        if any_sources and matched_sources == 0:
            raise SegReferenceError(
                "none of the SEG's source images is an instance of the reference series "
                f"{reference_series_uid or ''}".rstrip(),
                path=name,
            )

    overlapping = False
    if len(segments) > 1:
        count = np.zeros(reference.shape, np.uint16 if len(segments) > 255 else np.uint8, "F")
        for m in masks_arr.values():
            count += m
        overlapping = bool(count.max(initial=0) > 1)
        del count
    labels: Volume | None = None
    if overlapping and mode == "labelmap":
        raise PetcorpusError(
            "segments overlap, so a label map would drop voxels; use mode='masks' or 'auto'",
            path=name,
            reason=Reason.INVALID_VALUE,
        )
    if not overlapping and mode != "masks":
        label_dtype = np.uint8 if max((n for n, _ in segments), default=0) <= 255 else np.uint16
        lab = np.zeros(reference.shape, dtype=label_dtype, order="F")
        for n, m in masks_arr.items():
            np.copyto(lab, label_dtype(n), where=m.view(bool))
        labels = reference.with_array(lab)
    return SegResult(
        labels=labels,
        masks={n: reference.with_array(m) for n, m in masks_arr.items()},
        segments=segments,
        overlapping=overlapping,
        referenced_series_uid=referenced_series,
        segmentation_type=seg_type,
    )
