"""autoPET metrics against brute force written from the definitions, the challenge's
worked example, and the empty-ground-truth rules of each edition."""

from __future__ import annotations

import itertools
import math
from collections import deque

import cc3d
import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from petcorpus.metrics import aggregate_autopet, autopet_metrics, voxel_volume_source
from petcorpus.metrics.evaluate import autopet_metrics_nifti

# -- brute force, straight from the definitions ----------------------------------------------


def neighbour_offsets(connectivity: int) -> list[tuple[int, int, int]]:
    """6: shared face; 18: face or edge; 26: face, edge or corner."""
    limit = {6: 1, 18: 2, 26: 3}[connectivity]
    return [
        d for d in itertools.product((-1, 0, 1), repeat=3) if 0 < sum(abs(x) for x in d) <= limit
    ]


def flood_fill_components(mask: np.ndarray, connectivity: int = 18) -> list[list[tuple]]:
    """Connected components as lists of voxel indices, by breadth-first search."""
    seen = np.zeros(mask.shape, bool)
    comps = []
    offs = neighbour_offsets(connectivity)
    for start in itertools.product(*(range(s) for s in mask.shape)):
        if not mask[start] or seen[start]:
            continue
        comp, queue = [], deque([start])
        seen[start] = True
        while queue:
            v = queue.popleft()
            comp.append(v)
            for d in offs:
                w = tuple(a + b for a, b in zip(v, d, strict=True))
                if all(0 <= w[i] < mask.shape[i] for i in range(3)) and mask[w] and not seen[w]:
                    seen[w] = True
                    queue.append(w)
        comps.append(comp)
    return comps


def brute_autopet(gt: np.ndarray, pred: np.ndarray, edition: str) -> dict[str, float]:
    g, p = gt != 0, pred != 0
    fp = sum(len(c) for c in flood_fill_components(p) if not any(g[v] for v in c))
    gt_comps = flood_fill_components(g)
    fn = sum(len(c) for c in gt_comps if not any(p[v] for v in c))
    inter = sum(1 for v in zip(*np.nonzero(g), strict=True) if p[v])
    total = int(g.sum()) + int(p.sum())
    dice = 2 * inter / total if total else math.nan
    if not g.any() and edition != "I":
        dice, fn = math.nan, math.nan
    return {"dice": dice, "fp": float(fp), "fn": float(fn)}


def published_loop(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    """The published scripts' per-component loop (edition I form), for identity checks."""
    pc = cc3d.connected_components(pred, connectivity=18)
    fp = sum((pc == i).sum() for i in range(1, pc.max() + 1) if ((pc == i) * gt).sum() == 0)
    gc = cc3d.connected_components(gt, connectivity=18)
    fn = sum((gc == i).sum() for i in range(1, gc.max() + 1) if ((gc == i) * pred).sum() == 0)
    with np.errstate(invalid="ignore"):
        dice = 2 * (gt * pred).sum() / (gt.sum() + pred.sum())
    return float(dice), float(fp), float(fn)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


masks = (
    st.integers(2, 7)
    .flatmap(lambda n: st.tuples(st.just(n), st.integers(2, 7), st.integers(2, 6)))
    .flatmap(
        lambda shape: st.tuples(
            arrays(np.bool_, shape, elements=st.booleans()),
            arrays(np.bool_, shape, elements=st.booleans()),
        )
    )
)


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(masks, st.sampled_from(["I", "III", "IV"]))
def test_matches_brute_force(pair, edition) -> None:
    gt, pred = pair
    m = autopet_metrics(gt.astype(np.uint8), pred.astype(np.uint8), 0.5, edition=edition)
    ref = brute_autopet(gt, pred, edition)
    assert same(m.dice, ref["dice"])
    assert same(m.fp_voxels, ref["fp"])
    assert same(m.fn_voxels, ref["fn"])
    assert same(m.fp_volume_ml, ref["fp"] * 0.5)
    assert same(m.fn_volume_ml, ref["fn"] * 0.5)
    # lesion-wise counts from the flood fill too
    gcomps, pcomps = flood_fill_components(gt), flood_fill_components(pred)
    assert m.gt_lesions == len(gcomps) and m.pred_lesions == len(pcomps)
    assert m.lesion_tp == sum(any(pred[v] for v in c) for c in gcomps)
    assert m.lesion_fp == sum(not any(gt[v] for v in c) for c in pcomps)


@settings(max_examples=60, deadline=None)
@given(masks)
def test_matches_published_loop_edition_i(pair) -> None:
    gt, pred = (a.astype(np.uint8) for a in pair)
    m = autopet_metrics(gt, pred, 1.0, edition="I")
    dice, fp, fn = published_loop(gt, pred)
    assert same(m.dice, dice) and m.fp_voxels == fp and m.fn_voxels == fn


def worked_example() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((16, 16, 16), np.uint8)
    gt[2:6, 2:6, 2:6] = 1
    gt[9:13, 9:13, 9:13] = 1
    pred = np.zeros_like(gt)
    pred[3:7, 3:7, 3:7] = 1  # the first cube shifted by one voxel along each axis
    return gt, pred


@pytest.mark.parametrize("edition", ["I", "III", "IV"])
def test_challenge_worked_example(edition) -> None:
    gt, pred = worked_example()
    m = autopet_metrics(gt, pred, voxel_volume_ml=2.0 * 2.0 * 3.0 / 1000, edition=edition)
    assert m.fp_voxels == 0
    assert m.fn_voxels == 64
    assert m.dice == 0.28125  # 2 * 27 / (128 + 64)
    assert m.fn_volume_ml == pytest.approx(64 * 0.012)
    assert (m.lesion_tp, m.lesion_fn, m.lesion_fp) == (1, 1, 0)
    assert m.lesion_f1 == pytest.approx(2 / 3)


# Empty ground truth, per edition: (prediction empty?) -> (dice, fp voxels, fn voxels)
EMPTY_GT_TABLE = {
    ("I", True): (math.nan, 0.0, 0.0),
    ("I", False): (0.0, 8.0, 0.0),
    ("III", True): (math.nan, 0.0, math.nan),
    ("III", False): (math.nan, 8.0, math.nan),
    ("IV", True): (math.nan, 0.0, math.nan),
    ("IV", False): (math.nan, 8.0, math.nan),
}


@pytest.mark.parametrize(("edition", "pred_empty"), list(EMPTY_GT_TABLE))
def test_empty_ground_truth_table(edition, pred_empty) -> None:
    gt = np.zeros((6, 6, 6), np.uint8)
    pred = np.zeros_like(gt)
    if not pred_empty:
        pred[1:3, 1:3, 1:3] = 1
    m = autopet_metrics(gt, pred, 1.0, edition=edition)
    dice, fp, fn = EMPTY_GT_TABLE[(edition, pred_empty)]
    assert same(m.dice, dice) and same(m.fp_voxels, fp) and same(m.fn_voxels, fn)


def test_aggregate_is_nan_mean() -> None:
    gt, pred = worked_example()
    a = autopet_metrics(gt, pred, 1.0, edition="III")
    b = autopet_metrics(np.zeros_like(gt), pred, 1.0, edition="III")  # dice nan, fn nan
    agg = aggregate_autopet([a, b])
    assert agg["n_cases"] == 2
    assert agg["dice"] == a.dice
    assert agg["fn_volume_ml"] == 64.0
    assert agg["fp_volume_ml"] == pytest.approx((0 + 64) / 2)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="edition"):
        autopet_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), 1.0, edition="II")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shapes differ"):
        autopet_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), 1.0)


@pytest.mark.parametrize(("edition", "source"), [("I", "pred"), ("III", "gt"), ("IV", "pred")])
def test_voxel_volume_from_the_editions_header(tmp_path, edition, source) -> None:
    gt, pred = worked_example()
    # the prediction's header says 3.00005 mm slices: the same grid within 1e-4 mm, but a
    # different voxel volume, so the edition's choice of header shows in FNV.
    nib.save(nib.Nifti1Image(gt, np.diag([2.0, 2.0, 3.0, 1.0])), tmp_path / "gt.nii.gz")
    nib.save(nib.Nifti1Image(pred, np.diag([2.0, 2.0, 3.00005, 1.0])), tmp_path / "pred.nii.gz")
    assert voxel_volume_source(edition) == source
    m = autopet_metrics_nifti(tmp_path / "gt.nii.gz", tmp_path / "pred.nii.gz", edition=edition)
    pix = {f: nib.load(tmp_path / f"{f}.nii.gz").header["pixdim"] for f in ("gt", "pred")}
    assert pix["gt"][3] != pix["pred"][3]
    vol = {f: float(p[1] * p[2] * p[3] / 1000) for f, p in pix.items()}  # float32, as they do
    assert m.fn_volume_ml == 64 * vol[source]


def test_connectivity_other_than_6_18_26_is_a_clear_error():
    from petcorpus.metrics.autopet import component_overlaps

    mask = np.zeros((4, 4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="must be 6, 18 or 26, got 4"):
        component_overlaps(mask, mask, connectivity=4)
