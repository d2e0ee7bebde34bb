"""Lesion statistics against brute force from the definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from petcorpus.errors import GeometryMismatchError
from petcorpus.metrics import PEAK_RADIUS_MM, lesion_statistics, study_summary
from petcorpus.volume import Volume
from tests.conftest import phantom
from tests.test_metrics_autopet import flood_fill_components


def brute_lesions(suv: np.ndarray, mask: np.ndarray, affine: np.ndarray, radius: float):
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000
    out = []
    for comp in flood_fill_components(mask != 0, 18):
        vals = [float(suv[v]) for v in comp]
        hottest = max(comp, key=lambda v: (suv[v], [-x for x in v]))  # first in C order
        peak_vals = [
            float(suv[w])
            for w in itertools.product(*(range(s) for s in suv.shape))
            if sum(((w[i] - hottest[i]) * spacing[i]) ** 2 for i in range(3)) <= radius**2
        ]
        centre = np.mean(np.array(comp, dtype=float), axis=0)
        world = affine[:3, :3] @ centre + affine[:3, 3]
        mean = sum(vals) / len(vals)
        out.append(
            {
                "voxels": len(comp),
                "suv_max": max(vals),
                "suv_mean": mean,
                "suv_peak": sum(peak_vals) / len(peak_vals),
                "mtv_ml": len(comp) * voxel_ml,
                "tlg": mean * len(comp) * voxel_ml,
                "centroid": world,
                "hottest": hottest,
            }
        )
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.tuples(st.integers(2, 7), st.integers(2, 7), st.integers(2, 5)).flatmap(
        lambda s: st.tuples(
            arrays(np.bool_, s, elements=st.booleans()),
            arrays(np.float32, s, elements=st.floats(0, 20, width=32)),
        )
    ),
    st.tuples(*(st.floats(0.5, 5.0) for _ in range(3))),
    st.floats(1.0, 9.0),
)
def test_matches_brute_force(pair, spacing, radius) -> None:
    mask, suv = pair
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 3.0]
    vol = Volume(suv, affine)
    ours = lesion_statistics(vol, mask, peak_radius_mm=radius)
    ref = brute_lesions(suv, mask, affine, radius)
    assert len(ours) == len(ref)
    # cc3d numbers components in scan order, as the flood fill finds them
    for o, r in zip(ours, ref, strict=True):
        assert o.voxels == r["voxels"]
        assert o.suv_max == r["suv_max"]
        assert (o.hottest_i, o.hottest_j, o.hottest_k) == r["hottest"]
        assert o.suv_mean == pytest.approx(r["suv_mean"], rel=1e-12)
        assert o.suv_peak == pytest.approx(r["suv_peak"], rel=1e-12)
        assert o.mtv_ml == pytest.approx(r["mtv_ml"], rel=1e-12)
        assert o.tlg == pytest.approx(r["tlg"], rel=1e-12, abs=1e-12)
        assert np.allclose([o.centroid_x_mm, o.centroid_y_mm, o.centroid_z_mm], r["centroid"])
    summary = study_summary(ours)
    assert summary.lesion_count == len(ref)
    if len(ref) >= 2:
        dmax = max(
            float(np.linalg.norm(a["centroid"] - b["centroid"]))
            for a, b in itertools.combinations(ref, 2)
        )
        assert summary.dmax_mm == pytest.approx(dmax)


def test_peak_sphere_is_1_ml() -> None:
    assert 4 / 3 * math.pi * PEAK_RADIUS_MM**3 == pytest.approx(1000.0)


def test_peak_on_fine_grid_uses_the_sphere() -> None:
    """2 mm voxels: the 1 cm³ sphere holds the voxels with centres within 6.2035 mm —
    123 of them (|offset|² <= 9.62 in voxel units); a uniform SUV inside gives that SUV."""
    suv = np.zeros((21, 21, 21), np.float32)
    c = np.indices(suv.shape) - 10
    inside = (c**2).sum(axis=0) * 4.0 <= PEAK_RADIUS_MM**2
    assert inside.sum() == 123
    suv[inside] = 3.0
    suv[10, 10, 10] = 3.5
    mask = np.zeros(suv.shape, np.uint8)
    mask[10, 10, 10] = 1
    (les,) = lesion_statistics(Volume(suv, np.diag([2.0, 2.0, 2.0, 1.0])), mask)
    assert les.suv_peak == pytest.approx((122 * 3.0 + 3.5) / 123)
    assert les.suv_max == 3.5 and les.voxels == 1


def test_phantom_lesions_and_ras_centroids() -> None:
    study = phantom(seed=1, size="small", diagnosis="LYMPHOMA")
    t = study.truth
    stats = lesion_statistics(t.suv, t.lesion_mask)
    assert len(stats) >= 2
    total = sum(s.voxels for s in stats)
    assert total == int((t.lesion_mask.array != 0).sum())
    # every centroid lies inside the mask's world bounds
    lo, hi = t.suv.bounds()
    for s in stats:
        xyz = np.array([s.centroid_x_mm, s.centroid_y_mm, s.centroid_z_mm])
        assert np.all(xyz >= lo - 1e-6) and np.all(xyz <= hi + 1e-6)
        assert s.suv_max >= s.suv_mean > 0 and s.tlg == pytest.approx(s.suv_mean * s.mtv_ml)


def test_empty_and_mismatch() -> None:
    vol = Volume(np.ones((4, 4, 4), np.float32), np.eye(4))
    assert lesion_statistics(vol, np.zeros((4, 4, 4))) == []
    s = study_summary([])
    assert s.lesion_count == 0 and s.total_mtv_ml == 0 and math.isnan(s.dmax_mm)
    with pytest.raises(GeometryMismatchError):
        lesion_statistics(vol, np.zeros((4, 4, 5)))
