"""An analytic whole-body patient: tissues as ellipsoids and elliptic cylinders in LPS+ mm.

The body is described once, in world coordinates, and sampled on any grid: the CT grid for
Hounsfield units and organ masks, the PET grid for uptake and the lesion mask. Sampling the
same shapes on both grids is what makes masks "line up" by construction, so tests can demand
exact equality.
"""

from __future__ import annotations

import dataclasses
import enum
import functools

import numpy as np

__all__ = [
    "TISSUES",
    "Body",
    "Lesion",
    "Shape",
    "Tissue",
    "make_body",
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
    SALIVARY = 13


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
    Tissue.SALIVARY: TissueProps(25, 10, 60, 1.6),
}

#: CT of a lesion: soft tissue (mean HU plain, contrast-enhanced; noise SD)
LESION_HU, LESION_HU_CONTRAST, LESION_HU_SD = 40.0, 75.0, 10.0


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
    """A lesion of known uptake: a shape, its SUVbw, and where it sits.

    ``site`` is where it was placed; ``planned_site`` the site its diagnosis asked for (they
    differ when that site had no room in this subject, see :mod:`petcorpus.phantom.placement`).
    """

    shape: Shape
    suv: float
    site: str
    planned_site: str = ""

    @property
    def center_mm(self) -> tuple[float, float, float]:
        """Centre in LPS+ mm."""
        return self.shape.center

    @property
    def volume_ml(self) -> float:
        """Volume of the ellipsoid in ml."""
        rx, ry, rz = self.shape.radii
        return 4.0 / 3.0 * np.pi * rx * ry * rz / 1000.0


@dataclasses.dataclass(frozen=True)
class Body:
    """The patient: tissue shapes painted in order (later shapes win).

    ``landmarks`` names the shapes lesion placement starts from (``"lung_right"``,
    ``"liver"``, ``"trunk_fat"``, ``"neck"``...); ``width_scale`` is the trunk's widening.
    """

    shapes: tuple[tuple[Tissue, Shape], ...]
    z_top: float
    landmarks: dict[str, Shape] = dataclasses.field(default_factory=dict)
    width_scale: float = 1.0

    @functools.cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        tissues = np.array([0, *(t for t, _ in self.shapes)], dtype=np.uint8)
        centers = np.array([s.center for _, s in self.shapes], dtype=np.float64)
        radii = np.array([s.radii for _, s in self.shapes], dtype=np.float64)
        cyl = np.array([s.kind == "cylinder" for _, s in self.shapes])
        return tissues, centers, radii, cyl

    def labels_at(self, points: np.ndarray) -> np.ndarray:
        """Tissue labels (uint8) at points (..., 3) in LPS mm (as :meth:`labels_on_grid`
        paints them: the last shape holding a point wins)."""
        tissues, centers, radii, cyl = self._arrays
        p = np.asarray(points, dtype=np.float64).reshape(-1, 1, 3)
        d = (p - centers) / radii  # (n, shapes, 3)
        d2 = d[..., 0] ** 2 + d[..., 1] ** 2
        inside = np.where(
            cyl, (d2 <= 1.0) & (np.abs(d[..., 2]) <= 1.0), d2 + d[..., 2] ** 2 <= 1.0
        )
        # index of the last shape holding each point (0: none)
        n = inside.shape[1]
        last = np.where(inside.any(axis=1), n - np.argmax(inside[:, ::-1], axis=1), 0)
        return tissues[last].reshape(np.shape(points)[:-1])

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


def make_body(
    rng: np.random.Generator, z_top: float, width_scale: float = 1.0, salivary: bool = False
) -> Body:
    """A whole-body patient from the top of the head (``z_top``) down ~980 mm.

    LPS+: x grows to the patient's left, y to the back, z to the head. Organ positions
    vary a few mm with ``rng``; ``width_scale`` widens the trunk (heavier patients) and, below
    1, narrows the lungs and the liver with it so they stay inside the chest wall.
    ``salivary`` adds parotid and submandibular glands (drawn for PSMA studies, where they
    take up the tracer; FDG studies keep the earlier anatomy).
    """

    def z(depth: float) -> float:  # depth below the top of the head, in mm
        return z_top - depth

    def jitter(s: float = 4.0) -> float:
        return float(rng.uniform(-s, s))

    w = width_scale
    s = min(0.9 * w, 1.0)  # lungs and liver narrow with a thin chest (never widen)
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
        (
            Tissue.LUNG,
            _ellipsoid(((-80 + jitter()) * s, 5, z(410 + jitter())), (62 * s, 80 * s, 125)),
        ),
        (
            Tissue.LUNG,
            _ellipsoid(((80 + jitter()) * s, 5, z(410 + jitter())), (58 * s, 80 * s, 120)),
        ),
        (Tissue.HEART, _ellipsoid((22 + jitter(), -25, z(450 + jitter())), (55, 48, 58))),
        (Tissue.AORTA, _cylinder((18, 45, z(580)), (12, 12, 170))),
        # Abdomen
        (Tissue.LIVER, _ellipsoid(((-68 + jitter()) * s, 0, z(548 + jitter())), (88 * s, 78, 72))),
        (Tissue.SPLEEN, _ellipsoid((88 + jitter(), 35, z(545 + jitter())), (32, 40, 45))),
        (Tissue.KIDNEY, _ellipsoid((-72, 55, z(615 + jitter())), (28, 24, 52))),
        (Tissue.KIDNEY, _ellipsoid((72, 55, z(605 + jitter())), (28, 24, 52))),
        (Tissue.BLADDER, _ellipsoid((0, -35, z(835 + jitter())), (42, 38, 32))),
        # Skeleton: spine and pelvis (painted last so bone wins over soft tissue)
        (Tissue.BONE, _cylinder((0, 85, z(560)), (18, 18, 300))),
        (Tissue.BONE, _ellipsoid((-90 * w, 30, z(800)), (25, 45, 55))),
        (Tissue.BONE, _ellipsoid((90 * w, 30, z(800)), (25, 45, 55))),
    ]
    if salivary:  # parotids in front of the ears, submandibular glands under the jaw
        for side in (-1, 1):
            shapes.append((Tissue.SALIVARY, _ellipsoid((side * 38, 12, z(212)), (12, 16, 16))))
            shapes.append((Tissue.SALIVARY, _ellipsoid((side * 24, -28, z(235)), (10, 10, 9))))
    names = {
        "neck": 4,
        "trunk_skin": 5,
        "trunk_fat": 6,
        "trunk_muscle": 7,
        "lung_right": 16,
        "lung_left": 17,
        "heart": 18,
        "aorta": 19,
        "liver": 20,
        "spleen": 21,
        "kidney_right": 22,
        "kidney_left": 23,
        "bladder": 24,
        "spine": 25,
        "pelvis_right": 26,
        "pelvis_left": 27,
    }
    landmarks = {name: shapes[i][1] for name, i in names.items()}
    return Body(tuple(shapes), z_top, landmarks, w)


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
