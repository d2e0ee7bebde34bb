import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from petcorpus import Volume
from petcorpus.errors import GeometryMismatchError
from petcorpus.resample import resample_to
from petcorpus.volume import lps_to_ras


def _oblique_affine() -> np.ndarray:
    # A rotation about an oblique axis, anisotropic voxels, arbitrary origin.
    axis = np.array([0.3, -0.5, 0.81])
    axis /= np.linalg.norm(axis)
    angle = 0.37
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.9765625, 1.3, 3.27])
    aff[:3, 3] = [-249.5, 112.25, -1033.7]
    return aff


AFFINES = {
    "axis_aligned_lps": lps_to_ras(np.diag([2.0364, 2.0364, 3.0, 1.0]))
    + np.array([[0, 0, 0, 406.2], [0, 0, 0, 407.5], [0, 0, 0, -980.0], [0, 0, 0, 0]]),
    "ras": np.diag([0.8, 0.8, 1.5, 1.0]),
    "oblique": _oblique_affine(),
}


@pytest.fixture(params=sorted(AFFINES))
def volume(request) -> Volume:
    rng = np.random.default_rng(0)
    return Volume(
        rng.integers(-1024, 3000, size=(7, 9, 5)).astype(np.int16), AFFINES[request.param]
    )


def test_derived_geometry():
    v = Volume(np.zeros((4, 5, 6), np.float32), lps_to_ras(np.diag([2.0, 3.0, 4.0, 1.0])))
    assert v.shape == (4, 5, 6)
    np.testing.assert_array_equal(v.spacing, [2.0, 3.0, 4.0])
    assert v.orientation == ("L", "P", "S")
    assert v.voxel_volume_ml == pytest.approx(0.024)


def test_nifti_round_trip_exact(volume, tmp_path):
    path = tmp_path / "v.nii.gz"
    nib.save(volume.to_nifti(), path)
    back = Volume.from_nifti(path)
    assert back.dtype == volume.dtype
    np.testing.assert_array_equal(back.array, volume.array)
    # NIfTI-1 stores the sform as float32: the round trip is exact up to that rounding.
    np.testing.assert_array_equal(back.affine, volume.affine.astype(np.float32))
    img = nib.load(path)
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    assert img.header.get_xyzt_units()[0] == "mm"


def test_nifti_in_memory_round_trip_is_bit_exact(volume):
    back = Volume.from_nifti(volume.to_nifti())
    np.testing.assert_array_equal(back.affine, volume.affine.astype(np.float32))
    np.testing.assert_array_equal(back.array, volume.array)


def test_sitk_round_trip(volume):
    img = volume.to_sitk()
    back = Volume.from_sitk(img)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, volume.affine, rtol=0, atol=1e-9)


def test_sitk_geometry_matches_an_independent_computation(volume):
    # SimpleITK's own index -> physical point mapping must equal our affine in LPS.
    img = volume.to_sitk()
    for ijk in [(0, 0, 0), (6, 0, 0), (0, 8, 4), (3, 2, 1)]:
        lps = np.array(img.TransformIndexToPhysicalPoint(ijk))
        ras = volume.voxel_to_world(ijk)
        np.testing.assert_allclose(lps * [-1, -1, 1], ras, atol=1e-9)
    # ...and sitk's array indexing is [k, j, i].
    arr = sitk.GetArrayViewFromImage(img)
    assert arr[1, 2, 3] == volume.array[3, 2, 1]


def test_world_to_voxel_inverts_voxel_to_world(volume):
    ijk = np.array([[0, 0, 0], [1.5, 2.25, 3.0], [6, 8, 4]])
    np.testing.assert_allclose(volume.world_to_voxel(volume.voxel_to_world(ijk)), ijk, atol=1e-9)


def test_nibabel_apply_affine_agrees(volume):
    ijk = np.array([[1, 2, 3], [6, 0, 4]])
    np.testing.assert_allclose(
        volume.voxel_to_world(ijk), nib.affines.apply_affine(volume.affine, ijk), atol=1e-12
    )


@pytest.mark.parametrize(
    ("array", "affine", "message"),
    [
        (np.zeros((2, 2)), np.eye(4), "3-D"),
        (np.zeros((2, 2, 2)), np.eye(3), "4x4"),
        (np.zeros((2, 2, 2)), np.diag([1, 1, 0, 1.0]), "singular"),
        (np.zeros((2, 2, 2)), np.full((4, 4), np.nan), "NaN"),
    ],
)
def test_invalid_inputs_raise_clear_errors(array, affine, message):
    with pytest.raises(ValueError, match=message):
        Volume(array, affine)


def test_affine_is_copied_and_read_only():
    aff = np.eye(4)
    v = Volume(np.zeros((2, 2, 2)), aff)
    aff[0, 0] = 5
    assert v.affine[0, 0] == 1
    with pytest.raises(ValueError, match="read-only"):
        v.affine[0, 0] = 2


def test_with_array_checks_shape():
    v = Volume(np.zeros((2, 3, 4)), np.eye(4))
    with pytest.raises(GeometryMismatchError):
        v.with_array(np.zeros((4, 3, 2)))


def test_resample_nearest_onto_own_grid_is_identity(volume):
    out = resample_to(volume, volume, interpolation="nearest")
    np.testing.assert_array_equal(out.array, volume.array)
    assert out.dtype == volume.dtype


def test_resample_linear_matches_scipy_on_shifted_grid():
    # A linear ramp is reproduced exactly by linear interpolation anywhere inside.
    i, j, k = np.meshgrid(np.arange(10), np.arange(12), np.arange(8), indexing="ij")
    src = Volume((2.0 * i + 3.0 * j - k).astype(np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    aff[:3, 3] = [1.0, 1.0, 0.0]
    target = Volume(np.zeros((5, 6, 6), np.float32), aff)
    out = resample_to(src, target, interpolation="linear")
    ijk_src = src.world_to_voxel(
        target.voxel_to_world(
            np.stack(np.meshgrid(*[np.arange(n) for n in target.shape], indexing="ij"), axis=-1)
        )
    )
    expected = 2.0 * ijk_src[..., 0] + 3.0 * ijk_src[..., 1] - ijk_src[..., 2]
    np.testing.assert_allclose(out.array, expected, atol=1e-4)


def test_image_array_shares_the_sitk_buffer_and_keeps_the_image_alive():
    import gc

    from petcorpus.resample import image_array

    data = np.arange(4 * 3 * 2, dtype=np.float32).reshape(2, 3, 4)
    image = sitk.GetImageFromArray(data)
    arr = image_array(image)
    np.testing.assert_array_equal(arr, data)
    arr[1, 2, 3] = -5.0  # the same memory: the image sees the write
    assert image.GetPixel(3, 2, 1) == -5.0
    del image
    gc.collect()
    assert arr.flags.writeable and arr[1, 2, 3] == -5.0 and arr.sum() == data.sum() - 28.0


def _oblique_target(shape=(9, 8, 11)) -> Volume:
    theta = 0.2
    rot = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    )
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([2.5, 2.5, 2.0])
    aff[:3, 3] = [1.0, -2.0, 0.5]
    return Volume(np.zeros(shape, np.uint8), aff)


def test_resample_stream_slabs_assemble_to_resample_sitk_and_match_simpleitk():
    from petcorpus.resample import resample_sitk, resample_stream

    rng = np.random.default_rng(1)
    src = Volume(
        (rng.standard_normal((20, 18, 16)) * 100).astype(np.int16), np.diag([1.2, 1.2, 1.5, 1])
    )
    target = _oblique_target()
    stream = resample_stream(src, target, fill=-1024.0, slab=3)
    slabs = list(stream.slabs())
    assert [s.shape for s in slabs] == [(9, 8, 3)] * 3 + [(9, 8, 2)]
    assert all(s.dtype == np.float32 and s.flags.f_contiguous for s in slabs)
    whole = resample_sitk(src, target, fill=-1024.0)
    np.testing.assert_array_equal(np.concatenate(slabs, axis=2), whole.array)
    assert np.array_equal(stream.to_volume().affine, target.affine)
    # SimpleITK's own whole-grid resampling (a reference image) agrees to float rounding
    ref = sitk.Resample(
        src.to_sitk(),
        target.to_sitk(),
        sitk.Transform(),
        sitk.sitkLinear,
        -1024.0,
        sitk.sitkFloat32,
    )
    np.testing.assert_allclose(whole.array, Volume.from_sitk(ref).array, atol=1e-3)
    assert (whole.array == -1024.0).any() and (whole.array != -1024.0).any()


def test_bspline_stream_is_one_slab():
    from petcorpus.resample import resample_stream

    src = Volume(np.random.default_rng(2).random((10, 10, 10), np.float32), np.eye(4))
    slabs = list(resample_stream(src, _oblique_target(), interpolation="bspline").slabs())
    assert len(slabs) == 1 and slabs[0].shape == (9, 8, 11)


def test_volume_stream_checks_its_slabs():
    from petcorpus.volume import VolumeStream

    def make(*parts):
        return VolumeStream((2, 2, 3), np.eye(4), np.float32, lambda: iter(parts))

    ok = np.zeros((2, 2, 3), np.float32)
    assert make(ok).to_volume().array is ok  # one whole slab: no copy
    with pytest.raises(ValueError, match="dtype"):
        list(make(ok.astype(np.float64)).slabs())
    with pytest.raises(ValueError, match="end at k=2"):
        list(make(ok[:, :, :2]).slabs())
    with pytest.raises(ValueError, match="past k=3"):
        list(make(ok, ok[:, :, :1]).slabs())
    with pytest.raises(ValueError, match="does not fit"):
        list(make(np.zeros((3, 2, 3), np.float32)).slabs())


def test_sitk_image_shares_a_simpleitk_buffer_and_copies_anything_else():
    from petcorpus.resample import new_image_array, set_image_geometry, sitk_image

    block = new_image_array((4, 3, 2), np.int16)  # (z, y, x), zeroed
    assert block.shape == (4, 3, 2) and not block.any()
    block[...] = np.arange(24, dtype=np.int16).reshape(4, 3, 2)
    aff = np.diag([-0.8, -0.8, 2.0, 1.0])
    aff[:3, 3] = [5.0, 6.0, -7.0]
    vol = Volume(block.transpose(2, 1, 0), aff)
    assert sitk.GetArrayViewFromImage(sitk_image(vol)).ctypes.data != block.ctypes.data
    assert set_image_geometry(block, aff)  # now the buffer's image has the volume's grid
    image = sitk_image(vol)
    assert image.GetSize() == (2, 3, 4)
    assert sitk.GetArrayViewFromImage(image).ctypes.data == block.ctypes.data  # no copy
    copy = vol.to_sitk()
    for get in ("GetSpacing", "GetOrigin", "GetDirection"):
        assert np.allclose(getattr(image, get)(), getattr(copy, get)())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), block)
    # setting the geometry did not make SimpleITK copy the pixels away from the array
    block[3, 2, 1] = -7
    assert image.GetPixel(1, 2, 3) == -7
    # another grid over the same buffer, a part of it or a plain array: to_sitk (a copy)
    shifted = aff.copy()
    shifted[0, 3] += 1.0
    other = sitk_image(Volume(vol.array, shifted))
    assert sitk.GetArrayViewFromImage(other).ctypes.data != block.ctypes.data
    assert np.allclose(other.GetOrigin(), copy.GetOrigin() + np.array([-1.0, 0, 0]))
    assert not set_image_geometry(np.zeros((4, 3, 2), np.int16), aff)
    part = Volume(block[:2].transpose(2, 1, 0), aff)
    assert sitk.GetArrayViewFromImage(sitk_image(part)).ctypes.data != block.ctypes.data
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk_image(part)), block[:2])
