"""DICOM SEG of the phantom's lesions, made with highdicom, referencing the PET series."""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from petcorpus.phantom.anatomy import Lesion, paint_lesions

__all__ = ["make_seg", "shuffle_seg_frames"]


def make_seg(
    pet: list[Dataset],
    lesions: list[Lesion],
    xs: np.ndarray,
    ys: np.ndarray,
    zs: np.ndarray,
    lesion_mask: np.ndarray,
    series_uid: str,
    sop_uid: str,
    segments: int = 1,
    all_frames: bool = False,
    shuffled: bool = False,
    rng: np.random.Generator | None = None,
) -> Dataset:
    """A binary SEG on the PET grid; lesions spread over ``segments`` segments.

    ``pet[k]`` must be the slice at ``zs[k]``. With no lesions, one empty segment is written
    (the published negative studies carry such a SEG).
    """
    if segments < 1:
        raise ValueError(f"segments must be >= 1, got {segments}")
    per_segment = []
    for s in range(segments):
        own = [les for i, les in enumerate(lesions) if i % segments == s]
        per_segment.append(paint_lesions(own, xs, ys, zs) if own else np.zeros_like(lesion_mask))
    # highdicom wants (frames, rows, columns, segments) in source-image order.
    pixels = np.stack([m.transpose(2, 1, 0) for m in per_segment], axis=-1).astype(bool)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=s + 1,
            segment_label=f"Lesion {s + 1}" if segments > 1 else "Lesion",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for s in range(segments)
    ]
    seg: Dataset = hd.seg.Segmentation(
        source_images=pet,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid,
        series_number=300,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer="petcorpus",
        manufacturer_model_name="phantom",
        software_versions="petcorpus-phantom",
        device_serial_number="PHANTOM",
        series_description="Segmentation",
        # A SEG with no lesion keeps all frames (highdicom cannot omit every frame).
        omit_empty_frames=not all_frames and bool(pixels.any()),
    )
    if shuffled:
        seg = shuffle_seg_frames(seg, rng or np.random.default_rng(0))
    return seg


def shuffle_seg_frames(seg: Dataset, rng: np.random.Generator) -> Dataset:
    """Permute the frames of a BINARY SEG (pixel data and per-frame groups together).

    Real SEGs do not promise frame order; this lets tests check that readers place frames by
    position, not by index.
    """
    n = int(seg.NumberOfFrames)
    rows, cols = int(seg.Rows), int(seg.Columns)
    if (rows * cols) % 8:
        raise ValueError("frames must be byte-aligned to shuffle (rows x columns divisible by 8)")
    bits = np.unpackbits(np.frombuffer(seg.PixelData, np.uint8), bitorder="little")
    frames = bits[: n * rows * cols].reshape(n, rows * cols)
    order = rng.permutation(n)
    seg.PixelData = np.packbits(frames[order].ravel(), bitorder="little").tobytes()
    groups = list(seg.PerFrameFunctionalGroupsSequence)
    seg.PerFrameFunctionalGroupsSequence = [groups[i] for i in order]
    return seg
