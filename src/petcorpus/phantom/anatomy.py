"""An analytic whole-body patient: tissues as ellipsoids and elliptic cylinders in LPS+ mm.

The body is described once, in world coordinates, and sampled on any grid: the CT grid for
Hounsfield units and organ masks, the PET grid for uptake and the lesion mask. Sampling the
same shapes on both grids is what makes masks "line up" by construction, so tests can demand
exact equality.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

__all__ = [
    "TISSUES",
    "Body",
    "Lesion",
    "Shape",
    "Tissue",
    "make_body",
    "make_lesions",
    "paint_lesions",
]


class Tissue(enum.IntEnum):
    """Tissue labels of the phantom (the label map's values)."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    SKIN = 3
    LUNG = 4
    BONE = 5
    LIVER = 6
    HEART = 7
    KIDNEY = 8
    BLADDER = 9
    BRAIN = 10
    AORTA = 11
    SPLEEN = 12


@dataclasses.dataclass(frozen=True)
class TissueProps:
    hu: float
    hu_sd: float
    hu_contrast: float
    suv: float


#: Mean HU (plain and contrast-enhanced), HU noise and FDG uptake (SUVbw) per tissue.
TISSUES: dict[Tissue, TissueProps] = {
    Tissue.AIR: TissueProps(-1000, 8, -1000, 0.0),
    Tissue.FAT: TissueProps(-100, 12, -100, 0.3),
    Tissue.MUSCLE: TissueProps(50, 12, 55, 0.7),
    Tissue.SKIN: TissueProps(30, 10, 35, 0.6),
    Tissue.LUNG: TissueProps(-850, 30, -850, 0.35),
    Tissue.BONE: TissueProps(600, 80, 600, 1.0),
    Tissue.LIVER: TissueProps(60, 10, 105, 2.0),
    Tissue.HEART: TissueProps(45, 10, 160, 3.0),
    Tissue.KIDNEY: TissueProps(35, 10, 170, 3.0),
    Tissue.BLADDER: TissueProps(10, 6, 12, 12.0),
    Tissue.BRAIN: TissueProps(35, 6, 38, 7.0),
    Tissue.AORTA: TissueProps(45, 10, 200, 1.6),
    Tissue.SPLEEN: TissueProps(50, 10, 110, 1.8),
}


@dataclasses.dataclass(frozen=True)
class Shape:
    """An axis-aligned ellipsoid (``kind="ellipsoid"``) or elliptic cylinder in LPS+ mm.

    A cylinder spans ``center[2] ± radii[2]`` along z with elliptic cross-section
    ``radii[0] x radii[1]``.
    """

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    kind: str = "ellipsoid"

    def z_range(self) -> tuple[float, float]:
        return self.center[2] - self.radii[2], self.center[2] + self.radii[2]

    def slice_mask(self, x: np.ndarray, y: np.ndarray, z: float) -> np.ndarray | None:
        """Boolean mask on an axial plane at ``z`` (``x``, ``y`` broadcastable), or None."""
        z0, z1 = self.z_range()
        if not z0 <= z <= z1:
            return None
        cx, cy, cz = self.center
        rx, ry, rz = self.radii
        r2 = 1.0 if self.kind == "cylinder" else 1.0 - ((z - cz) / rz) ** 2
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= r2

    def contains(self, p: np.ndarray) -> np.ndarray:
        """Whether points (..., 3) lie inside."""
        d = (p - np.asarray(self.center)) / np.asarray(self.radii)
        if self.kind == "cylinder":
            return (d[..., 0] ** 2 + d[..., 1] ** 2 <= 1.0) & (np.abs(d[..., 2]) <= 1.0)
        return np.sum(d**2, axis=-1) <= 1.0


@dataclasses.dataclass(frozen=True)
class Lesion:
    """A lesion of known uptake: a shape, its SUVbw, and where it sits."""

    shape: Shape
    suv: float
    site: str


@dataclasses.dataclass(frozen=True)
class Body:
    """The patient: tissue shapes painted in order (later shapes win)."""

    shapes: tuple[tuple[Tissue, Shape], ...]
    z_top: float

    def labels_on_grid(self, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> np.ndarray:
        """Tissue label map (uint8) at voxel centres ``xs`` x ``ys`` x ``zs`` (LPS mm)."""
        x = xs[:, None]
        y = ys[None, :]
        out = np.zeros((xs.size, ys.size, zs.size), dtype=np.uint8)
        for k, z in enumerate(zs):
            plane = out[:, :, k]
            for tissue, shape in self.shapes:
                m = shape.slice_mask(x, y, float(z))
                if m is not None:
                    plane[np.broadcast_to(m, plane.shape)] = tissue
        return out


def _ellipsoid(c: tuple[float, float, float], r: tuple[float, float, float]) -> Shape:
    return Shape(c, r, "ellipsoid")


def _cylinder(c: tuple[float, float, float], r: tuple[float, float, float]) -> Shape:
    return Shape(c, r, "cylinder")


def make_body(rng: np.random.Generator, z_top: float, width_scale: float = 1.0) -> Body:
    """A whole-body patient from the top of the head (``z_top``) down ~980 mm.

    LPS+: x grows to the patient's left, y to the back, z to the head. Organ positions
    vary a few mm with ``rng``; ``width_scale`` widens the trunk (heavier patients).
    """

    def z(depth: float) -> float:  # depth below the top of the head, in mm
        return z_top - depth

    def jitter(s: float = 4.0) -> float:
        return float(rng.uniform(-s, s))

    w = width_scale
    trunk_a, trunk_b = 165.0 * w, 115.0 * w
    shapes: list[tuple[Tissue, Shape]] = [
        # Head and neck
        (Tissue.SKIN, _ellipsoid((0, 0, z(105)), (78, 98, 102))),
        (Tissue.BONE, _ellipsoid((0, 0, z(105)), (75, 95, 99))),
        (Tissue.BRAIN, _ellipsoid((0, 0, z(100)), (66, 86, 84))),
        (Tissue.SKIN, _cylinder((0, 5, z(245)), (58, 55, 45))),
        (Tissue.MUSCLE, _cylinder((0, 5, z(245)), (55, 52, 46))),
        # Trunk: skin, subcutaneous fat, muscle wall
        (Tissue.SKIN, _cylinder((0, 0, z(580)), (trunk_a, trunk_b, 300))),
        (Tissue.FAT, _cylinder((0, 0, z(580)), (trunk_a - 3, trunk_b - 3, 300))),
        (Tissue.MUSCLE, _cylinder((0, 2, z(580)), (trunk_a - 18 * w, trunk_b - 15 * w, 300))),
        # Legs (thighs) below the pelvis
        (Tissue.SKIN, _cylinder((-85 * w, 0, z(930)), (72 * w, 72 * w, 55))),
        (Tissue.SKIN, _cylinder((85 * w, 0, z(930)), (72 * w, 72 * w, 55))),
        (Tissue.FAT, _cylinder((-85 * w, 0, z(930)), (69 * w, 69 * w, 56))),
        (Tissue.FAT, _cylinder((85 * w, 0, z(930)), (69 * w, 69 * w, 56))),
        (Tissue.MUSCLE, _cylinder((-85 * w, 0, z(930)), (55 * w, 55 * w, 57))),
        (Tissue.MUSCLE, _cylinder((85 * w, 0, z(930)), (55 * w, 55 * w, 57))),
        (Tissue.BONE, _cylinder((-85 * w, 5, z(930)), (14, 14, 58))),
        (Tissue.BONE, _cylinder((85 * w, 5, z(930)), (14, 14, 58))),
        # Thorax
        (Tissue.LUNG, _ellipsoid((-80 + jitter(), 5, z(410 + jitter())), (62, 80, 125))),
        (Tissue.LUNG, _ellipsoid((80 + jitter(), 5, z(410 + jitter())), (58, 80, 120))),
        (Tissue.HEART, _ellipsoid((22 + jitter(), -25, z(450 + jitter())), (55, 48, 58))),
        (Tissue.AORTA, _cylinder((18, 45, z(580)), (12, 12, 170))),
        # Abdomen
        (Tissue.LIVER, _ellipsoid((-68 + jitter(), 0, z(548 + jitter())), (88, 78, 72))),
        (Tissue.SPLEEN, _ellipsoid((88 + jitter(), 35, z(545 + jitter())), (32, 40, 45))),
        (Tissue.KIDNEY, _ellipsoid((-72, 55, z(615 + jitter())), (28, 24, 52))),
        (Tissue.KIDNEY, _ellipsoid((72, 55, z(605 + jitter())), (28, 24, 52))),
        (Tissue.BLADDER, _ellipsoid((0, -35, z(835 + jitter())), (42, 38, 32))),
        # Skeleton: spine and pelvis (painted last so bone wins over soft tissue)
        (Tissue.BONE, _cylinder((0, 85, z(560)), (18, 18, 300))),
        (Tissue.BONE, _ellipsoid((-90 * w, 30, z(800)), (25, 45, 55))),
        (Tissue.BONE, _ellipsoid((90 * w, 30, z(800)), (25, 45, 55))),
    ]
    return Body(tuple(shapes), z_top)


#: Lesion sites per diagnosis: (site, offset from an organ centre in mm, radius range mm).
_SITES = {
    "LUNG_CANCER": ["lung_right", "lung_left", "mediastinum_pair", "liver"],
    "MELANOMA": ["subcutaneous", "liver", "lung_left", "axilla_pair"],
    "LYMPHOMA": ["cervical", "axilla_pair", "mediastinum_pair", "abdominal", "spleen"],
}


def make_lesions(
    rng: np.random.Generator, body: Body, diagnosis: str, min_radius: float, gap: float
) -> list[Lesion]:
    """Lesions of known SUV for a diagnosis (none for ``NEGATIVE``).

    ``min_radius`` keeps lesions resolvable on the PET grid; "pair" sites place two lesions
    whose surfaces are ``gap`` mm apart (near each other, yet separate components).
    """
    if diagnosis == "NEGATIVE":
        return []
    zt = body.z_top
    r_lo = max(min_radius, 7.0)

    def radius() -> float:
        return float(rng.uniform(r_lo, r_lo * 1.8))

    def suv() -> float:
        return float(np.round(rng.uniform(5.0, 18.0), 2))

    out: list[Lesion] = []
    for site in _SITES[diagnosis]:
        r = radius()
        if site == "lung_right":
            c = (-85.0, 0.0, zt - 380.0)
            out.append(Lesion(_ellipsoid(c, (r, r * 0.85, r * 1.2)), suv(), site))
        elif site == "lung_left":
            c = (82.0, 10.0, zt - 420.0)
            out.append(Lesion(_ellipsoid(c, (r, r, r)), suv(), site))
        elif site == "liver":
            c = (-80.0, -10.0, zt - 545.0)
            out.append(Lesion(_ellipsoid(c, (r * 1.2, r, r)), suv(), site))
        elif site == "spleen":
            c = (88.0, 35.0, zt - 545.0)
            out.append(Lesion(_ellipsoid(c, (r, r, r)), suv(), site))
        elif site == "subcutaneous":
            c = (60.0, -100.0, zt - 600.0)
            out.append(Lesion(_ellipsoid(c, (r, r * 0.7, r)), suv(), site))
        elif site == "cervical":
            c = (-35.0, 0.0, zt - 240.0)
            out.append(Lesion(_ellipsoid(c, (r, r, r * 1.3)), suv(), site))
        elif site == "abdominal":
            c = (-20.0, 20.0, zt - 680.0)
            out.append(Lesion(_ellipsoid(c, (r, r, r)), suv(), site))
        else:  # two nodes side by side along x, surfaces `gap` mm apart
            base = {
                "mediastinum_pair": (5.0, 10.0, zt - 360.0),
                "axilla_pair": (-125.0, 20.0, zt - 330.0),
            }[site]
            r2 = radius()
            x1 = base[0] - (r + gap / 2)
            x2 = base[0] + (r2 + gap / 2)
            out.append(Lesion(_ellipsoid((x1, base[1], base[2]), (r, r, r)), suv(), site))
            out.append(Lesion(_ellipsoid((x2, base[1], base[2]), (r2, r2, r2)), suv(), site))
    return out


def paint_lesions(
    lesions: list[Lesion],
    xs: np.ndarray,
    ys: np.ndarray,
    zs: np.ndarray,
    suv: np.ndarray | None = None,
) -> np.ndarray:
    """Lesion mask (uint8) on a grid; also writes each lesion's SUV into ``suv``."""
    mask = np.zeros((xs.size, ys.size, zs.size), dtype=np.uint8)
    x = xs[:, None]
    y = ys[None, :]
    for lesion in lesions:
        z0, z1 = lesion.shape.z_range()
        for k in np.nonzero((zs >= z0) & (zs <= z1))[0]:
            m = lesion.shape.slice_mask(x, y, float(zs[k]))
            if m is None:
                continue
            m = np.broadcast_to(m, mask.shape[:2])
            mask[:, :, k][m] = 1
            if suv is not None:
                suv[:, :, k][m] = lesion.suv
    return mask
