"""One picture per flag: a PET MIP (:mod:`petcorpus.viz`) with the masks that show the issue.

The MIP is drawn in inverted grey with a window scaled to the study's own liver level (so a
study with a wrong SUV scale is still readable); overlays are contours (a one-voxel
component is filled so that it shows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from petcorpus import viz
from petcorpus.volume import Volume

__all__ = ["flag_picture", "sampled"]

#: Display pixel size of the pictures (mm): a whole body is ~500 pixels high.
PIXEL_MM = 4.0


def sampled(vol: Volume, step: int, si_axis: int, *, copy: bool = False) -> Volume:
    """``vol`` sampled every ``step`` voxels except along ``si_axis`` (affine adjusted): a
    view, or with ``copy`` a compact Fortran-ordered copy (one pass over the memory; later
    passes over the copy are ``step``² times smaller)."""
    sl: list[slice] = [slice(None, None, step)] * 3
    sl[si_axis] = slice(None)
    scale = np.ones(4)
    scale[:3] = [1 if a == si_axis else step for a in range(3)]
    array = np.asarray(vol.array)[tuple(sl)]
    if copy:
        array = np.array(array, order="F")
    return Volume(array, vol.affine @ np.diag(scale))


def flag_picture(
    pet: Volume,
    overlays: Sequence[tuple[np.ndarray | Volume, str]] = (),
    *,
    view: str = "coronal",
    title: str | None = None,
    level: float = math.nan,
    fill: bool = False,
) -> bytes:
    """PNG of ``pet``'s MIP along ``view`` with ``overlays`` (boolean arrays on ``pet``'s
    grid, or Volumes, each with a :data:`petcorpus.viz.COLOURS` name).

    ``level`` is the study's typical uptake (e.g. the liver's); the grey window is 0 to
    5 × ``level`` (0–10 when unknown).
    """
    vmax = 5.0 * level if math.isfinite(level) and level > 0 else 10.0
    base = viz.mip(pet, view)
    ov = []
    for mask, colour in overlays:
        m = mask if isinstance(mask, Volume) else pet.with_array(np.asarray(mask, np.uint8))
        ov.append((viz.mask_projection(m, view), colour))
    img = viz.render(
        base,
        ov,
        vmax=vmax,
        pixel_mm=PIXEL_MM,
        style="fill" if fill else "contour",
        line_px=1,
        title=title,
    )
    return viz.png_bytes(img)
