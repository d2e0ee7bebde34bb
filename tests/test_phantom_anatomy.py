"""The phantom's lesions sit in tissue, never in air: in the body and in their site's tissue."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from petcorpus.phantom import make_study
from petcorpus.phantom.anatomy import Tissue, make_body, paint_lesions
from petcorpus.phantom.placement import SITE_TISSUES, SITES, make_lesions
from petcorpus.phantom.study import PhantomGeometry
from petcorpus.volume import Volume

VENDORS = ("siemens", "ge", "philips")


def _outline(labels: np.ndarray) -> np.ndarray:
    """The body: tissue (neither air nor lung), holes (the lungs) filled slice by slice."""
    tissue = (labels != Tissue.AIR) & (labels != Tissue.LUNG)
    return np.stack(
        [ndimage.binary_fill_holes(tissue[:, :, k]) for k in range(tissue.shape[2])], axis=2
    )


def _lps_axes(vol: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates (LPS mm) of an axis-aligned RAS volume."""
    a, n = vol.affine, vol.array.shape
    return (
        -(a[0, 3] + a[0, 0] * np.arange(n[0])),
        -(a[1, 3] + a[1, 1] * np.arange(n[1])),
        a[2, 3] + a[2, 2] * np.arange(n[2]),
    )


def _check_study(study) -> list[str]:
    """Every lesion voxel (PET grid, and as drawn on the CT grid): CT above -200 HU, inside
    the body outline, and on no organ but its site's."""
    t = study.truth
    problems = []
    px, py, pz = _lps_axes(t.pet_labels)
    cx, cy, cz = _lps_axes(t.ct_labels)
    pet_out, ct_out = _outline(t.pet_labels.array), _outline(t.ct_labels.array)
    # the CT nearest to each PET voxel centre (the grids share slice positions)
    ix = np.clip(np.rint((px - cx[0]) / (cx[1] - cx[0])).astype(int), 0, cx.size - 1)
    iy = np.clip(np.rint((py - cy[0]) / (cy[1] - cy[0])).astype(int), 0, cy.size - 1)
    hu = t.ct_hu.array
    union = np.zeros(t.lesion_mask.array.shape, dtype=bool)
    for i, les in enumerate(t.lesions):
        allowed = list(SITE_TISSUES[les.site])
        name = f"seed lesion {i} ({les.site})"
        m = paint_lesions([les], px, py, pz).astype(bool)
        union |= m
        if not m.any():
            problems.append(f"{name}: no PET voxel")
            continue
        if not np.isin(t.pet_labels.array[m], allowed).all():
            problems.append(f"{name}: on another organ (PET grid)")
        if not pet_out[m].all():
            problems.append(f"{name}: outside the body (PET grid)")
        i_, j_, k_ = np.nonzero(m)
        if (hu[ix[i_], iy[j_], k_] <= -200).any():
            problems.append(f"{name}: CT at PET voxels <= -200 HU")
        mc = paint_lesions([les], cx, cy, cz).astype(bool)
        if not np.isin(t.ct_labels.array[mc], allowed).all():
            problems.append(f"{name}: on another organ (CT grid)")
        if not ct_out[mc].all():
            problems.append(f"{name}: outside the body (CT grid)")
        if (hu[mc] <= -200).any():
            problems.append(f"{name}: CT <= -200 HU")
    if not np.array_equal(union, t.lesion_mask.array.astype(bool)):
        problems.append("truth lesions do not paint the truth lesion mask")
    return problems


@pytest.mark.parametrize("seed", range(50))
def test_small_lesions_in_tissue_inside_body(seed):
    vendor = VENDORS[seed % 3]
    study = make_study(seed=seed, size="small", vendor=vendor)
    assert _check_study(study) == [], (seed, vendor)


@pytest.mark.parametrize("diagnosis", ["LYMPHOMA", "MELANOMA", "LUNG_CANCER"])
def test_placement_does_not_depend_on_vendor(diagnosis):
    studies = [make_study(seed=21, size="small", vendor=v, diagnosis=diagnosis) for v in VENDORS]
    assert studies[0].truth.lesions  # something to compare
    for st in studies[1:]:
        assert st.truth.lesions == studies[0].truth.lesions
        assert np.array_equal(st.truth.ct_hu.array, studies[0].truth.ct_hu.array)
        assert _check_study(st) == []


def test_truth_records_what_was_placed():
    t = make_study(seed=24, size="small", vendor="siemens", diagnosis="MELANOMA").truth
    sites = [les.planned_site for les in t.lesions]
    # every planned site is asked for, in order (a lesion with no room would be missing)
    assert [s for s in SITES["MELANOMA"] for _ in range(2 if s.endswith("_pair") else 1)] == sites
    for les in t.lesions:
        rx, ry, rz = les.shape.radii
        assert les.volume_ml == pytest.approx(4 / 3 * np.pi * rx * ry * rz / 1000)
        assert les.center_mm == les.shape.center and les.site in SITE_TISSUES
    # seed 24's subcutaneous lesion has no room under this thin subject's skin: it moved
    moved = [les for les in t.lesions if les.site != les.planned_site]
    assert [(m.planned_site, m.site) for m in moved] == [("subcutaneous", "abdominal")]


def test_lesions_are_soft_tissue_in_ct():
    t = make_study(seed=16, size="small", vendor="ge", diagnosis="LUNG_CANCER").truth
    cx, cy, cz = _lps_axes(t.ct_labels)
    lung = [les for les in t.lesions if les.site.startswith("lung")]
    assert lung
    m = paint_lesions(lung, cx, cy, cz).astype(bool)
    assert 20 < float(np.median(t.ct_hu.array[m])) < 60  # soft tissue, not lung (-850)


def test_full_size_placement():
    """The placement on the full-size geometry for 50 subjects of every width (no DICOM):
    each lesion, grown as drawn in CT, is in its tissue on a 1 mm check and in the body."""
    geo = PhantomGeometry.preset("full")
    margin = geo.ct_pixel_mm + 3.0
    diagnoses = ("LYMPHOMA", "MELANOMA", "LUNG_CANCER")
    for seed in range(50):
        rng = np.random.default_rng(seed)
        width = float(np.linspace(0.85, 1.2, 50)[seed])
        body = make_body(rng, 0.0, width_scale=width)
        lesions = make_lesions(
            rng,
            body,
            diagnoses[seed % 3],
            min_radius=1.2 * max(geo.pet_pixel_mm, geo.slice_mm),
            gap=1.5 * max(geo.pet_pixel_mm, geo.slice_mm),
            margin=margin,
            placement_rng=np.random.default_rng([seed, 22]),
        )
        assert len(lesions) >= len(SITES[diagnoses[seed % 3]])
        for les in lesions:
            r = np.asarray(les.shape.radii) + geo.ct_pixel_mm
            g = [np.arange(-ri, ri + 0.5, 1.0) for ri in r]
            pts = np.stack(np.meshgrid(*g, indexing="ij"), -1).reshape(-1, 3)
            pts = pts[np.sum((pts / r) ** 2, axis=1) <= 1.0] + np.asarray(les.shape.center)
            labels = body.labels_at(pts)
            assert np.isin(labels, list(SITE_TISSUES[les.site])).all(), (seed, les.site)
            # in the body: the outline of the lesion's middle slice, 2 mm grid
            xs = np.arange(-260.0, 260.0, 2.0)
            z = les.shape.center[2]
            sl = body.labels_on_grid(xs, xs, np.array([z]))
            out = _outline(sl)[:, :, 0]
            near = np.abs(pts[:, 2] - z) < 1.0
            ii = np.clip(np.rint((pts[near, 0] - xs[0]) / 2.0).astype(int), 0, xs.size - 1)
            jj = np.clip(np.rint((pts[near, 1] - xs[0]) / 2.0).astype(int), 0, xs.size - 1)
            assert out[ii, jj].all(), (seed, les.site)


@pytest.mark.slow
def test_full_size_study_lesions_in_tissue():
    study = make_study(seed=23, size="full", vendor="ge", diagnosis="LYMPHOMA")
    assert _check_study(study) == []
