"""Overlap and surface metrics against brute force from the definitions, and against MONAI."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from petcorpus.metrics import overlap_metrics, surface_distances, surface_metrics

# -- brute force --------------------------------------------------------------------------


def brute_border(mask: np.ndarray, connectivity: int) -> list[tuple[int, int, int]]:
    """A mask voxel is on the border when a neighbour (per connectivity) is background or
    outside the array."""
    limit = {1: 1, 2: 2, 3: 3}[connectivity]
    offs = [d for d in itertools.product((-1, 0, 1), repeat=3) if 0 < sum(map(abs, d)) <= limit]
    out = []
    for v in itertools.product(*(range(s) for s in mask.shape)):
        if not mask[v]:
            continue
        for d in offs:
            w = tuple(a + b for a, b in zip(v, d, strict=True))
            inside = all(0 <= w[i] < mask.shape[i] for i in range(3))
            if not inside or not mask[w]:
                out.append(v)
                break
    return out


def brute_directed(src, dst, spacing) -> list[float]:
    out = []
    for p in src:
        best = math.inf
        for q in dst:
            d2 = sum(((p[i] - q[i]) * spacing[i]) ** 2 for i in range(3))
            best = min(best, d2)
        out.append(math.sqrt(best))
    return out


def brute_metrics(gt, pred, spacing, tol, connectivity=1):
    bg, bp = brute_border(gt, connectivity), brute_border(pred, connectivity)
    if not bg and not bp:
        return None
    if not bg or not bp:
        return {"n": (len(bg), len(bp))}
    dpg = brute_directed(bp, bg, spacing)
    dgp = brute_directed(bg, bp, spacing)
    both = dpg + dgp
    return {
        "assd": sum(both) / len(both),
        "hd": max(both),
        "hd95": max(np.percentile(dpg, 95), np.percentile(dgp, 95)),
        "hd95_pooled": np.percentile(both, 95),
        "nsd": sum(d <= tol for d in both) / len(both),
        "n": (len(bg), len(bp)),
    }


shapes = st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 4))
mask_pairs = shapes.flatmap(
    lambda s: st.tuples(arrays(np.bool_, s, elements=st.booleans()), arrays(np.bool_, s))
)
spacings = st.tuples(*(st.floats(0.3, 4.0, allow_nan=False) for _ in range(3)))
#: Pairs of small label maps with labels 0-3.
label_map_pairs = shapes.flatmap(
    lambda s: st.tuples(
        arrays(np.uint8, s, elements=st.integers(0, 3)),
        arrays(np.uint8, s, elements=st.integers(0, 3)),
    )
)


@settings(max_examples=80, deadline=None)
@given(mask_pairs, spacings, st.sampled_from([1, 3]), st.floats(0.0, 5.0))
def test_surface_matches_brute_force(pair, spacing, connectivity, tol) -> None:
    gt, pred = pair
    m = surface_metrics(
        gt.astype(np.uint8),
        pred.astype(np.uint8),
        spacing,
        labels=[1],
        tolerance_mm=tol,
        connectivity=connectivity,
    )[1]
    ref = brute_metrics(gt, pred, spacing, tol, connectivity)
    if ref is None:
        assert math.isnan(m.assd) and math.isnan(m.hd) and math.isnan(m.nsd)
        return
    assert (m.gt_border_voxels, m.pred_border_voxels) == ref["n"]
    if 0 in ref["n"]:
        assert m.assd == m.hd == m.hd95 == math.inf and m.nsd == 0.0
        return
    # identical formula (sum of squared mm offsets, then sqrt): identical numbers
    assert m.hd == ref["hd"]
    assert m.hd95 == ref["hd95"]
    assert m.nsd == ref["nsd"]
    assert m.assd == pytest.approx(ref["assd"], rel=1e-12)  # summation order only


@settings(max_examples=40, deadline=None)
@given(mask_pairs, spacings)
def test_pooled_hd95_is_medpy_style(pair, spacing) -> None:
    gt, pred = pair
    ref = brute_metrics(gt, pred, spacing, 1.0)
    if ref is None or 0 in ref["n"]:
        return
    m = surface_metrics(gt, pred, spacing, labels=[1], hd_mode="pooled")[1]
    assert m.hd95 == ref["hd95_pooled"]


@settings(max_examples=60, deadline=None)
@given(
    label_map_pairs,
    spacings,
)
def test_multilabel_equals_label_by_label(pair, spacing) -> None:
    """Cropping per label to the bounding box changes nothing: equal to each label alone."""
    gt, pred = pair
    multi = surface_metrics(gt, pred, spacing, labels=[1, 2, 3])
    ov = overlap_metrics(gt, pred, spacing, labels=[1, 2, 3])
    for lab in (1, 2, 3):
        d1, d2 = surface_distances(gt == lab, pred == lab, spacing)
        single = surface_metrics(
            (gt == lab).astype(np.uint8), (pred == lab).astype(np.uint8), spacing, labels=[1]
        )[1]
        a, b = multi[lab].as_dict(), single.as_dict()
        a.pop("label"), b.pop("label")
        assert np.allclose(list(a.values()), list(b.values()), rtol=0, atol=0, equal_nan=True)
        assert d1.size == single.pred_border_voxels and d2.size == single.gt_border_voxels
        g, p = gt == lab, pred == lab
        tp, ng, npr = int((g & p).sum()), int(g.sum()), int(p.sum())
        assert ov[lab].tp_voxels == tp and ov[lab].gt_voxels == ng
        assert (ov[lab].dice == 2 * tp / (ng + npr)) if ng + npr else math.isnan(ov[lab].dice)


def test_empty_cases_documented_values() -> None:
    z = np.zeros((5, 5, 5), np.uint8)
    one = z.copy()
    one[1:3, 1:3, 1:3] = 1
    both_empty = surface_metrics(z, z, (1, 1, 1), labels=[1])[1]
    assert math.isnan(both_empty.assd) and math.isnan(both_empty.hd95)
    assert math.isnan(both_empty.nsd)
    for g, p in ((z, one), (one, z)):
        m = surface_metrics(g, p, (1, 1, 2), labels=[1])[1]
        assert m.assd == math.inf and m.hd == math.inf and m.hd95 == math.inf and m.nsd == 0.0
    o = overlap_metrics(z, z, (1, 1, 1), labels=[1])[1]
    assert math.isnan(o.dice) and math.isnan(o.iou)
    assert overlap_metrics(z, one, (1, 1, 1))[1].dice == 0.0


def test_label_touching_the_array_edge() -> None:
    """A label that fills a face of the array: its border there counts (outside =
    background), as scipy/MONAI/medpy see it."""
    g = np.zeros((4, 4, 4), np.uint8)
    g[:, :, :2] = 1
    p = np.zeros_like(g)
    p[:, :, :3] = 1
    m = surface_metrics(g, p, (1.0, 1.0, 2.0), labels=[1])[1]
    assert m.hd == 2.0
    assert m.gt_border_voxels == 32  # every voxel of a 2-thick slab is on the border


# -- MONAI ----------------------------------------------------------------------------------


def _monai_cases():
    rng = np.random.default_rng(7)
    from scipy import ndimage

    cases = []
    for spacing in [(1.0, 1.0, 1.0), (0.8, 1.3, 2.7), (2.0364, 2.0364, 3.0)]:
        for _ in range(3):
            g = ndimage.binary_dilation(rng.random((18, 16, 12)) > 0.985, iterations=2)
            p = ndimage.binary_dilation(rng.random(g.shape) > 0.985, iterations=2)
            p |= g & (rng.random(g.shape) > 0.3)
            cases.append((g, p, spacing))
    return cases


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def test_surface_equals_monai() -> None:
    """Options that match: petcorpus connectivity=1, hd_mode="max" ≡ MONAI
    compute_average_surface_distance(symmetric=True, distance_metric="euclidean",
    spacing=...), compute_hausdorff_distance(percentile=None and 95, directed=False,
    distance_metric="euclidean", spacing=...), compute_surface_dice(use_subvoxels=False,
    class_thresholds=[tol], spacing=...), all with include_background=True on a
    one-channel mask. MONAI returns float32; we return float64: equal within 1e-6 mm."""
    torch = pytest.importorskip("torch", reason="MONAI comparison needs torch (bench extra)")
    metrics = pytest.importorskip("monai.metrics", reason="MONAI is not installed (bench extra)")
    for g, p, spacing in _monai_cases():
        ours = surface_metrics(g.astype(np.uint8), p.astype(np.uint8), spacing, tolerance_mm=1.5)[
            1
        ]
        P = torch.from_numpy(p)[None, None].float()
        G = torch.from_numpy(g)[None, None].float()
        sp = list(spacing)
        asd = metrics.compute_average_surface_distance(
            P, G, include_background=True, symmetric=True, spacing=sp
        ).item()
        hd = metrics.compute_hausdorff_distance(P, G, include_background=True, spacing=sp).item()
        hd95 = metrics.compute_hausdorff_distance(
            P, G, include_background=True, percentile=95, spacing=sp
        ).item()
        nsd = metrics.compute_surface_dice(
            P, G, class_thresholds=[1.5], include_background=True, spacing=sp
        ).item()
        assert abs(ours.assd - asd) <= 1e-6
        assert abs(ours.hd - hd) <= 1e-6
        assert abs(ours.nsd - nsd) <= 1e-6
        assert ours.hd > 0 and ours.nsd < 1  # non-trivial cases
        # The per-voxel distances themselves, in the same (C) order of border voxels:
        _, (m_pg, m_gp), _ = metrics.utils.get_edge_surface_distance(
            P[0, 0], G[0, 0], spacing=sp, symmetric=True
        )
        d_pg, d_gp = surface_distances(g, p, spacing)
        assert np.abs(d_pg - m_pg.numpy()).max() <= 1e-6
        assert np.abs(d_gp - m_gp.numpy()).max() <= 1e-6
        # HD95: MONAI's torch.quantile runs in float32 (q = 0.95 rounded to float32 shifts the
        # interpolation point by ~1e-8 x n): within 1e-6 of the same percentile of MONAI's own
        # distances taken in float64, and within float32 rounding of its public result.
        ref95 = max(
            np.percentile(m_pg.double().numpy(), 95), np.percentile(m_gp.double().numpy(), 95)
        )
        assert abs(ours.hd95 - ref95) <= 1e-6
        assert ours.hd95 == pytest.approx(hd95, rel=2e-6)


@settings(max_examples=40, deadline=None)
@given(mask_pairs, spacings)
def test_edt_backend_within_float32(pair, spacing) -> None:
    """The `edt` backend (float32 distances) agrees with the exact scipy one to ~1e-7."""
    pytest.importorskip("edt", reason="the edt package is not installed")
    gt, pred = pair
    a = surface_metrics(gt, pred, spacing, labels=[1])[1].as_dict()
    b = surface_metrics(gt, pred, spacing, labels=[1], backend="edt")[1].as_dict()
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-6, abs=1e-6, nan_ok=True), k


def test_workers_give_identical_results() -> None:
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 6, (12, 10, 8)).astype(np.uint8)
    pred = np.where(rng.random(gt.shape) < 0.2, rng.integers(0, 6, gt.shape), gt).astype(np.uint8)
    a = surface_metrics(gt, pred, (1.0, 1.5, 2.5))
    b = surface_metrics(gt, pred, (1.0, 1.5, 2.5), workers=3)
    assert a == b and sorted(a) == [1, 2, 3, 4, 5]


# -- one pass over the label map ------------------------------------------------------------


@pytest.mark.parametrize("connectivity", [1, 2, 3])
@pytest.mark.parametrize("seed", range(6))
def test_one_pass_borders_equal_per_label_erosion(connectivity: int, seed: int) -> None:
    """The borders of all labels from one pass (a voxel is on its label's border when a
    neighbour holds another label or lies outside the array) equal, label by label and
    voxel by voxel, ``mask XOR binary_erosion(mask, border_value=0)``; labels fill the
    array's faces, edges and corners."""
    from scipy import ndimage

    from petcorpus.metrics.surface import _label_borders

    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(1, 14, 3))
    lab = rng.integers(0, 6, shape).astype(np.uint16)
    lab = ndimage.median_filter(lab, size=2) if seed % 2 else lab  # blobs, and noise
    lab[0] = 1  # a label filling a whole face of the array
    lab[..., -1] = 5
    pad = tuple(int(p) for p in rng.integers(0, 3, 3))
    one_pass = _label_borders(lab, connectivity, pad)
    inner = one_pass[tuple(slice(p, p + n) for p, n in zip(pad, shape, strict=True))]
    assert not one_pass.sum() - inner.sum()  # the padding is zeros
    st = ndimage.generate_binary_structure(3, connectivity)
    for value in range(1, 6):
        mask = lab == value
        erosion = mask ^ ndimage.binary_erosion(mask, structure=st, border_value=0)
        np.testing.assert_array_equal(inner == value, erosion)
    np.testing.assert_array_equal(inner != 0, (inner == lab) & (inner != 0))


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def test_many_labels_equal_monai_label_by_label() -> None:
    """Twelve labels in one call, against MONAI on each label's binary masks (1e-6)."""
    torch = pytest.importorskip("torch", reason="MONAI comparison needs torch (bench extra)")
    metrics = pytest.importorskip("monai.metrics", reason="MONAI is not installed (bench extra)")
    from scipy import ndimage

    rng = np.random.default_rng(11)
    shape = (30, 26, 14)
    seeds = rng.integers(0, 12, shape).astype(np.uint8) * (rng.random(shape) > 0.97)
    gt = ndimage.maximum_filter(seeds, size=5)
    pred = np.where(rng.random(shape) > 0.9, ndimage.maximum_filter(seeds, size=3), gt)
    pred[:, :, :2] = 3  # a label along the array's border
    sp = (0.9, 1.4, 2.5)
    ours = surface_metrics(gt, pred, sp, tolerance_mm=2.0)
    assert len(ours) >= 8
    for lab, m in ours.items():
        G = torch.from_numpy(gt == lab)[None, None].float()
        P = torch.from_numpy(pred == lab)[None, None].float()
        if not G.any() or not P.any():
            assert m.assd == math.inf
            continue
        asd = metrics.compute_average_surface_distance(
            P, G, include_background=True, symmetric=True, spacing=list(sp)
        ).item()
        hd = metrics.compute_hausdorff_distance(P, G, include_background=True, spacing=list(sp))
        nsd = metrics.compute_surface_dice(
            P, G, class_thresholds=[2.0], include_background=True, spacing=list(sp)
        ).item()
        assert abs(m.assd - asd) <= 1e-6 and abs(m.hd - hd.item()) <= 1e-6
        assert abs(m.nsd - nsd) <= 1e-6


def _assert_labels_equal_brute_force(gt, pred, spacing, multi) -> None:
    """Labels 1-3 of ``multi`` (tolerance 1 mm) equal the brute-force definition."""
    for lab in (1, 2, 3):
        ref = brute_metrics(gt == lab, pred == lab, spacing, 1.0)
        m = multi[lab]
        if ref is None:
            assert math.isnan(m.assd)
        elif 0 in ref["n"]:
            assert m.assd == math.inf
        else:
            assert (m.hd, m.hd95, m.nsd) == (ref["hd"], ref["hd95"], ref["nsd"])
            assert m.assd == pytest.approx(ref["assd"], rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    label_map_pairs,
    spacings,
)
def test_far_voxels_by_kd_tree_equal_brute_force(pair, spacing) -> None:
    """With the ring search cut to the face neighbours, most distances come from the k-d
    tree stage: still the brute-force numbers."""
    import petcorpus.metrics.surface as surface

    gt, pred = pair
    saved = surface._RING_VOXELS
    surface._RING_VOXELS = 1
    try:
        multi = surface_metrics(gt, pred, spacing, labels=[1, 2, 3], tolerance_mm=1.0)
    finally:
        surface._RING_VOXELS = saved
    _assert_labels_equal_brute_force(gt, pred, spacing, multi)


@settings(max_examples=40, deadline=None)
@given(
    label_map_pairs,
    spacings,
    st.integers(1, 7),
)
def test_ring_search_in_blocks_equals_brute_force(pair, spacing, block) -> None:
    """Border voxels searched a few at a time (blocks of 1-7, every block boundary and a
    block left with far voxels): still the brute-force numbers."""
    import petcorpus.metrics.surface as surface

    gt, pred = pair
    saved = surface._RING_BLOCK
    surface._RING_BLOCK = block
    try:
        multi = surface_metrics(gt, pred, spacing, labels=[1, 2, 3], tolerance_mm=1.0)
    finally:
        surface._RING_BLOCK = saved
    _assert_labels_equal_brute_force(gt, pred, spacing, multi)
