"""MIPs: exact pixels, orientation (radiological, head up) for any input orientation, aspect,
overlays and the truth-vs-prediction comparison."""

from __future__ import annotations

import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from petcorpus import viz
from petcorpus.cli import app
from petcorpus.errors import GeometryMismatchError, PetcorpusError
from petcorpus.phantom import Tissue
from petcorpus.resample import resample_to
from petcorpus.volume import Volume
from tests.conftest import phantom


def _truth():
    return phantom(seed=3, size="small", vendor="siemens", diagnosis="LYMPHOMA").truth


def _as_ras(vol: Volume) -> Volume:
    """The same image stored with RAS voxel axes (i and j reversed, affine adjusted)."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3] = vol.shape[0] - 1
    flip[1, 3] = vol.shape[1] - 1
    return Volume(np.ascontiguousarray(vol.array[::-1, ::-1, :]), vol.affine @ flip)


def _as_sip(vol: Volume) -> Volume:
    """A permuted, flipped storage: new voxel (m, i, j) is old voxel (i, j, K-1-m) (I, L, P)."""
    arr = np.transpose(vol.array, (2, 0, 1))[::-1]
    old_from_new = np.array(
        [[0, 1, 0, 0], [0, 0, 1, 0], [-1, 0, 0, vol.shape[2] - 1], [0, 0, 0, 1]], dtype=float
    )
    return Volume(np.ascontiguousarray(arr), vol.affine @ old_from_new)


def _nib_reference(vol: Volume, view: str) -> np.ndarray:
    """Independent reference: nibabel's as_closest_canonical, then np.max, display order."""
    canon = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(vol.array), vol.affine))
    a = np.asanyarray(canon.dataobj)
    axis = {"coronal": 1, "sagittal": 0, "axial": 2}[view]
    # rows: superior first (or anterior for axial); cols: R first (coronal/axial), A first (sag)
    return a.max(axis=axis).T[::-1, ::-1]


@pytest.mark.slow
def test_phantom_is_lps_and_variants_differ() -> None:
    t = _truth()
    assert t.suv.orientation == ("L", "P", "S")
    assert _as_ras(t.suv).orientation == ("R", "A", "S")
    assert _as_sip(t.suv).orientation[0] == "I"
    # same world content: a voxel maps to the same world point in both storages
    r = _as_ras(t.suv)
    np.testing.assert_allclose(r.voxel_to_world([99, 99, 5]), t.suv.voxel_to_world([0, 0, 5]))


@pytest.mark.parametrize("view", ["coronal", "sagittal", "axial"])
@pytest.mark.parametrize("storage", ["lps", "ras", "sip"])
def test_mip_equals_numpy_max_of_canonical(view: str, storage: str) -> None:
    t = _truth()
    vol = {"lps": t.suv, "ras": _as_ras(t.suv), "sip": _as_sip(t.suv)}[storage]
    proj = viz.mip(vol, view)
    ref = _nib_reference(t.suv, view)  # always from the original storage
    assert proj.array.dtype == np.float32
    np.testing.assert_array_equal(proj.array, ref)
    sx, sy, sz = (float(s) for s in np.abs(np.diag(t.suv.affine))[:3])
    expect = {"coronal": (sz, sx), "sagittal": (sz, sy), "axial": (sy, sx)}[view]
    assert (proj.row_mm, proj.col_mm) == pytest.approx(expect)


def test_to_canonical_matches_nibabel() -> None:
    t = _truth()
    for vol in (t.suv, _as_ras(t.suv), _as_sip(t.suv)):
        c = viz.to_canonical(vol)
        ref = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(vol.array), vol.affine))
        np.testing.assert_array_equal(c.array, np.asanyarray(ref.dataobj))
        np.testing.assert_allclose(c.affine, ref.affine)


def _spot_volume(base: Volume, world_ras: tuple[float, float, float]) -> Volume:
    """Zeros with one bright voxel at a RAS world point."""
    arr = np.zeros(base.shape, np.float32)
    ijk = np.rint(base.world_to_voxel(world_ras)).astype(int)
    arr[tuple(ijk)] = 20.0
    return base.with_array(arr)


@pytest.mark.parametrize("storage", ["lps", "ras", "sip"])
def test_left_lesion_appears_on_image_right_and_head_on_top(storage: str) -> None:
    t = _truth()
    lo, hi = t.suv.bounds()
    centre = (lo + hi) / 2
    # patient's LEFT is -x in RAS; superior is +z; anterior is +y
    spot = (centre[0] - 150.0, centre[1] + 80.0, hi[2] - 100.0)
    base = {"lps": t.suv, "ras": _as_ras(t.suv), "sip": _as_sip(t.suv)}[storage]
    vol = _spot_volume(base, spot)
    cor = viz.mip(vol, "coronal").array
    r, c = np.unravel_index(np.argmax(cor), cor.shape)
    assert c > cor.shape[1] / 2, "a lesion on the patient's left must be on the image's right"
    assert r < cor.shape[0] / 4, "head (superior) must be at the top"
    sag = viz.mip(vol, "sagittal").array
    r, c = np.unravel_index(np.argmax(sag), sag.shape)
    assert c < sag.shape[1] / 2, "anterior must be on the image's left of a sagittal MIP"
    assert r < sag.shape[0] / 4
    ax = viz.mip(vol, "axial").array  # seen from the feet: anterior up, patient's left right
    r, c = np.unravel_index(np.argmax(ax), ax.shape)
    assert c > ax.shape[1] / 2 and r < ax.shape[0] / 2


def test_anatomy_liver_on_image_left_heart_on_image_right() -> None:
    t = _truth()
    for vol in (t.pet_labels, _as_ras(t.pet_labels)):
        liver = viz.mask_projection(vol.with_array(vol.array == Tissue.LIVER), "coronal").array
        heart = viz.mask_projection(vol.with_array(vol.array == Tissue.HEART), "coronal").array
        brain = viz.mask_projection(vol.with_array(vol.array == Tissue.BRAIN), "coronal").array
        bladder = viz.mask_projection(vol.with_array(vol.array == Tissue.BLADDER), "coronal")
        col = lambda m: np.nonzero(m)[1].mean()  # noqa: E731
        row = lambda m: np.nonzero(m)[0].mean()  # noqa: E731
        assert col(liver) < liver.shape[1] / 2 < col(heart)  # liver: patient's right
        assert row(brain) < row(heart) < row(bladder.array)


def test_mask_projection_is_any_along_ray() -> None:
    t = _truth()
    proj = viz.mask_projection(t.lesion_mask, "coronal")
    ref = _nib_reference(t.lesion_mask, "coronal") > 0
    np.testing.assert_array_equal(proj.array, ref)
    assert proj.array.any()


def test_label_projection_shows_nearest_label() -> None:
    arr = np.zeros((3, 4, 2), np.uint8)
    arr[1, 3, 0] = 5  # anterior (+j in RAS)
    arr[1, 0, 0] = 9  # posterior
    arr[0, 2, 1] = 7
    vol = Volume(arr, np.eye(4))
    cor = viz.label_projection(vol, "coronal").array  # seen from the front
    # display rows: k descending; cols: i descending
    assert cor.shape == (2, 3)
    assert cor[1, 1] == 5 and cor[0, 2] == 7 and cor[0, 0] == 0
    sag = viz.label_projection(vol, "sagittal").array  # seen from the patient's left (low i)
    assert sag[0, 1] == 7  # j=2 -> column 4-1-2 = 1
    assert sag[1, 0] == 5 and sag[1, 3] == 9


def test_render_is_exact_at_native_isotropic_size_and_windowed() -> None:
    rng = np.random.default_rng(0)
    arr = rng.uniform(-1, 14, size=(20, 15, 30)).astype(np.float32)
    vol = Volume(arr, np.diag([2.0, 2.0, 2.0, 1.0]))
    proj = viz.mip(vol, "coronal")
    img = viz.render(proj, vmax=10.0, pixel_mm=2.0)
    assert img.mode == "P" and img.size == (20, 30)
    idx = np.asarray(img)
    # inverted grey: SUV >= 10 is black (index 0), SUV <= 0 is white
    expect = np.rint((1 - np.clip(proj.array / 10.0, 0, 1)) * (viz.N_GREY - 1))
    np.testing.assert_array_equal(idx, expect.astype(np.uint8))
    rgb = np.asarray(img.convert("RGB"))
    assert (rgb[proj.array >= 10] == 0).all() and (rgb[proj.array <= 0] == 255).all()


def test_render_has_physical_aspect() -> None:
    t = _truth()  # 8.1456 mm pixels, 12 mm slices
    proj = viz.mip(t.suv, "coronal")
    img = viz.render(proj, pixel_mm=2.0)
    h_mm, w_mm = proj.extent_mm
    assert img.size == (round(w_mm / 2.0), round(h_mm / 2.0))
    assert img.width / img.height == pytest.approx(w_mm / h_mm, rel=0.01)


def test_overlay_colours_sit_on_the_lesions() -> None:
    t = _truth()
    proj = viz.mip(t.suv, "coronal")
    mproj = viz.mask_projection(t.lesion_mask, "coronal")
    img = viz.render(proj, [(mproj, "lesion")], pixel_mm=proj.col_mm, style="fill")
    idx = np.asarray(img)
    coloured = idx == viz.colour_index("lesion")
    # enlarging: each display pixel shows the projection pixel under its centre
    (n_r, n_c), (m_c, m_r) = mproj.array.shape, img.size
    rows = [int((r + 0.5) * n_r / m_r) for r in range(m_r)]  # exact here but at ties
    cols = [int((c + 0.5) * n_c / m_c) for c in range(m_c)]
    up = mproj.array[np.ix_(rows, cols)].astype(np.uint8)
    ties = [r for r in range(m_r) if ((2 * r + 1) * n_r) % (2 * m_r) == 0]
    keep = np.setdiff1d(np.arange(m_r), ties)
    np.testing.assert_array_equal(coloured[keep], up[keep] > 0)
    contour = np.asarray(viz.render(proj, [(mproj, "lesion")], pixel_mm=proj.col_mm))
    cmask = contour == viz.colour_index("lesion")
    assert cmask.any() and (cmask <= (up > 0)).all() and cmask.sum() < coloured.sum()


def _two_blobs() -> tuple[Volume, Volume]:
    gt = np.zeros((30, 30, 30), np.uint8)
    pred = np.zeros_like(gt)
    gt[2:6, 2:6, 2:6] = 1  # found
    gt[20:24, 20:24, 20:24] = 1  # missed -> FN 64 voxels
    pred[4:8, 4:8, 4:8] = 1  # overlaps the first
    pred[10:13, 20:23, 2:5] = 1  # FP 27 voxels
    aff = np.diag([2.0, 2.0, 2.0, 1.0])  # 8 ul voxels
    return Volume(gt, aff), Volume(pred, aff)


def test_compare_masks_counts_and_volumes() -> None:
    gt, pred = _two_blobs()
    cmp = viz.compare_masks(gt, pred)
    assert (cmp.n_gt, cmp.n_pred, cmp.n_fn, cmp.n_fp) == (2, 2, 1, 1)
    assert cmp.fn_volume_ml == pytest.approx(64 * 0.008)
    assert cmp.fp_volume_ml == pytest.approx(27 * 0.008)
    # independent reference: scipy labelling with the 18-neighbourhood
    struct = ndimage.generate_binary_structure(3, 2)
    plab, n = ndimage.label(pred.array, structure=struct)
    fp_ref = sum((plab == i).sum() for i in range(1, n + 1) if not (gt.array[plab == i] > 0).any())
    assert cmp.false_pos.array.sum() == fp_ref
    assert (cmp.matched_gt.array + cmp.missed_gt.array == gt.array).all()


def test_compare_masks_agrees_with_the_autopet_metrics() -> None:
    from petcorpus.metrics.autopet import autopet_metrics

    gt, pred = _two_blobs()
    cmp = viz.compare_masks(gt, pred)
    m = autopet_metrics(gt.array, pred.array, gt.voxel_volume_ml)
    assert (cmp.n_gt, cmp.n_pred, cmp.n_fn, cmp.n_fp) == (
        m.gt_lesions, m.pred_lesions, m.lesion_fn, m.lesion_fp
    )  # fmt: skip
    assert int(cmp.missed_gt.array.sum()) == m.fn_voxels
    assert int(cmp.false_pos.array.sum()) == m.fp_voxels
    assert cmp.fp_volume_ml == pytest.approx(m.fp_volume_ml)


def test_compare_masks_diagonal_18_vs_26() -> None:
    # two voxels touching only at a corner are one component with 26-, two with 18-connectivity
    gt = np.zeros((5, 5, 5), np.uint8)
    gt[1, 1, 1] = gt[2, 2, 2] = 1
    pred = np.zeros_like(gt)
    pred[1, 1, 1] = 1
    cmp = viz.compare_masks(Volume(gt, np.eye(4)), Volume(pred, np.eye(4)))
    assert cmp.n_gt == 2 and cmp.n_fn == 1


def test_compare_masks_rejects_other_grid() -> None:
    gt, pred = _two_blobs()
    with pytest.raises(GeometryMismatchError):
        viz.compare_masks(gt, Volume(pred.array, np.eye(4)))


def test_study_figure_with_prediction_colours_fp_and_fn() -> None:
    gt, pred = _two_blobs()
    suv = gt.with_array(gt.array * 12.0 + pred.array * 6.0)
    fig = viz.study_figure(suv, gt, pred=pred, views=["coronal"], pixel_mm=2.0)
    idx = np.asarray(fig)[:-16]  # above the legend
    half = fig.width // 2
    fn = idx == viz.colour_index("fn")
    fp = idx == viz.colour_index("fp")
    assert fn[:, :half].any() and not fn[:, half:].any()  # FN drawn on the truth panel
    assert fp[:, half:].any() and not fp[:, : half - 10].any()  # FP on the prediction panel
    assert (idx == viz.colour_index("tp")).any()


def test_study_figure_panels_and_bad_view() -> None:
    t = _truth()
    ctres = resample_to(t.ct_hu, t.suv, interpolation="linear", fill=-1024)
    one = viz.study_figure(t.suv, t.lesion_mask, views=["coronal"], legend=False)
    two = viz.study_figure(t.suv, t.lesion_mask, ct=ctres, views=["coronal"], legend=False)
    assert two.width == 2 * one.width + 6
    with pytest.raises(PetcorpusError):
        viz.study_figure(t.suv, views=["oblique"])


# -- the study folder and the CLI ----------------------------------------------------------
def write_layout(truth, study_dir: Path, sidecar: dict | None = None, ct: bool = True) -> Path:
    """Write phantom truth volumes as an autoPET study folder (test fixture)."""
    study_dir.mkdir(parents=True, exist_ok=True)
    nib.save(truth.suv.to_nifti(), study_dir / "SUV.nii.gz")
    nib.save(truth.pet_bqml.to_nifti(), study_dir / "PET.nii.gz")
    nib.save(truth.lesion_mask.to_nifti(), study_dir / "SEG.nii.gz")
    if ct:
        nib.save(truth.ct_hu.to_nifti(), study_dir / "CT.nii.gz")
        ctres = resample_to(truth.ct_hu, truth.suv, interpolation="linear", fill=-1024)
        nib.save(ctres.to_nifti(), study_dir / "CTres.nii.gz")
    side = sidecar if sidecar is not None else {"suv": {"factor": truth.suv_factors["bw"]}}
    (study_dir / "petcorpus.json").write_text(json.dumps(side))
    return study_dir


def test_read_study_dir_falls_back_to_pet_times_factor(tmp_path: Path) -> None:
    t = _truth()
    d = write_layout(t, tmp_path / "S" / "st", ct=False)
    (d / "SUV.nii.gz").unlink()
    images = viz.read_study_dir(d)
    np.testing.assert_allclose(images.suv.array, t.suv.array, rtol=1e-5)
    (d / "petcorpus.json").unlink()
    with pytest.raises(PetcorpusError, match="no SUV"):
        viz.read_study_dir(d)


def test_cli_mip_writes_png(tmp_path: Path) -> None:
    t = _truth()
    d = write_layout(t, tmp_path / "PETCT_x" / "study")
    pred = t.lesion_mask.with_array(np.zeros(t.suv.shape, np.uint8))
    nib.save(pred.to_nifti(), tmp_path / "pred.nii.gz")
    out = tmp_path / "mip.png"
    res = CliRunner().invoke(app, ["mip", str(d), "-o", str(out), "--with-ct"])
    assert res.exit_code == 0, res.output
    img = Image.open(out)
    assert img.height > 400 and img.width > 2 * 300
    out2 = tmp_path / "cmp.png"
    args = ["mip", str(d), "-o", str(out2), "--pred", str(tmp_path / "pred.nii.gz")]
    res = CliRunner().invoke(app, [*args, "--views", "coronal"])
    assert res.exit_code == 0, res.output
    # an empty prediction misses every lesion: FN colour present, no FP colour
    idx = np.asarray(Image.open(out2))[:-16]  # above the legend
    assert (idx == viz.colour_index("fn")).any() and not (idx == viz.colour_index("fp")).any()
    organs = np.where(
        np.isin(t.pet_labels.array, [Tissue.LIVER, Tissue.LUNG]), t.pet_labels.array, 0
    )
    nib.save(t.pet_labels.with_array(organs.astype(np.uint8)).to_nifti(), tmp_path / "org.nii.gz")
    out3 = tmp_path / "org.png"
    res = CliRunner().invoke(
        app, ["mip", str(d), "-o", str(out3), "--labels", str(tmp_path / "org.nii.gz")]
    )
    assert res.exit_code == 0, res.output
    idx = np.asarray(Image.open(out3))
    organ_idx = {viz._organ_index(Tissue.LIVER), viz._organ_index(Tissue.LUNG)}
    assert organ_idx <= set(np.unique(idx).tolist())
    nib.save(t.ct_labels.to_nifti(), tmp_path / "ctgrid.nii.gz")  # wrong grid
    res = CliRunner().invoke(
        app, ["mip", str(d), "-o", str(out3), "--labels", str(tmp_path / "ctgrid.nii.gz")]
    )
    assert res.exit_code == 1 and "GEOMETRY_MISMATCH" in res.output
    res = CliRunner().invoke(app, ["mip", str(d), "-o", str(out2), "--views", "diagonal"])
    assert res.exit_code == 2  # not a view: a usage error
    res = CliRunner().invoke(app, ["mip", str(tmp_path / "nope"), "-o", str(out2)])
    assert res.exit_code == 1


def test_study_figure_cache_gives_identical_pictures() -> None:
    t = _truth()
    cache: dict = {}
    plain = viz.png_bytes(viz.study_figure(t.suv, t.lesion_mask))
    first = viz.png_bytes(viz.study_figure(t.suv, t.lesion_mask, cache=cache))
    thumb = viz.study_figure(t.suv, t.lesion_mask, pixel_mm=8.0, style="fill", cache=cache)
    second = viz.png_bytes(viz.study_figure(t.suv, t.lesion_mask, cache=cache))
    assert plain == first == second
    assert set(cache) == {("suv", "coronal"), ("suv", "sagittal"), ("seg", "coronal"),
                          ("seg", "sagittal")}  # fmt: skip
    assert thumb.height < 160  # 120 px of MIP, a title strip and a legend line
    bare = {"pixel_mm": 8.0, "style": "fill", "titles": False, "legend": False}
    thumb = viz.study_figure(t.suv, t.lesion_mask, **bare)  # type: ignore[arg-type]
    trimmed = viz.study_figure(t.suv, t.lesion_mask, trim=True, **bare)  # type: ignore[arg-type]
    assert trimmed.height == thumb.height and trimmed.width < thumb.width
    # trimming only removes white columns: the non-white pixels are the same set per panel
    dark = lambda im: int((np.asarray(im) != viz.N_GREY - 1).sum())  # noqa: E731
    assert dark(trimmed) == dark(thumb)


# -- nothing small disappears; every label readable ----------------------------------------
def _one_voxel_lesions() -> tuple[Volume, Volume, list[tuple[int, int, int]]]:
    """A 2 mm grid (120 x 40 x 200 voxels) with six one-voxel lesions, >= 40 mm apart, at
    odd positions (so that no footprint of any pixel size lines up with them)."""
    spots = [(7, 11, 13), (31, 23, 57), (55, 5, 101), (79, 37, 139), (103, 19, 171), (113, 29, 29)]
    seg = np.zeros((120, 40, 200), np.uint8)
    suv = np.full(seg.shape, 1.0, np.float32)
    for i, j, k in spots:
        seg[i, j, k] = 1
        suv[i, j, k] = 8.0
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    return Volume(suv, aff), Volume(seg, aff), spots


def _components(mask: np.ndarray) -> int:
    return int(ndimage.label(mask, structure=np.ones((3, 3)))[1])


@pytest.mark.parametrize("pixel_mm", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
@pytest.mark.parametrize("style", ["contour", "fill"])
def test_one_voxel_lesions_survive_every_pixel_size(pixel_mm: float, style: str) -> None:
    suv, seg, spots = _one_voxel_lesions()
    for view in ("coronal", "sagittal", "axial"):
        img = viz.render(
            viz.mip(suv, view),
            [(viz.mask_projection(seg, view), "lesion")],
            pixel_mm=pixel_mm,
            style=style,  # type: ignore[arg-type]
        )
        lesion = np.asarray(img) == viz.colour_index("lesion")
        assert _components(lesion) == len(spots), (view, pixel_mm)


def test_intensities_are_averaged_and_masks_max_pooled() -> None:
    # 4 mm projection pixels shown at 8 mm: a 2 x 2 footprint per display pixel
    arr = np.zeros((8, 1, 8), np.float32)
    arr[2, 0, 6] = 8.0  # one hot voxel
    vol = Volume(arr, np.diag([4.0, 4.0, 4.0, 1.0]))
    proj = viz.mip(vol, "coronal")
    img = viz.render(proj, [(viz.mask_projection(vol, "coronal"), "lesion")], vmax=8.0,
                     pixel_mm=8.0, invert=False, style="fill")  # fmt: skip
    idx = np.asarray(img)
    assert img.size == (4, 4)
    assert (idx == viz.colour_index("lesion")).sum() == 1  # max pooling: one pixel
    plain = np.asarray(viz.render(proj, vmax=8.0, pixel_mm=8.0, invert=False))
    # area filter: the hot voxel is a quarter of its pixel's footprint -> SUV 2 of 8
    assert sorted(np.unique(plain).tolist()) == [0, round(0.25 * (viz.N_GREY - 1))]


def test_report_thumbnail_keeps_one_voxel_lesions() -> None:
    from petcorpus.report.plots import THUMB_MAX_PIXEL_MM, StudyOptions, StudyPictures

    suv, seg, spots = _one_voxel_lesions()
    pictures = StudyPictures(suv, seg, StudyOptions())
    assert pictures.thumbnail_pixel_mm() <= THUMB_MAX_PIXEL_MM
    thumb = Image.open(io.BytesIO(pictures.thumbnail()))
    lesion = np.asarray(thumb) == viz.colour_index("lesion")
    # coronal and sagittal thumbnails: every lesion in each
    assert _components(lesion) == 2 * len(spots)
    # a 98 cm field of view at the default height: finer than 5 mm per pixel
    tall = Volume(np.zeros((10, 10, 490), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    assert StudyPictures(tall, None, StudyOptions()).thumbnail_pixel_mm() == pytest.approx(
        980 / 240
    )


def _strip_is_readable(strip: np.ndarray) -> None:
    """A text strip: black text pixels on a white background, nothing else."""
    values = set(np.unique(strip).tolist())
    assert values == {viz.colour_index("text"), viz.N_GREY - 1}


def test_titles_are_readable_on_ct_panels() -> None:
    t = _truth()
    ctres = resample_to(t.ct_hu, t.suv, interpolation="linear", fill=-1024)
    fig = viz.study_figure(t.suv, ct=ctres, views=["coronal"], legend=False)
    idx = np.asarray(fig)
    pet = viz.render(viz.mip(t.suv, "coronal"), pixel_mm=2.0)
    strip = idx[: viz.TEXT_LINE_PX]
    ct_strip = strip[:, pet.width + 6 :]
    _strip_is_readable(ct_strip)
    # the CT panel itself is black around the body, and the title is not drawn on it
    assert (idx[viz.TEXT_LINE_PX :, pet.width + 6 :] == 0).mean() > 0.3
    # the text is black, its background white: different colours in RGB
    rgb = np.asarray(fig.convert("RGB"))[: viz.TEXT_LINE_PX, pet.width + 6 :]
    assert {tuple(p) for p in rgb.reshape(-1, 3)} == {(0, 0, 0), (255, 255, 255)}


def test_narrow_figure_keeps_its_whole_title_and_legend() -> None:
    # a small field of view: 30 voxels of 2 mm -> panels of 60 px
    gt, pred = _two_blobs()
    suv = gt.with_array(gt.array * 12.0 + pred.array * 6.0)
    fig = viz.study_figure(suv, gt, pred=pred, views=["coronal"], pixel_mm=2.0)
    idx = np.asarray(fig)
    title_w = viz._text_width("coronal prediction")
    panel = viz.render(viz.mip(suv, "coronal"), pixel_mm=2.0)
    assert panel.width < title_w  # the title is longer than the image ...
    strip = idx[: viz.TEXT_LINE_PX]
    _strip_is_readable(strip)
    text_cols = np.flatnonzero((strip == viz.colour_index("text")).any(axis=0))
    assert text_cols[-1] < fig.width - 1  # ... yet ends inside the canvas
    # the legend: every swatch (TP, FN, FP) drawn whole, with its text inside the canvas
    legend = idx[panel.height + viz.TEXT_LINE_PX :]
    for colour in ("tp", "fn", "fp"):
        ys, xs = np.nonzero(legend == viz.colour_index(colour))
        assert xs.size and (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) == (10, 10)
    text = legend == viz.colour_index("text")
    assert text.any() and not text[:, -1].any() and not text[-1].any()


def test_cli_mip_prediction_on_a_small_field_of_view(tmp_path: Path) -> None:
    gt, pred = _two_blobs()
    d = tmp_path / "S" / "st"
    d.mkdir(parents=True)
    nib.save(gt.with_array(gt.array * 12.0 + 1.0).to_nifti(), d / "SUV.nii.gz")
    nib.save(gt.to_nifti(), d / "SEG.nii.gz")
    nib.save(pred.to_nifti(), tmp_path / "pred.nii.gz")
    out = tmp_path / "cmp.png"
    args = ["mip", str(d), "-o", str(out), "--views", "coronal", "--pred"]
    res = CliRunner().invoke(app, [*args, str(tmp_path / "pred.nii.gz")])
    assert res.exit_code == 0, res.output
    idx = np.asarray(Image.open(out))
    assert (idx == viz.colour_index("fp")).sum() >= 100 + 9  # the FP swatch and component
    assert not (idx[:, -1] == viz.colour_index("text")).any()
