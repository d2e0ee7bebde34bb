"""Lesions placed from the subject's own anatomy: in the tissue their site names, in the body.

Each diagnosis asks for lesions at named sites (:data:`SITES`). A site names the tissue a
lesion may touch (:data:`SITE_TISSUES`: a lung lesion only lung, a lymph node only the soft
tissue of fat and muscle, never an organ, skin or air) and where to look for room in *this*
subject (its lungs, liver, neck, trunk wall... from :attr:`Body.landmarks`). A placement is
accepted when every point of the lesion, grown by ``margin`` mm, lies in the site's tissue
(checked on a dense point cloud against the analytic body) and clear of the lesions already
placed. The site's usual position is tried first, then random positions in its region, then a
smaller lesion (down to the smallest resolvable one), then the site's fallbacks
(:data:`FALLBACKS`); a lesion that fits nowhere is dropped. The lesions returned are the ones
placed, with their site and the site planned.

The sizes and SUVs are drawn from the study's random stream exactly as before placement
existed, so a study's other random values do not depend on where its lesions went.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from petcorpus.phantom.anatomy import Body, Lesion, Shape, Tissue

__all__ = ["FALLBACKS", "SITES", "SITE_TISSUES", "lesion_fits", "make_lesions"]

#: Lesion sites per diagnosis ("pair" sites place two nodes close together)
SITES: dict[str, list[str]] = {
    "LUNG_CANCER": ["lung_right", "lung_left", "mediastinum_pair", "liver"],
    "MELANOMA": ["subcutaneous", "liver", "lung_left", "axilla_pair"],
    "LYMPHOMA": ["cervical", "axilla_pair", "mediastinum_pair", "abdominal", "spleen"],
}
_SOFT = frozenset({Tissue.FAT, Tissue.MUSCLE})
#: The tissue each site's lesion may overlap (lymph nodes and subcutaneous lesions: soft tissue)
SITE_TISSUES: dict[str, frozenset[Tissue]] = {
    "lung_right": frozenset({Tissue.LUNG}),
    "lung_left": frozenset({Tissue.LUNG}),
    "liver": frozenset({Tissue.LIVER}),
    "spleen": frozenset({Tissue.SPLEEN}),
    "bone": frozenset({Tissue.BONE}),
    "subcutaneous": _SOFT,
    "cervical": _SOFT,
    "abdominal": _SOFT,
    "mediastinum": _SOFT,
    "axilla": _SOFT,
    "mediastinum_pair": _SOFT,
    "axilla_pair": _SOFT,
    "abdominal_pair": _SOFT,
}
#: Where a lesion goes when its site has no room in this subject (tried in order)
FALLBACKS: dict[str, tuple[str, ...]] = {
    "lung_right": ("lung_left",),
    "lung_left": ("lung_right",),
    "spleen": ("liver",),
    "cervical": ("abdominal",),
    "subcutaneous": ("abdominal",),
    "axilla_pair": ("mediastinum_pair", "abdominal_pair"),
    "mediastinum_pair": ("abdominal_pair",),
    "abdominal": ("mediastinum",),
}
_TRIES = 80
_SHRINK = (1.0, 0.85, 0.7, 0.55)


def _unit_cloud() -> np.ndarray:
    """Points filling the unit ball: a grid inside plus a dense sphere surface."""
    g = np.arange(-1.0, 1.0001, 0.15)
    pts = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    pts = pts[np.sum(pts**2, axis=1) <= 1.0]
    n = 800
    k = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * k / n)
    theta = math.pi * (1 + 5**0.5) * k
    surf = np.stack(
        [np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1
    )
    return np.concatenate([pts, surf])


_CLOUD = _unit_cloud()
#: a coarse cloud checked first (centre, axes, diagonals) to reject most candidates cheaply
_COARSE = np.concatenate(
    [
        np.zeros((1, 3)),
        np.eye(3),
        -np.eye(3),
        np.stack(np.meshgrid(*[[-1.0, 1.0]] * 3, indexing="ij"), -1).reshape(-1, 3) / 3**0.5,
    ]
)


def lesion_fits(
    body: Body, shape: Shape, allowed: frozenset[Tissue], margin: float, others: list[Shape]
) -> bool:
    """Whether ``shape`` grown by ``margin`` mm lies in ``allowed`` tissue and off ``others``
    (each kept ``margin`` mm away too)."""
    radii = np.asarray(shape.radii) + margin
    ok = np.fromiter(allowed, dtype=np.uint8)
    for cloud in (_COARSE, _CLOUD):
        pts = np.asarray(shape.center) + cloud * radii
        if not np.isin(body.labels_at(pts), ok).all():
            return False
    for o in others:
        grown = Shape(o.center, tuple(np.asarray(o.radii) + margin), o.kind)  # type: ignore[arg-type]
        if grown.contains(pts).any():
            return False
    return True


def _in_shape(rng: np.random.Generator, s: Shape, frac: float) -> tuple[float, float, float]:
    """A random point in ``s`` shrunk to ``frac`` of its radii."""
    while True:
        u = rng.uniform(-1.0, 1.0, 3)
        if np.sum(u**2) <= 1.0:
            c = np.asarray(s.center) + u * np.asarray(s.radii) * frac
            return float(c[0]), float(c[1]), float(c[2])


def _centres(
    site: str, body: Body, radii: tuple[float, float, float], rng: np.random.Generator
) -> Iterator[tuple[float, float, float]]:
    """Candidate centres for a site: its usual position first, then random ones in its region."""
    zt, lm = body.z_top, body.landmarks
    usual = {
        "lung_right": (-85.0, 0.0, zt - 380.0),
        "lung_left": (82.0, 10.0, zt - 420.0),
        "liver": (-80.0, -10.0, zt - 545.0),
        "spleen": (88.0, 35.0, zt - 545.0),
        "subcutaneous": (60.0, -100.0, zt - 600.0),
        "cervical": (-35.0, 0.0, zt - 240.0),
        "abdominal": (-20.0, 20.0, zt - 680.0),
        "mediastinum": (5.0, 10.0, zt - 360.0),
        "axilla": (-125.0, 20.0, zt - 330.0),
    }
    if site in usual:
        yield usual[site]
    for _ in range(_TRIES):
        if site in ("lung_right", "lung_left", "liver", "spleen"):
            yield _in_shape(rng, lm[site], 0.8)
        elif site == "subcutaneous":  # just under the skin of the front of the trunk
            fat = lm["trunk_fat"]
            th = float(rng.uniform(-1.2, 1.2))
            sn, cs = math.sin(th), math.cos(th)
            depth = math.hypot(radii[0] * sn, radii[1] * cs) + 3.0
            a, b = fat.radii[0] - depth, fat.radii[1] - depth
            z = float(rng.uniform(zt - 720.0, zt - 470.0))
            yield a * sn, -b * cs, z
        elif site == "cervical":
            yield _in_shape(rng, lm["neck"], 0.9)
        elif site == "abdominal":  # along the aorta and below it
            yield (
                float(rng.uniform(-70, 70)),
                float(rng.uniform(-60, 60)),
                float(rng.uniform(zt - 780, zt - 600)),
            )
        elif site == "mediastinum":  # between the lungs, above the heart
            yield (
                float(rng.uniform(-30, 40)),
                float(rng.uniform(-80, 60)),
                float(rng.uniform(zt - 420, zt - 300)),
            )
        elif site == "axilla":  # no arms: the lateral chest wall at the level of the apex
            side = 1.0 if rng.uniform() < 0.5 else -1.0
            tm = lm["trunk_muscle"]
            yield (
                side * float(rng.uniform(0.55, 1.0)) * tm.radii[0],
                float(rng.uniform(-40, 60)),
                float(rng.uniform(zt - 380, zt - 300)),
            )
        elif site == "bone":
            yield _in_shape(rng, lm["pelvis_right" if rng.uniform() < 0.5 else "pelvis_left"], 0.6)


def _place_one(
    body: Body,
    site: str,
    radii: tuple[float, float, float],
    margin: float,
    others: list[Shape],
    rng: np.random.Generator,
) -> Shape | None:
    allowed = SITE_TISSUES[site]
    for c in _centres(site, body, radii, rng):
        shape = Shape(c, radii)
        if lesion_fits(body, shape, allowed, margin, others):
            return shape
    return None


def _place_pair(
    body: Body,
    base_site: str,
    ra: tuple[float, float, float],
    rb: tuple[float, float, float],
    gap: float,
    margin: float,
    others: list[Shape],
    rng: np.random.Generator,
) -> tuple[Shape, Shape] | None:
    """Two nodes side by side (along x, else y, else z), surfaces ``gap`` mm apart."""
    allowed = _SOFT
    for c in _centres(base_site, body, ra, rng):
        for axis in (0, 1, 2):
            d1, d2 = np.zeros(3), np.zeros(3)
            d1[axis] = -(ra[axis] + gap / 2)
            d2[axis] = rb[axis] + gap / 2
            a = Shape(tuple(float(v) for v in np.asarray(c) + d1), ra)  # type: ignore[arg-type]
            b = Shape(tuple(float(v) for v in np.asarray(c) + d2), rb)  # type: ignore[arg-type]
            if lesion_fits(body, a, allowed, margin, others) and lesion_fits(
                body, b, allowed, margin, others
            ):
                return a, b
    return None


def _radii(site: str, r: float) -> tuple[float, float, float]:
    return {
        "lung_right": (r, r * 0.85, r * 1.2),
        "liver": (r * 1.2, r, r),
        "subcutaneous": (r, r * 0.7, r),
        "cervical": (r, r, r * 1.3),
    }.get(site, (r, r, r))


def make_lesions(
    rng: np.random.Generator,
    body: Body,
    diagnosis: str,
    min_radius: float,
    gap: float,
    margin: float = 3.0,
    placement_rng: np.random.Generator | None = None,
) -> list[Lesion]:
    """Lesions of known SUV for a diagnosis (none for ``NEGATIVE``), placed in this body.

    Parameters
    ----------
    rng : numpy.random.Generator
        The study's stream: sizes and SUVs (drawn as they always were).
    body : Body
    diagnosis : str
    min_radius : float
        Keeps lesions resolvable on the PET grid (mm); a lesion is never shrunk below it.
    gap : float
        "Pair" sites place two lesions whose surfaces are ``gap`` mm apart (near each other,
        yet separate components); any two lesions are kept at least ``margin`` mm apart.
    margin : float
        How far (mm) beyond its surface a lesion must still be in its site's tissue.
    placement_rng : numpy.random.Generator, optional
        Stream for the positions tried (default: a fixed one).
    """
    if diagnosis == "NEGATIVE":
        return []
    place = placement_rng if placement_rng is not None else np.random.default_rng(0)
    r_lo = max(min_radius, 7.0)

    def radius() -> float:
        return float(rng.uniform(r_lo, r_lo * 1.8))

    def suv() -> float:
        return float(np.round(rng.uniform(5.0, 18.0), 2))

    # The draws, in the order they were always made.
    wanted: list[tuple[str, list[tuple[float, float]]]] = []
    for site in SITES[diagnosis]:
        r = radius()
        if site.endswith("_pair"):
            r2 = radius()
            wanted.append((site, [(r, suv()), (r2, suv())]))
        else:
            wanted.append((site, [(r, suv())]))

    out: list[Lesion] = []
    for planned, draws in wanted:
        placed = False
        for site in (planned, *FALLBACKS.get(planned, ())):
            others = [les.shape for les in out]
            tried: list[list[float]] = []
            for f in _SHRINK:
                rs = [max(r * f, r_lo) for r, _ in draws]
                if rs in tried:
                    continue  # already at the smallest size
                tried.append(rs)
                if site.endswith("_pair"):
                    base = site.removesuffix("_pair")
                    pair = _place_pair(
                        body, base, (rs[0],) * 3, (rs[1],) * 3, gap, margin, others, place
                    )
                    if pair is not None:
                        for shape, (_, v) in zip(pair, draws, strict=True):
                            out.append(Lesion(shape, v, site, planned))
                        placed = True
                elif len(draws) == 1:
                    one = _place_one(body, site, _radii(site, rs[0]), margin, others, place)
                    if one is not None:
                        out.append(Lesion(one, draws[0][1], site, planned))
                        placed = True
                if placed:
                    break
            if placed:
                break
    return out
