"""Scaling 2-D projections to display pixels without losing small things.

A MIP is computed at the volume's own resolution (:func:`petcorpus.viz.mip`); only then is
it scaled to square display pixels. Each axis is scaled on its own:

- **Shrinking** (fewer display pixels than projection pixels along the axis): the axis is
  cut into consecutive footprints, one per display pixel (display pixel ``t`` takes the
  projection pixels ``floor(t·n/m) .. floor((t+1)·n/m) - 1``; every projection pixel belongs
  to exactly one footprint). Intensities are averaged over the footprint (an area, or box,
  filter); masks and labels take "any pixel of the mask (or of the label) in the footprint"
  (max pooling), so a one-voxel lesion stays at least one display pixel at any scale.
- **Enlarging**: intensities by bilinear interpolation, masks and labels by nearest
  neighbour (every projection pixel then covers one or more display pixels).

The order is *MIP, then area filter*: the maximum along each ray is taken at full
resolution, so a small hot spot keeps its peak in the projection; averaging first in 3-D
and projecting afterwards would dilute it before the maximum is taken. The lesion mask is
max-pooled, so even where the grey of a sub-pixel hot spot is diluted its outline is drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["resize_labels", "resize_mask", "resize_values"]


def _starts(n: int, m: int) -> np.ndarray:
    """First projection index of each of the ``m`` footprints of an axis of ``n`` (m < n)."""
    return (np.arange(m, dtype=np.int64) * n) // m


def _shrink(arr: np.ndarray, size: tuple[int, int], ufunc: Any, mean: bool) -> np.ndarray:
    """Reduce each axis that must shrink with ``ufunc.reduceat`` over its footprints."""
    out = arr
    for axis, m in enumerate(size):
        n = out.shape[axis]
        if m >= n:
            continue
        starts = _starts(n, m)
        red = ufunc.reduceat(out, starts, axis=axis)
        if mean:
            counts = np.diff(np.append(starts, n)).astype(np.float64)
            shape = [1, 1]
            shape[axis] = m
            red = red / counts.reshape(shape)
        out = red
    return out


def _enlarge(arr: np.ndarray, size: tuple[int, int], bilinear: bool) -> np.ndarray:
    """PIL resize to ``size`` (rows, cols), each axis already ≤ its target."""
    from PIL import Image

    if arr.shape == size:
        return arr
    if bilinear:
        img = Image.fromarray(arr.astype(np.float32), mode="F")
        return np.asarray(img.resize((size[1], size[0]), Image.Resampling.BILINEAR))
    # the projection pixel under each display pixel's centre (as PIL's NEAREST)
    rows = ((2 * np.arange(size[0]) + 1) * arr.shape[0]) // (2 * size[0])
    cols = ((2 * np.arange(size[1]) + 1) * arr.shape[1]) // (2 * size[1])
    return arr[np.ix_(rows, cols)]


def resize_values(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Intensities to ``size`` = (rows, cols): area mean where shrinking, bilinear where
    enlarging (float64 out; the same size gives the same values)."""
    a = np.asarray(arr, dtype=np.float64)
    return _enlarge(_shrink(a, size, np.add, mean=True), size, bilinear=True).astype(np.float64)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A boolean mask to ``size`` = (rows, cols): a display pixel is set when any mask pixel
    lies in its footprint (max pooling); enlarging repeats pixels (nearest neighbour)."""
    m = np.asarray(mask, dtype=bool)
    return _enlarge(_shrink(m, size, np.logical_or, mean=False), size, bilinear=False)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> dict[int, np.ndarray]:
    """Per non-zero label value, its mask at ``size`` (:func:`resize_mask` of ``labels ==
    value``), so neighbouring labels may share a display pixel and none disappears."""
    lab = np.asarray(labels)
    return {int(v): resize_mask(lab == v, size) for v in np.unique(lab[lab != 0])}
