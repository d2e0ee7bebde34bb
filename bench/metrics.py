"""Benchmark: petcorpus metrics against MONAI and the published autoPET evaluation loop.

(a) 130 labels on a 400x400x330 volume with anisotropic spacing (1.5, 1.5, 3.0) mm:
    petcorpus ``overlap_metrics`` + ``surface_metrics`` (Dice, IoU, volumes, ASSD, HD, HD95,
    NSD for every label) against MONAI's per-label loop (``DiceMetric``,
    ``compute_average_surface_distance(symmetric=True)``,
    ``compute_hausdorff_distance(percentile=95)``), one binary channel per label as a user
    would call them. MONAI on all 130 labels takes minutes, so by default it runs on every
    k-th label (``--monai-labels``) and its time is extrapolated to 130 labels (said in the
    output); the values are compared on those labels.
(b) autoPET metrics on a 400x400x326 PET grid, a noisy prediction with hundreds of
    components: petcorpus ``autopet_metrics`` against the per-component full-volume loop of
    the published evaluation script (``np.isin(cc, idx)`` per component, products of the
    float64 arrays that ``get_fdata`` gives), re-implemented here from its definition.

Run: ``python bench/metrics.py`` (add ``--quick`` for a smaller, faster run, ``--breakdown``
for where petcorpus' time goes in (a) and whether its threads overlap).
"""

from __future__ import annotations

import argparse
import statistics
import time

import cc3d
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from petcorpus.metrics import autopet_metrics, overlap_metrics, surface_metrics


# -- data ------------------------------------------------------------------------------------
def organ_labels(shape, n_labels: int, seed: int, jitter_vox: float) -> np.ndarray:
    """A body-shaped region cut into ``n_labels`` compact 'organs' (Voronoi cells of random
    seeds), built at half resolution and upsampled. ``jitter_vox`` moves the seeds (for the
    'prediction')."""
    rng = np.random.default_rng(seed)
    half = tuple(s // 2 for s in shape)
    idx = np.indices(half, dtype=np.float32).reshape(3, -1).T
    c = np.array(half, np.float32) / 2
    r = np.array(half, np.float32) * np.array([0.45, 0.35, 0.49], np.float32)
    body = (((idx - c) / r) ** 2)[:, :2].sum(axis=1) <= 1.0
    body &= np.abs(idx[:, 2] - c[2]) <= r[2]
    seeds_rng = np.random.default_rng(1234)
    pts = idx[body][seeds_rng.choice(int(body.sum()), n_labels, replace=False)]
    pts = pts + rng.normal(0, jitter_vox, pts.shape).astype(np.float32)
    _, nearest = cKDTree(pts).query(idx[body], workers=-1)
    lab = np.zeros(len(idx), np.uint8)
    lab[body] = nearest.astype(np.uint8) + 1
    lab = lab.reshape(half)
    full = lab.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    out = np.zeros(shape, np.uint8)
    out[: full.shape[0], : full.shape[1], : full.shape[2]] = full
    return out


def lesion_case(shape, n_lesions: int, n_fp: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth spheres; the prediction dilates most of them, misses some and adds
    ``n_fp`` small blobs: hundreds of 18-connected components."""
    rng = np.random.default_rng(seed)
    gt = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    zz = np.indices((15, 15, 15)) - 7
    for i in range(n_lesions):
        rad = rng.uniform(2, 7)
        ball = (zz**2).sum(axis=0) <= rad**2
        o = [int(rng.integers(10, s - 25)) for s in shape]
        sl = tuple(slice(a, a + 15) for a in o)
        gt[sl] |= ball
        if i % 5:  # 1 in 5 lesions missed
            pred[sl] |= ndimage.binary_dilation(ball) if i % 2 else ball
    for _ in range(n_fp):
        o = [int(rng.integers(2, s - 5)) for s in shape]
        pred[o[0] : o[0] + rng.integers(1, 4), o[1] : o[1] + 2, o[2] : o[2] + 2] = 1
    return gt.astype(np.float64), pred.astype(np.float64)  # get_fdata gives float64


# -- peers -----------------------------------------------------------------------------------
def published_autopet(gt: np.ndarray, pred: np.ndarray, voxel_vol: float):
    """The evaluation scripts' loop (autoPET I/IV form), from its definition."""
    pred_cc = cc3d.connected_components(pred, connectivity=18)
    false_pos = 0
    for idx in range(1, pred_cc.max() + 1):
        comp_mask = np.isin(pred_cc, idx)
        if (comp_mask * gt).sum() == 0:
            false_pos = false_pos + comp_mask.sum()
    gt_cc = cc3d.connected_components(gt, connectivity=18)
    false_neg = 0
    for idx in range(1, gt_cc.max() + 1):
        comp_mask = np.isin(gt_cc, idx)
        if (comp_mask * pred).sum() == 0:
            false_neg = false_neg + comp_mask.sum()
    dice = 2 * (gt * pred).sum() / (gt.sum() + pred.sum())
    return float(dice), false_pos * voxel_vol, false_neg * voxel_vol


def monai_per_label(gt, pred, spacing, labels):
    import torch
    from monai.metrics import (
        DiceMetric,
        compute_average_surface_distance,
        compute_hausdorff_distance,
    )

    out = {}
    dm = DiceMetric(include_background=True, reduction="none")
    for lab in labels:
        P = torch.from_numpy(pred == lab)[None, None].float()
        G = torch.from_numpy(gt == lab)[None, None].float()
        d = dm(P, G).item()
        asd = compute_average_surface_distance(
            P, G, include_background=True, symmetric=True, spacing=list(spacing)
        ).item()
        hd95 = compute_hausdorff_distance(
            P, G, include_background=True, percentile=95, spacing=list(spacing)
        ).item()
        out[lab] = (d, asd, hd95)
    return out


def monai_hd95_float64(gt, pred, spacing, labels):
    """HD95 as the 95th percentile of MONAI's own distances taken in float64: MONAI's public
    HD95 comes from ``torch.quantile`` in float32 (``q=0.95`` rounded to float32 moves the
    interpolation point by ~1e-8 x n), so it differs from any float64 percentile by up
    to ~1e-5 mm on 10^4-10^5 border voxels (not timed)."""
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    out = {}
    for lab in labels:
        P = torch.from_numpy(pred == lab).float()
        G = torch.from_numpy(gt == lab).float()
        _, (d_pg, d_gp), _ = get_edge_surface_distance(P, G, spacing=list(spacing), symmetric=True)
        out[lab] = max(np.percentile(d.double().numpy(), 95) for d in (d_pg, d_gp))
    return out


# -- runs ------------------------------------------------------------------------------------
def _cpu_wall(fn, *args, **kw):
    c, t = time.process_time(), time.perf_counter()
    out = fn(*args, **kw)
    return out, time.process_time() - c, time.perf_counter() - t


def breakdown(gt, pred, spacing) -> None:
    """Where (a)'s time goes, step by step on one thread, and whether two threads overlap
    (the GIL): the steps of ``surface_metrics``, then the distance transforms the issue
    proposed (scipy and ``edt``) over the labels' bounding boxes."""
    from concurrent.futures import ThreadPoolExecutor

    import edt

    from petcorpus.metrics import surface as sf

    sp = np.asarray(spacing, float)
    print("\nbreakdown (one thread; CPU s / wall s):")
    _, c, w = _cpu_wall(overlap_metrics, gt, pred, spacing)
    print(f"  overlap_metrics (joint histogram)          {c:6.2f} {w:6.2f}")
    ring = sf._ring(sp)
    pad = [int(np.abs(ring[0][:, ax]).max()) for ax in range(3)]
    (bg, bp), c, w = _cpu_wall(lambda: [sf._Borders.of(m, 1, pad, 130) for m in (gt, pred)])
    print(f"  borders of all labels, both maps           {c:6.2f} {w:6.2f}")
    kd = {"n": 0}
    tree_cls = sf.cKDTree

    def counting_tree(points, **kw):
        kd["n"] += 1
        return tree_cls(points, **kw)

    sf.cKDTree = counting_tree
    d_pg, c, w = _cpu_wall(sf._distances_between, bp, bg, sp, ring)
    sf.cKDTree = tree_cls
    print(f"  distances pred->gt (ring + {kd['n']} k-d trees)   {c:6.2f} {w:6.2f}")
    _, c, w = _cpu_wall(sf._distances_between, bg, bp, sp, ring)
    print(f"  distances gt->pred                         {c:6.2f} {w:6.2f}")
    n_far = int(np.count_nonzero(d_pg > ring[1][-1]))
    print(
        f"    ring of {len(ring[1])} offsets (<= {ring[1][-1]:.1f} mm) settles "
        f"{1 - n_far / d_pg.size:.0%} of {d_pg.size} border voxels; the rest: k-d trees"
    )
    _, _, w1 = _cpu_wall(
        lambda: [sf._distances_between(a, b, sp, ring) for a, b in ((bp, bg), (bg, bp))]
    )
    with ThreadPoolExecutor(2) as pool:
        _, _, w2 = _cpu_wall(
            lambda: list(pool.map(lambda j: sf._distances_between(*j, sp, ring),
                                  [(bp, bg), (bg, bp)]))
        )  # fmt: skip
    print(
        f"  both directions: one after the other {w1:.2f} s wall, in 2 threads {w2:.2f} s "
        f"wall: {w1 / w2:.2f}x (2.00 = the GIL never held a thread back)"
    )
    # The issue's proposal: a distance transform per label over its bounding box.
    boxes = [b for b in ndimage.find_objects(gt)[:40] if b is not None]
    masks = [~sf.border_voxels(gt[b] == i + 1) for i, b in enumerate(boxes)]
    n_vox = sum(m.size for m in masks)
    for name, fn in (
        ("scipy distance_transform_edt", lambda m: ndimage.distance_transform_edt(m, sampling=sp)),
        ("edt.edt, parallel=1", lambda m: edt.edt(m, anisotropy=tuple(sp), parallel=1)),
    ):
        _, c, w = _cpu_wall(lambda fn=fn: [fn(m) for m in masks])
        with ThreadPoolExecutor(2) as pool:
            _, _, w2 = _cpu_wall(lambda fn=fn: list(pool.map(fn, masks)))
        print(f"  {name:30s} on 40 label boxes: {c / n_vox * 1e9:5.1f} ns/voxel CPU; "
              f"2 threads {w2:.2f} s vs 1 thread {w:.2f} s wall")  # fmt: skip
    all_boxes = [b for b in ndimage.find_objects(gt) if b is not None]
    total = 2 * sum(int(np.prod([s.stop - s.start for s in b])) for b in all_boxes)
    print(f"  (all 130 labels, both directions: {total / 1e6:.0f} M voxels of transforms)")


def run_organs(shape, n_labels, monai_every, spacing, show_breakdown=False, repeat=3):
    print(f"(a) {n_labels} labels on {shape}, spacing {spacing} mm: building data ...")
    gt = organ_labels(shape, n_labels, seed=1, jitter_vox=0.0)
    pred = organ_labels(shape, n_labels, seed=2, jitter_vox=1.5)
    # petcorpus' three variants alternate, `repeat` rounds (the machine is shared: medians)
    times: dict[str, list[float]] = {"ours": [], "ours1": [], "edt": []}
    for _ in range(repeat):
        t0 = time.perf_counter()
        ov = overlap_metrics(gt, pred, spacing)
        sm = surface_metrics(gt, pred, spacing, tolerance_mm=2.0)  # default: thread per core
        times["ours"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        overlap_metrics(gt, pred, spacing)
        sm1 = surface_metrics(gt, pred, spacing, tolerance_mm=2.0, workers=1)
        times["ours1"].append(time.perf_counter() - t0)
        assert sm1 == sm
        t0 = time.perf_counter()
        overlap_metrics(gt, pred, spacing)
        sm_edt = surface_metrics(gt, pred, spacing, tolerance_mm=2.0, backend="edt")
        times["edt"].append(time.perf_counter() - t0)
    print("  petcorpus rounds (s): " + "; ".join(
        f"{k} " + " ".join(f"{v:.2f}" for v in vs) for k, vs in times.items()))  # fmt: skip
    t_ours, t_ours1, t_edt = (statistics.median(times[k]) for k in ("ours", "ours1", "edt"))
    d_edt = max(abs(sm[k].assd - sm_edt[k].assd) for k in sm)
    if show_breakdown:
        breakdown(gt, pred, spacing)
    labels = sorted(ov)
    subset = labels[::monai_every]
    res = {"ours": t_ours, "ours1": t_ours1, "edt": t_edt, "edt_vs_scipy_assd": d_edt}
    try:
        t0 = time.perf_counter()
        mon = monai_per_label(gt, pred, spacing, subset)
        t_mon_subset = time.perf_counter() - t0
    except ImportError:
        print("MONAI not installed (pip install -e '.[bench]'): petcorpus only")
        return res
    t_mon = t_mon_subset * len(labels) / len(subset)
    dd = max(abs(ov[k].dice - v[0]) for k, v in mon.items())
    da = max(abs(sm[k].assd - v[1]) for k, v in mon.items())
    dh = max(abs(sm[k].hd95 - v[2]) for k, v in mon.items())
    mon95 = monai_hd95_float64(gt, pred, spacing, subset)
    dh64 = max(abs(sm[k].hd95 - v) for k, v in mon95.items())
    return {
        **res,
        "monai": t_mon,
        "monai_measured": t_mon_subset,
        "n_monai": len(subset),
        "n_labels": len(labels),
        "max_abs_diff": (dd, da, dh, dh64),
        "examples": [(k, ov[k].dice, mon[k][0], sm[k].assd, mon[k][1], sm[k].hd95, mon[k][2])
                     for k in subset[:3]],
    }  # fmt: skip


def run_autopet(shape, n_lesions, n_fp):
    print(f"(b) autoPET metrics on {shape}: building data ...")
    gt, pred = lesion_case(shape, n_lesions, n_fp, seed=3)
    vv = 2.0364 * 2.0364 * 3.0 / 1000
    t0 = time.perf_counter()
    m = autopet_metrics(gt, pred, vv, edition="I")
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = published_autopet(gt, pred, vv)
    t_ref = time.perf_counter() - t0
    same = (m.dice, m.fp_volume_ml, m.fn_volume_ml) == ref
    return {
        "ours": t_ours,
        "ref": t_ref,
        "components": (m.gt_lesions, m.pred_lesions),
        "identical": same,
        "values": (m.dice, m.fp_volume_ml, m.fn_volume_ml),
        "ref_values": ref,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller volumes (a smoke run)")
    ap.add_argument("--monai-labels", type=int, default=10, help="MONAI on every k-th label")
    ap.add_argument("--breakdown", action="store_true", help="(a): time per step, threads")
    ap.add_argument("--skip-autopet", action="store_true", help="run (a) only")
    ap.add_argument("--repeat", type=int, default=3, help="(a): rounds of petcorpus (median)")
    args = ap.parse_args()
    shape_a = (200, 200, 166) if args.quick else (400, 400, 330)
    shape_b = (200, 200, 163) if args.quick else (400, 400, 326)
    a = run_organs(shape_a, 130, args.monai_labels, (1.5, 1.5, 3.0), args.breakdown, args.repeat)
    b = (
        None
        if args.skip_autopet
        else run_autopet(shape_b, 40 if args.quick else 60, 150 if args.quick else 300)
    )
    print()
    print(f"{'case':58s} {'petcorpus':>10s} {'peer':>10s} {'ratio':>8s}")
    print(f"(petcorpus: median of {args.repeat} rounds)")
    if "monai" in a:
        label = (
            f"(a) 130 labels, MONAI per-label loop (measured {a['n_monai']} labels, "
            f"x{a['n_labels'] / a['n_monai']:.1f})"
        )
        print(f"{label:58s} {a['ours']:9.2f}s {a['monai']:9.1f}s {a['monai'] / a['ours']:7.1f}x")
        label = "    same, workers=1 (one thread; identical values)"
        print(f"{label:58s} {a['ours1']:9.2f}s {a['monai']:9.1f}s {a['monai'] / a['ours1']:7.1f}x")
        label = "    same, backend='edt' (float32 transforms of label boxes)"
        print(f"{label:58s} {a['edt']:9.2f}s {a['monai']:9.1f}s {a['monai'] / a['edt']:7.1f}x")
        print(f"    max |ASSD edt - ASSD scipy| {a['edt_vs_scipy_assd']:.2e} mm")
        dd, da, dh, dh64 = a["max_abs_diff"]
        print(f"    equal values: max |diff| vs MONAI over {a['n_monai']} labels: Dice {dd:.2e}, "
              f"ASSD {da:.2e} mm, HD95 {dh:.2e} mm (public, float32 quantile), {dh64:.2e} mm "
              f"(float64 percentile of MONAI's distances)")  # fmt: skip
        for k, d1, d2, a1, a2, h1, h2 in a["examples"]:
            print(f"      label {k:3d}: Dice {d1:.6f} / {d2:.6f}  ASSD {a1:.6f} / {a2:.6f}  "
                  f"HD95 {h1:.6f} / {h2:.6f}  (petcorpus / MONAI)")  # fmt: skip
    if b is None:
        return
    gl, pl = b["components"]
    label = f"(b) autoPET, {gl} GT + {pl} predicted components, published loop"
    print(f"{label:58s} {b['ours']:9.2f}s {b['ref']:9.1f}s {b['ref'] / b['ours']:7.1f}x")
    print(f"    identical numbers: {b['identical']} (Dice, FPV ml, FNV ml = {b['values']})")


if __name__ == "__main__":
    main()
