"""SUV plausibility: the liver's SUV, and what a wrong weight, dose, unit or time does to it.

Without organ masks the liver is found from anatomy (:func:`liver_region`): on the PET grid,
the CT's lungs (air inside the body outline) give the right lung's base; the liver is the
soft tissue (HU :data:`LIVER_HU`) of the patient's right half, 1–6 cm below that base and
more than 2.5 cm inside the body outline, without lesions or hot spots. Its median SUV is
robust to a few voxels of kidney, bowel or vessel. With an organ mask the liver is the mask.

FDG liver SUVbw is about 1.5–3 in adults (PERCIST: liver SUL 1.5–2.5); :data:`LIVER_RANGE`
is kept wider so that only gross errors flag. :func:`likely_cause` names the error whose
factor explains the ratio to :data:`LIVER_NORMAL`: a weight in pounds multiplies the SUV by
2.2, a dose in MBq where Bq is expected by 10⁶, a missing SUV conversion leaves Bq/ml
(thousands), a wrong injection time by 2^(Δt / 109.8 min).
"""

from __future__ import annotations

import math

import numpy as np

from petcorpus.dicom.values import RADIONUCLIDES
from petcorpus.percist import percist_problems
from petcorpus.qc.align import CT_BODY_HU, between
from petcorpus.volume import Volume

__all__ = [
    "LIVER_HU",
    "LIVER_NORMAL",
    "LIVER_RANGE",
    "LiverRegion",
    "likely_cause",
    "liver_region",
    "percist_problems",
]

LIVER_HU = (-10.0, 200.0)
LIVER_NORMAL = 2.0
LIVER_RANGE = (1.0, 3.6)
F18_HALF_LIFE_MIN = RADIONUCLIDES["F-18"].half_life_s / 60  # the one half-life table
LB_PER_KG = 2.20462


class LiverRegion:
    """Where the liver estimate was measured: a boolean mask on the PET grid (None when
    not found, with ``why``), plus the lungs and body found on the way (for the FOV check
    and the pictures)."""

    def __init__(
        self,
        mask: np.ndarray | None,
        why: str,
        lungs: np.ndarray | None = None,
        body: np.ndarray | None = None,
    ) -> None:
        self.mask = mask
        self.why = why
        self.lungs = lungs
        self.body = body


def liver_region(
    suv: Volume, ct: Volume, lesions: np.ndarray | None = None, *, step: int = 2
) -> LiverRegion:
    """The liver's voxels found from anatomy (see the module docstring), on the PET grid
    sampled every ``step`` voxels in-plane (``mask`` has that sampled shape)."""
    lin = suv.affine[:3, :3]
    norms = np.linalg.norm(lin, axis=0)
    lr = int(np.argmax(np.abs(lin[0, :]) / norms))
    ap = int(np.argmax(np.abs(lin[1, :]) / norms))
    si = 3 - lr - ap
    if len({lr, ap, si}) != 3:
        return LiverRegion(None, "PET grid is not axis-aligned")
    sl: list[slice] = [slice(None, None, step)] * 3
    sl[si] = slice(None)
    sub = tuple(sl)
    # Gathered once: the sampled grid is worked on several times, contiguous is ~3x faster.
    ctv = np.array(np.asarray(ct.array)[sub], order="F")
    sv = np.asarray(suv.array)[sub]
    body = ctv > CT_BODY_HU
    inside = between(body, lr) & between(body, ap)
    lungs = inside & (ctv < -500.0)  # (below -500 HU is never body)
    # RAS x per LR index (the patient's right has larger x).
    spacing = np.abs(np.diag(lin[:, [lr, ap, si]]))  # mm per voxel along lr, ap, si
    x_of = lin[0, lr] * step * np.arange(ctv.shape[lr]) + suv.affine[0, 3]
    z_of = lin[2, si] * np.arange(ctv.shape[si]) + suv.affine[2, 3]
    shape = [1, 1, 1]
    shape[lr] = -1
    x = x_of.reshape(shape)
    body_x = np.flatnonzero(body.any(axis=tuple(a for a in range(3) if a != lr)))
    if body_x.size == 0:
        return LiverRegion(None, "no body on the CT", lungs, body)
    centre_x = float(x_of[body_x].mean())
    right = x > centre_x
    rlung = lungs & right
    per_slice = rlung.sum(axis=tuple(a for a in range(3) if a != si))
    if per_slice.max() < 20:
        return LiverRegion(None, "no right lung on the CT", lungs, body)
    zs = z_of[per_slice >= 0.05 * per_slice.max()]
    base = float(zs.min())
    # The slab 1-6 cm below the lung base: the rest is worked on there only.
    ks = np.flatnonzero((z_of <= base - 10.0) & (z_of >= base - 60.0))
    cand = np.zeros(ctv.shape, dtype=bool)
    if ks.size == 0:
        return LiverRegion(None, "no soft tissue below the right lung", lungs, body)
    in_slab: list[slice] = [slice(None)] * 3
    in_slab[si] = slice(int(ks[0]), int(ks[-1]) + 1)
    at = tuple(in_slab)
    margin_lr = math.ceil(25.0 / (spacing[0] * step))
    margin_ap = math.ceil(25.0 / (spacing[1] * step))
    b = body[at]
    c = ctv[at]
    found = right & between(b, lr, margin_lr) & between(b, ap, margin_ap)
    found &= (c >= LIVER_HU[0]) & (c <= LIVER_HU[1])
    if lesions is not None and lesions.shape == suv.shape:
        found &= ~(np.asarray(lesions)[sub][at] > 0)
    if found.sum() < 20:
        return LiverRegion(None, "no soft tissue below the right lung", lungs, body)
    s = sv[at]
    med = float(np.median(s[found]))
    found &= s <= 2.0 * med  # kidneys, bowel, lesions without a mask
    cand[at] = found
    return LiverRegion(cand, "ok", lungs, body)


def likely_cause(liver_suv: float) -> str:
    """The error whose factor best explains a liver SUV far from :data:`LIVER_NORMAL`."""
    r = liver_suv / LIVER_NORMAL
    if not math.isfinite(r) or r <= 0:
        return "no uptake in the liver: check the image and its units"
    if 1.7 <= r <= 2.8:
        return f"weight looks like pounds (liver SUV ≈ {r:.1f}× normal; 1 kg = {LB_PER_KG:.1f} lb)"
    if 0.36 <= r <= 0.59:
        return (
            f"weight looks too low by ~{1 / r:.1f}× (pounds converted twice?) or the dose too high"
        )
    if 300 <= r <= 30_000:
        return (
            f"values look like Bq/ml, not SUV (liver {liver_suv:.0f}): the SUV factor is missing"
        )
    if 3e5 <= r <= 3e7:
        return "dose looks like MBq where Bq is expected (SUV ≈ 10⁶× normal)"
    if 3e-7 <= r <= 3e-5:
        return "dose looks like Bq where MBq is expected, or weight in grams"
    minutes = math.log2(r) * F18_HALF_LIFE_MIN
    if abs(minutes) <= 24 * 60:
        return (
            f"a decay time off by {minutes:+.0f} min would explain it: check the injection "
            "and scan times (and the dose)"
        )
    return "check weight, dose, units and times"
