"""The line helpers of the QC checks against plain-loop references."""

from __future__ import annotations

import numpy as np
import pytest

from petcorpus.qc import labels
from petcorpus.qc.align import between, line_bounds
from petcorpus.volume import Volume


def _loop_bounds(mask: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    m = np.moveaxis(mask, axis, -1)
    first = np.full(m.shape[:-1], m.shape[-1], dtype=np.int64)
    last = np.full(m.shape[:-1], -1, dtype=np.int64)
    for idx in np.ndindex(*m.shape[:-1]):
        hits = [k for k, v in enumerate(m[idx]) if v]
        if hits:
            first[idx], last[idx] = hits[0], hits[-1]
    return first, last


@pytest.mark.parametrize("n", [7, 300])  # a uint8 ramp and an int16 one
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_line_bounds_and_between_equal_a_loop(n: int, axis: int) -> None:
    shape = [5, 6, 4]
    shape[axis] = n
    mask = np.random.default_rng(n + axis).random(shape) > 0.93
    first, last = line_bounds(mask, axis)
    want_first, want_last = _loop_bounds(mask, axis)
    np.testing.assert_array_equal(np.squeeze(first, axis), want_first)
    np.testing.assert_array_equal(np.squeeze(last, axis), want_last)
    idx = np.moveaxis(np.indices(mask.shape)[axis], axis, -1)
    want = (idx >= want_first[..., None] + 1) & (idx <= want_last[..., None] - 1)
    np.testing.assert_array_equal(np.moveaxis(between(mask, axis, 1), axis, -1), want)


@pytest.mark.parametrize("lines_per_read", [5, 16_384])
@pytest.mark.parametrize("perm", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_filled_body_at_points_equals_the_filled_volume(
    perm: tuple[int, int, int], lines_per_read: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Looking up only the lines through the points (read a few at a time) gives the
    whole filled outline's value at each point, for any order of the axes."""
    monkeypatch.setattr(labels, "_LINES_PER_READ", lines_per_read)
    rng = np.random.default_rng(1)
    ct = np.full((30, 24, 10), -1000.0, dtype=np.float32)
    ct[5:25, 4:20, :] = 40.0  # a body
    ct[9:14, 8:14, 2:8] = -850.0  # a lung inside it
    ct[rng.random(ct.shape) > 0.97] = -1000.0  # speckle
    ct = np.transpose(ct, perm)
    lin = np.eye(3)[:, list(perm)] * 2.0  # voxel axis j runs along RAS axis perm[j]
    affine = np.eye(4)
    affine[:3, :3] = lin
    grid = Volume(np.zeros(ct.shape, np.float32), affine)
    lr, ap = perm.index(0), perm.index(1)
    body = ct > -400
    filled = body | (between(body, lr) & between(body, ap))
    points = tuple(np.asarray(i) for i in np.nonzero(rng.random(ct.shape) > 0.8))
    np.testing.assert_array_equal(labels._in_filled_body(ct, points, grid), filled[points])
