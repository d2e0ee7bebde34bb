"""DICOM SEG placement: phantom SEGs equal the true lesion mask; real dcmqi SEGs equal the
label images they were made from (SimpleITK reads both the CT and the NRRD truth)."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.sr.codedict import codes

from petcorpus.dicom.seg import SegResult, load_seg
from petcorpus.errors import GeometryMismatchError, PetcorpusError, SegReferenceError
from petcorpus.volume import Volume
from tests.conftest import phantom


def _place(study, **kwargs) -> SegResult:
    return load_seg(
        study.seg,
        study.truth.pet_bqml,
        reference_sop_uids=[str(ds.SOPInstanceUID) for ds in study.pet],
        reference_series_uid=str(study.pet[0].SeriesInstanceUID),
        frame_of_reference_uid=str(study.pet[0].FrameOfReferenceUID),
        **kwargs,
    )


_VENDORS = ["siemens", "ge", "philips"]
_VARIANTS = {
    "one-segment": {},
    "three-segments": {"seg_segments": 3},
    "shuffled": {"seg_frame_order": "shuffled"},
    "all-frames": {"seg_all_frames": True},
    "two-shuffled": {"seg_segments": 2, "seg_frame_order": "shuffled"},
    "negative": {"diagnosis": "NEGATIVE"},
}
_FAST = {"three-segments-siemens", "shuffled-philips"}


@pytest.mark.parametrize(
    ("vendor", "variant"),
    [
        # The fast subset: one segment for each vendor (the phantoms other tests use) and
        # two variants; every variant for every vendor is slow.
        pytest.param(
            vendor, variant, id=f"{name}-{vendor}", marks=() if fast else pytest.mark.slow
        )
        for vendor in _VENDORS
        for name, variant in _VARIANTS.items()
        for fast in [name == "one-segment" or f"{name}-{vendor}" in _FAST]
    ],
)
def test_phantom_seg_equals_truth(vendor, variant):
    kwargs = {"seed": 11, "size": "small", "vendor": vendor, "diagnosis": "LYMPHOMA"}
    kwargs.update(variant)
    study = phantom(**kwargs)
    truth = study.truth.lesion_mask
    result = _place(study)
    assert result.referenced_series_uid == str(study.pet[0].SeriesInstanceUID)
    assert not result.overlapping
    assert result.labels is not None and result.labels.dtype == np.uint8
    assert result.labels.same_grid(truth, atol=0)
    np.testing.assert_array_equal(result.labels.array > 0, truth.array > 0)
    np.testing.assert_array_equal(result.union().array, truth.array)
    n = variant.get("seg_segments", 1)
    assert [s for s, _ in result.segments] == list(range(1, n + 1))
    assert sorted(result.masks) == list(range(1, n + 1))
    for number, mask in result.masks.items():
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask.array, (result.labels.array == number).astype(np.uint8))
    if variant.get("diagnosis") == "NEGATIVE":
        assert int(result.union().array.sum()) == 0
    else:
        assert int(truth.array.sum()) > 0
    # Placement by position alone (no SOP UIDs) gives the same answer.
    by_position = load_seg(study.seg, study.truth.pet_bqml)
    np.testing.assert_array_equal(by_position.union().array, truth.array)


def test_round_robin_segments_match_lesions():
    study = phantom(seed=11, size="small", vendor="siemens", diagnosis="LYMPHOMA", seg_segments=3)
    result = _place(study)
    # Each segment holds its own lesions, disjoint, all three non-empty.
    assert all(int(m.array.sum()) > 0 for m in result.masks.values())
    total = sum(m.array.astype(int) for m in result.masks.values())
    assert int(total.max()) == 1


def test_flipped_reference_grid():
    """The reference's in-plane axes may run the other way (e.g. a reoriented volume)."""
    study = phantom(seed=11, size="small", vendor="ge", diagnosis="LYMPHOMA")
    pet = study.truth.pet_bqml
    flip = np.diag([1.0, -1.0, 1.0, 1.0])
    flip[1, 3] = pet.shape[1] - 1
    flipped = Volume(pet.array[:, ::-1, :], pet.affine @ flip)
    result = load_seg(study.seg, flipped)
    np.testing.assert_array_equal(result.union().array, study.truth.lesion_mask.array[:, ::-1, :])


def test_swapped_in_plane_axes():
    study = phantom(seed=11, size="small", vendor="siemens", diagnosis="LYMPHOMA")
    pet = study.truth.pet_bqml
    swap = np.eye(4)[[1, 0, 2, 3]]
    swapped = Volume(pet.array.transpose(1, 0, 2), pet.affine @ swap)
    result = load_seg(study.seg, swapped)
    np.testing.assert_array_equal(
        result.union().array, study.truth.lesion_mask.array.transpose(1, 0, 2)
    )


def test_off_grid_reference_is_refused():
    study = phantom(seed=11, size="small", vendor="siemens", diagnosis="LYMPHOMA")
    pet = study.truth.pet_bqml
    shifted = pet.affine.copy()
    shifted[0, 3] += 0.4 * pet.spacing[0]
    with pytest.raises(GeometryMismatchError, match="between voxels"):
        load_seg(study.seg, Volume(pet.array, shifted))
    coarse = Volume(pet.array[::2], pet.affine @ np.diag([2.0, 1, 1, 1]))
    with pytest.raises(GeometryMismatchError, match="does not match the reference grid"):
        load_seg(study.seg, coarse)


def test_fractional_threshold_half():
    study = phantom(seed=11, size="small", vendor="siemens", diagnosis="LYMPHOMA")
    rng = np.random.default_rng(3)
    frac = rng.uniform(0, 1, size=(len(study.pet), *study.pet[0].pixel_array.shape))
    frac = frac.astype(np.float32)
    seg = hd.seg.Segmentation(
        source_images=study.pet,
        pixel_array=frac,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=[
            hd.seg.SegmentDescription(
                segment_number=1,
                segment_label="p",
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=codes.SCT.Neoplasm,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            )
        ],
        series_instance_uid=hd.UID(),
        series_number=9,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="t",
        manufacturer_model_name="t",
        software_versions="t",
        device_serial_number="t",
        max_fractional_value=255,
        omit_empty_frames=False,
    )
    result = _place(study)  # sanity: the BINARY one still works
    assert result.segmentation_type == "BINARY"
    frac_result = load_seg(seg, study.truth.pet_bqml)
    assert frac_result.segmentation_type == "FRACTIONAL"
    stored = np.rint(frac * 255)  # what the file holds (0..255)
    expected = (stored >= 127.5).astype(np.uint8).transpose(2, 1, 0)  # (k, row, col) -> ijk
    np.testing.assert_array_equal(frac_result.union().array, expected)


def _write(ds, path):
    ds.save_as(path, enforce_file_format=True)
    return path


def test_seg_of_another_series_is_refused(tmp_path):
    study = phantom(seed=11, size="small", vendor="siemens", diagnosis="LYMPHOMA")
    other = phantom(seed=12, size="small", vendor="siemens", diagnosis="LYMPHOMA")
    path = _write(other.seg, tmp_path / "other-seg.dcm")
    pet_for = str(study.pet[0].FrameOfReferenceUID)
    with pytest.raises(SegReferenceError) as info:
        load_seg(
            path,
            study.truth.pet_bqml,
            reference_series_uid=str(study.pet[0].SeriesInstanceUID),
            frame_of_reference_uid=pet_for,
        )
    message = str(info.value)
    assert str(path) in message
    assert pet_for in message and str(other.seg.FrameOfReferenceUID) in message
    assert info.value.reason == "SEG_REFERENCE"
    # Same frame of reference, but it segments another series.
    with pytest.raises(SegReferenceError) as info:
        load_seg(
            path, other.truth.pet_bqml, reference_series_uid=str(study.pet[0].SeriesInstanceUID)
        )
    assert str(study.pet[0].SeriesInstanceUID) in str(info.value)
    assert str(other.pet[0].SeriesInstanceUID) in str(info.value)


def test_not_a_seg(tmp_path):
    study = phantom(seed=11, size="small", vendor="siemens", diagnosis="LYMPHOMA")
    path = _write(study.pet[0], tmp_path / "pet.dcm")
    with pytest.raises(PetcorpusError, match="not a DICOM SEG"):
        load_seg(path, study.truth.pet_bqml)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    with pytest.raises(PetcorpusError, match=r"junk\.dcm"):
        load_seg(junk, study.truth.pet_bqml)


# -- real data from the field (dcmqi test files) ----------------------------------------------


def _real_ct(realdata):
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(realdata / "dcmqi-ct-seg" / "ct-3slice"))
    reader.SetFileNames(files)
    ct = Volume.from_sitk(reader.Execute())
    sops = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    return ct, sops


def test_real_liver_seg_equals_nrrd(realdata):
    ct, sops = _real_ct(realdata)
    truth = Volume.from_sitk(sitk.ReadImage(str(realdata / "dcmqi-ct-seg" / "liver_seg.nrrd")))
    assert truth.same_grid(ct, atol=1e-4)  # world geometry of truth and CT agree
    for uids in (sops, None):
        result = load_seg(realdata / "dcmqi-ct-seg" / "liver.dcm", ct, reference_sop_uids=uids)
        assert result.segments == [(1, "Liver")]
        assert result.labels is not None and result.labels.same_grid(truth, atol=1e-4)
        np.testing.assert_array_equal(result.labels.array, truth.array)
    assert int(truth.array.sum()) == 107098


def test_real_overlapping_segments_equal_nrrd(realdata):
    ct, sops = _real_ct(realdata)
    folder = realdata / "dcmqi-ct-seg"
    result = load_seg(folder / "partial_overlaps.dcm", ct, reference_sop_uids=sops)
    assert [n for n, _ in result.segments] == [1, 2, 3, 4, 5]
    assert result.overlapping and result.labels is None
    # dcmqi made the SEG from three label images; label value v in any of them is segment v.
    truth = {n: np.zeros(ct.shape, dtype=np.uint8) for n in range(1, 6)}
    for i in (1, 2, 3):
        image = Volume.from_sitk(sitk.ReadImage(str(folder / f"partial_overlaps-{i}.nrrd")))
        assert image.same_grid(ct, atol=1e-4)
        for value in np.unique(image.array[image.array > 0]):
            truth[int(value)] |= (image.array == value).astype(np.uint8)
    for n in range(1, 6):
        assert int(truth[n].sum()) > 0
        np.testing.assert_array_equal(result.masks[n].array, truth[n], err_msg=f"segment {n}")
    with pytest.raises(PetcorpusError, match="overlap"):
        load_seg(folder / "partial_overlaps.dcm", ct, mode="labelmap")
    masks_only = load_seg(folder / "partial_overlaps.dcm", ct, mode="masks")
    assert masks_only.labels is None
