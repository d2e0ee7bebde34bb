"""Maximum-intensity projections (MIPs) of PET volumes with lesion overlays.

The flow is three pure steps, so each can be tested on its own:

1. :func:`to_canonical` reorients any :class:`~petcorpus.volume.Volume` to RAS+ voxel axes
   (nibabel's ``io_orientation``; no interpolation, only flips and transposes).
2. :func:`mip` / :func:`mask_projection` / :func:`label_projection` project it to a 2-D
   :class:`Projection` in *display order*: row 0 is the patient's head (superior), and
   columns follow the radiological convention — on a coronal view the patient's right is on
   the image's left; on a sagittal view the patient faces the image's left (anterior left).
   The projected values are exactly ``np.max`` over the canonical array; nothing is resampled.
3. :func:`render` turns projections into a PIL image at the physical aspect ratio (square
   display pixels of ``pixel_mm``), PET in inverted grey (SUV 0..``vmax``), masks as coloured
   contours or fills. Scaling (:mod:`petcorpus.viz_downsample`) averages intensities over each
   display pixel's footprint and max-pools masks and labels, so a one-voxel lesion stays at
   least one pixel at any scale. Titles sit on a white strip above their panel and legends
   wrap below the panels: the canvas grows to hold them. Images are 8-bit palette PNGs.

:func:`compare_masks` splits ground truth and prediction into 18-connected components
and classes them as matched, false negative (a ground-truth component that no prediction
voxel touches) and false positive (a predicted component that touches no ground-truth
voxel), the autoPET definitions, with the metrics' own labelling
(:func:`petcorpus.metrics.autopet.component_overlaps`).

I/O lives only in :func:`read_study_dir`, which reads a study of the autoPET layout through
:class:`petcorpus.layouts.autopet.AutopetCase`.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import numpy.typing as npt

from petcorpus.errors import GeometryMismatchError, PetcorpusError, Reason
from petcorpus.layouts.autopet import AutopetCase
from petcorpus.metrics.autopet import MaskComparison, compare_masks
from petcorpus.viz_downsample import resize_labels, resize_mask, resize_values
from petcorpus.volume import Volume

__all__ = [
    "COLOURS",
    "MaskComparison",
    "Projection",
    "StudyImages",
    "View",
    "compare_masks",
    "label_projection",
    "mask_projection",
    "mip",
    "png_bytes",
    "read_study_dir",
    "render",
    "require",
    "study_figure",
    "to_canonical",
]

log = logging.getLogger(__name__)

View = Literal["coronal", "sagittal", "axial"]
VIEWS: tuple[str, ...] = ("coronal", "sagittal", "axial")

#: Overlay colours (RGB). Colour-blind-friendly picks, mostly from Paul Tol's "vibrant" scheme.
COLOURS: dict[str, tuple[int, int, int]] = {
    "lesion": (238, 51, 119),  # magenta (Tol's #EE3377)
    "tp": (34, 136, 51),  # green: matched components
    "fp": (238, 102, 51),  # orange-red: predicted, no ground truth touched
    "fn": (0, 119, 187),  # blue: ground truth, missed by the prediction
    "text": (0, 0, 0),
    "background": (255, 255, 255),
}

# Palette layout: indices 0..N_GREY-1 are grey levels (0 black .. N_GREY-1 white), the rest
# are named colours (in COLOURS order) and a few organ colours.
N_GREY = 224
_NAMED = list(COLOURS)
# Organ outlines: blues, greens, yellows, greys (no magenta, orange or red: lesion colours).
_ORGAN_COLOURS = [
    (68, 119, 170), (102, 204, 238), (34, 136, 51), (204, 187, 68), (0, 153, 136),
    (153, 153, 51), (187, 187, 187), (51, 34, 136), (17, 119, 51), (68, 170, 153),
    (136, 204, 238), (221, 204, 119), (119, 119, 119), (0, 68, 136),
]  # fmt: skip


def _palette() -> list[int]:
    grey = [round(g * 255 / (N_GREY - 1)) for g in range(N_GREY)]
    pal: list[int] = []
    for g in grey:
        pal += [g, g, g]
    for name in _NAMED:
        pal += list(COLOURS[name])
    for c in _ORGAN_COLOURS:
        pal += list(c)
    pal += [0, 0, 0] * (256 - len(pal) // 3)
    return pal


PALETTE = _palette()


def colour_index(name: str) -> int:
    """Palette index of a named colour (see :data:`COLOURS`)."""
    return N_GREY + _NAMED.index(name)


def _organ_index(label: int) -> int:
    return N_GREY + len(_NAMED) + (int(label) - 1) % len(_ORGAN_COLOURS)


def require(module: str, package: str) -> Any:
    """Import a dependency of pictures and reports, or fail with the command that installs it
    (:class:`~petcorpus.errors.MissingDependencyError`)."""
    from petcorpus._optional import import_optional

    return import_optional(module, package=package, purpose="pictures and reports")


# --------------------------------------------------------------------------------------------
# Geometry: reorientation and projections
# --------------------------------------------------------------------------------------------
def to_canonical(vol: Volume) -> Volume:
    """Reorient ``vol`` so its voxel axes point R, A, S (nibabel ``as_closest_canonical``).

    Only flips and axis permutations (no interpolation); an oblique affine is mapped to the
    closest RAS axes. The returned array is a view when possible.

    >>> v = Volume(np.arange(8).reshape(2, 2, 2), np.diag([-2.0, -2.0, 3.0, 1.0]))
    >>> c = to_canonical(v)
    >>> c.orientation, int(c.array[0, 0, 0]), int(c.array[1, 1, 0])
    (('R', 'A', 'S'), 6, 0)
    """
    ornt = nib.orientations.io_orientation(vol.affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return vol
    arr = nib.orientations.apply_orientation(vol.array, ornt)
    affine = vol.affine @ nib.orientations.inv_ornt_aff(ornt, vol.shape)
    return Volume(arr, affine)


@dataclasses.dataclass(frozen=True)
class Projection:
    """A 2-D projection in display order.

    Attributes
    ----------
    array : (rows, cols) ndarray
        Row 0 is superior (head) for coronal/sagittal, anterior for axial. Coronal: column 0
        is the patient's right. Sagittal: column 0 is anterior. Axial: column 0 is the
        patient's right (viewed from the feet, as radiologists read axial slices).
    view : str
        ``coronal``, ``sagittal`` or ``axial``.
    row_mm, col_mm : float
        Physical size of one row and one column step.
    """

    array: np.ndarray
    view: str
    row_mm: float
    col_mm: float

    @property
    def shape(self) -> tuple[int, int]:
        r, c = self.array.shape
        return (r, c)

    @property
    def extent_mm(self) -> tuple[float, float]:
        """(height, width) in mm."""
        return (self.array.shape[0] * self.row_mm, self.array.shape[1] * self.col_mm)


def _check_view(view: str) -> str:
    if view not in VIEWS:
        raise PetcorpusError(
            f"unknown view {view!r}; use one of {', '.join(VIEWS)}", reason=Reason.INVALID_VALUE
        )
    return view


def _project(
    canon: np.ndarray, spacing: np.ndarray, view: str, reduce: Any
) -> tuple[np.ndarray, float, float]:
    """Reduce a RAS canonical array along the view axis; return it in display order."""
    sx, sy, sz = (float(s) for s in spacing)
    if view == "coronal":  # along A-P (j); display rows = S..I, cols = R..L
        m = reduce(canon, axis=1)  # (I, K)
        return m.T[::-1, ::-1], sz, sx
    if view == "sagittal":  # along L-R (i); rows = S..I, cols = A..P
        m = reduce(canon, axis=0)  # (J, K)
        return m.T[::-1, ::-1], sz, sy
    m = reduce(canon, axis=2)  # axial, along S-I; rows = A..P, cols = R..L
    return m.T[::-1, ::-1], sy, sx


def mip(vol: Volume, view: str = "coronal") -> Projection:
    """Maximum-intensity projection of ``vol`` (any orientation) in display order.

    Parameters
    ----------
    vol : Volume
        Typically SUV (float32) on the PET grid.
    view : {"coronal", "sagittal", "axial"}
        Projection direction: coronal looks along anterior-posterior, sagittal along
        left-right, axial along superior-inferior.

    Returns
    -------
    Projection
        Values equal ``np.max`` of the RAS-canonical array along the view axis, transposed
        and flipped to display order (see :class:`Projection`).
    """
    _check_view(view)
    canon = to_canonical(vol)
    arr, row_mm, col_mm = _project(canon.array, canon.spacing, view, np.max)
    return Projection(np.ascontiguousarray(arr), view, row_mm, col_mm)


def mask_projection(mask: Volume, view: str = "coronal") -> Projection:
    """Boolean projection of ``mask > 0`` (any voxel along the ray)."""
    _check_view(view)
    canon = to_canonical(mask)
    arr, row_mm, col_mm = _project(np.asarray(canon.array) > 0, canon.spacing, view, np.any)
    return Projection(np.ascontiguousarray(arr), view, row_mm, col_mm)


def label_projection(labels: Volume, view: str = "coronal") -> Projection:
    """Label of the first non-zero voxel seen from the viewer (a surface view of a label map).

    The viewer looks from anterior (coronal), from the patient's left (sagittal: anterior is
    on the image's left) and from the feet (axial). Rays through background give 0.
    """
    _check_view(view)
    canon = to_canonical(labels)
    arr = np.asarray(canon.array)
    axis = {"coronal": 1, "sagittal": 0, "axial": 2}[view]
    # The viewer sits at the high-index end for coronal (anterior = +j) and sagittal (+i is
    # right; the left viewer sees the low-index end first) -- pick the nearest voxel.
    from_high = view == "coronal"
    a = np.flip(arr, axis=axis) if from_high else arr
    nz = a != 0
    first = np.argmax(nz, axis=axis)
    picked = np.take_along_axis(a, np.expand_dims(first, axis), axis=axis).squeeze(axis)
    picked = np.where(nz.any(axis=axis), picked, 0)
    out = np.expand_dims(picked, axis)  # reuse _project's transpose/flip on a length-1 axis
    disp, row_mm, col_mm = _project(out, canon.spacing, view, lambda x, axis: x.squeeze(axis))
    return Projection(np.ascontiguousarray(disp), view, row_mm, col_mm)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
def _display_size(proj: Projection, pixel_mm: float) -> tuple[int, int]:
    h_mm, w_mm = proj.extent_mm
    return max(1, round(w_mm / pixel_mm)), max(1, round(h_mm / pixel_mm))


def grey_index(values: npt.ArrayLike, vmin: float, vmax: float, invert: bool) -> np.ndarray:
    """Map values to palette grey indices 0..N_GREY-1 (``invert``: vmax is black)."""
    if not vmax > vmin:
        raise PetcorpusError(f"window must have vmax > vmin, got {vmin}..{vmax}")
    v = np.asarray(values, dtype=np.float64)
    t = np.clip((np.nan_to_num(v, nan=vmin) - vmin) / (vmax - vmin), 0.0, 1.0)
    if invert:
        t = 1.0 - t
    return np.rint(t * (N_GREY - 1)).astype(np.uint8)


def _contour(mask: np.ndarray, width: int) -> np.ndarray:
    from scipy import ndimage

    inner = ndimage.binary_erosion(mask, iterations=width, border_value=0)
    return mask & ~inner


def render(
    image: Projection,
    overlays: Sequence[tuple[Projection, str]] = (),
    *,
    vmin: float = 0.0,
    vmax: float = 10.0,
    invert: bool = True,
    pixel_mm: float | None = None,
    style: Literal["contour", "fill"] = "contour",
    line_px: int = 2,
    labels: Projection | None = None,
    title: str | None = None,
) -> Any:
    """Render a projection (and coloured masks on it) as a PIL palette image.

    Parameters
    ----------
    image : Projection
        Grey values, e.g. SUV (window ``vmin``..``vmax``, inverted grey by default).
    overlays : sequence of (Projection, colour name)
        Boolean projections of masks on the same grid, painted in order with a colour from
        :data:`COLOURS` (``lesion``, ``tp``, ``fp``, ``fn``).
    pixel_mm : float, optional
        Size of a (square) display pixel in mm; default the finer of the projection's two
        spacings, so the physical aspect ratio is right.
    style : {"contour", "fill"}
        Outline of each mask (``line_px`` wide) or a solid fill (thumbnails).
    labels : Projection, optional
        An organ label projection (see :func:`label_projection`), drawn as contours.
    title : str, optional
        Written in black on a white strip above the panel (which widens if the title is
        longer than the panel).

    Returns
    -------
    PIL.Image.Image
        Mode ``P`` with :data:`PALETTE`.
    """
    Image = require("PIL.Image", "Pillow")

    px = float(pixel_mm) if pixel_mm is not None else min(image.row_mm, image.col_mm)
    width, height = _display_size(image, px)
    size = (height, width)
    values = resize_values(np.nan_to_num(image.array, nan=vmin), size)
    idx = grey_index(values, vmin, vmax, invert)
    if labels is not None:
        if labels.array.shape != image.array.shape:
            raise GeometryMismatchError(
                f"label projection {labels.array.shape} differs from the image "
                f"{image.array.shape}; the label map must be on the PET grid"
            )
        for value, lab in resize_labels(labels.array, size).items():
            idx[_contour(lab, 1)] = _organ_index(value)
    for proj, colour in overlays:
        if proj.array.shape != image.array.shape:
            raise GeometryMismatchError(
                f"overlay shape {proj.array.shape} differs from the image {image.array.shape}"
            )
        mask = resize_mask(proj.array, size)
        if style == "contour":
            mask = _contour(mask, line_px)
        idx[mask] = colour_index(colour)
    out = Image.fromarray(idx, mode="P")
    out.putpalette(PALETTE)
    return _titled(out, title) if title else out


#: Height of the strip above a panel that holds its title, and of one legend line (px).
TEXT_LINE_PX = 16


def _text_width(text: str) -> int:
    ImageDraw = require("PIL.ImageDraw", "Pillow")
    return int(np.ceil(ImageDraw.Draw(_canvas(1, 1)).textlength(text)))


def _titled(img: Any, title: str) -> Any:
    """``img`` below a white strip with ``title`` in black: readable whatever the panel shows
    (a black CT background included); the panel widens when the title is longer."""
    ImageDraw = require("PIL.ImageDraw", "Pillow")
    canvas = _canvas(max(img.width, _text_width(title) + 6), img.height + TEXT_LINE_PX)
    canvas.paste(img, (0, TEXT_LINE_PX))
    ImageDraw.Draw(canvas).text((3, 1), title, fill=colour_index("text"))
    return canvas


def _canvas(width: int, height: int) -> Any:
    Image = require("PIL.Image", "Pillow")

    c = Image.new("P", (max(1, width), max(1, height)), N_GREY - 1)
    c.putpalette(PALETTE)
    return c


def _legend_lines(
    footer: Sequence[tuple[str, str]], width: int
) -> tuple[list[list[tuple[str, str, int]]], int]:
    """Legend entries packed into lines no wider than ``width`` (an entry wider than that
    gets a line of its own); returns the lines and the widest line's width."""
    lines: list[list[tuple[str, str, int]]] = []
    used = widest = 0
    for text, colour in footer:
        w = 13 + _text_width(text) + 12
        if not lines or used + w > width:
            lines.append([])
            used = 4
        lines[-1].append((text, colour, w))
        used += w
        widest = max(widest, used)
    return lines, widest


def hstack(images: Sequence[Any], gap: int = 6, footer: Sequence[tuple[str, str]] = ()) -> Any:
    """Place palette images side by side (top-aligned) on white, with an optional legend
    below them: its entries wrap onto more lines, and the canvas widens only for an entry
    wider than all the panels together, so no entry is ever cut off."""
    ImageDraw = require("PIL.ImageDraw", "Pillow")
    panels_w = sum(i.width for i in images) + gap * (len(images) - 1)
    lines, legend_w = _legend_lines(footer, panels_w)
    top = max(i.height for i in images)
    canvas = _canvas(max(panels_w, legend_w), top + TEXT_LINE_PX * len(lines))
    x = 0
    for im in images:
        canvas.paste(im, (x, 0))
        x += im.width + gap
    d = ImageDraw.Draw(canvas)
    for n, line in enumerate(lines):
        x, y = 4, top + TEXT_LINE_PX * (n + 1)
        for text, colour, w in line:
            d.rectangle((x, y - 12, x + 9, y - 3), fill=colour_index(colour))
            d.text((x + 13, y - 14), text, fill=colour_index("text"))
            x += w
    return canvas


def _trim_columns(img: Any, margin: int = 2) -> Any:
    """Crop a palette image to its non-white columns (plus ``margin``)."""
    arr = np.asarray(img)
    cols = np.flatnonzero((arr != N_GREY - 1).any(axis=0))
    if cols.size == 0:
        return img
    left, right = max(0, int(cols[0]) - margin), min(arr.shape[1], int(cols[-1]) + margin + 1)
    return img.crop((left, 0, right, arr.shape[0]))


def png_bytes(img: Any, optimize: bool = True) -> bytes:
    """Encode a PIL image as PNG (palette kept; ``optimize`` shrinks by ~10-20 %)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=optimize)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# A study folder of the autoPET layout
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StudyImages:
    """The volumes of one study folder that pictures need (any may be missing)."""

    path: Path
    suv: Volume | None
    seg: Volume | None
    ct: Volume | None
    sidecar: dict[str, Any]
    pet: Volume | None = None


def read_sidecar(study_dir: str | Path) -> dict[str, Any]:
    """The study's sidecar as a dict ({} when absent)."""
    return AutopetCase(study_dir).metadata


def read_study_dir(study_dir: str | Path, with_ct: bool = False) -> StudyImages:
    """Read SUV (or PET × sidecar factor), SEG and optionally CTres/CT of a study folder of
    the autoPET layout (:meth:`~petcorpus.layouts.autopet.AutopetCase.suv`).

    Raises
    ------
    PetcorpusError
        Neither an SUV nor a PET with an SUV factor in the sidecar is there;
        ``CorruptFileError`` for unreadable files; ``GeometryMismatchError`` when the SEG is
        not on the SUV grid.
    """
    d = Path(study_dir)
    if not d.is_dir():
        raise PetcorpusError("not a study folder", path=d)
    case = AutopetCase(d)
    sidecar = case.metadata
    suv, pet = case.suv()
    seg = case.volume("SEG") if case.has("SEG") else None
    if seg is not None and not seg.same_grid(suv, atol=1e-3):
        raise GeometryMismatchError("SEG is not on the SUV grid", path=case.source("SEG"))
    ct = None
    if with_ct:
        ct = next((case.volume(n) for n in ("CTres", "CT") if case.has(n)), None)
    return StudyImages(path=d, suv=suv, seg=seg, ct=ct, sidecar=sidecar, pet=pet)


def study_figure(
    suv: Volume,
    seg: Volume | None = None,
    *,
    pred: Volume | None = None,
    ct: Volume | None = None,
    labels: Volume | None = None,
    views: Sequence[str] = ("coronal", "sagittal"),
    vmax: float = 10.0,
    pixel_mm: float | None = 2.0,
    style: Literal["contour", "fill"] = "contour",
    titles: bool = True,
    legend: bool = True,
    cache: dict[tuple[str, str], Projection] | None = None,
    trim: bool = False,
) -> Any:
    """One picture of a study: per view, the PET MIP with lesions (and more panels).

    Panels per view: PET MIP with ground-truth lesions; with ``pred`` a second PET MIP shows
    the prediction, and components are coloured matched (green), false negative (blue, on the
    ground-truth panel) and false positive (orange, on the prediction panel); with ``ct`` a
    CT MIP (HU -200..1200, bone white). ``labels`` (organ map on the PET grid) adds contours.

    ``trim`` cuts the empty (white) columns left and right of each panel, for thumbnails
    (the panels then no longer share one horizontal scale with the field of view).

    ``cache`` (a dict, initially empty) keeps the SUV, SEG and CT projections between calls
    for the *same* volumes, e.g. to draw a thumbnail and a full-size figure of one study.
    """

    def cached(kind: str, view: str, project: Any, vol: Volume) -> Projection:
        if cache is None:
            return project(vol, view)
        if (kind, view) not in cache:
            cache[(kind, view)] = project(vol, view)
        return cache[(kind, view)]

    for v in views:
        _check_view(v)
    if not views:
        raise PetcorpusError("no view asked for; use coronal, sagittal and/or axial")
    canon_suv = to_canonical(suv)
    if pixel_mm is None:
        pixel_mm = 2.0
    cmp = compare_masks(seg, pred) if (seg is not None and pred is not None) else None
    if pred is not None and seg is None:
        seg = pred.with_array(np.zeros(pred.shape, np.uint8))
        cmp = compare_masks(seg, pred)
    panels = []
    for view in views:
        base = cached("suv", view, mip, canon_suv)
        lab = label_projection(labels, view) if labels is not None else None
        if cmp is None:
            ov = []
            if seg is not None:
                ov = [(cached("seg", view, mask_projection, seg), "lesion")]
            name = f"{view} PET" if titles else None
            panels.append(
                render(base, ov, vmax=vmax, pixel_mm=pixel_mm, style=style, labels=lab, title=name)
            )
        else:
            gt_ov = [
                (mask_projection(cmp.matched_gt, view), "tp"),
                (mask_projection(cmp.missed_gt, view), "fn"),
            ]
            pr_ov = [
                (mask_projection(cmp.matched_pred, view), "tp"),
                (mask_projection(cmp.false_pos, view), "fp"),
            ]
            panels.append(
                render(
                    base,
                    gt_ov,
                    vmax=vmax,
                    pixel_mm=pixel_mm,
                    style=style,
                    labels=lab,
                    title=f"{view} truth" if titles else None,
                )
            )
            panels.append(
                render(
                    base,
                    pr_ov,
                    vmax=vmax,
                    pixel_mm=pixel_mm,
                    style=style,
                    labels=lab,
                    title=f"{view} prediction" if titles else None,
                )
            )
        if ct is not None:
            panels.append(
                render(
                    cached("ct", view, mip, ct),
                    vmin=-200.0,
                    vmax=1200.0,
                    invert=False,
                    pixel_mm=pixel_mm,
                    title=f"{view} CT" if titles else None,
                )
            )
    if trim:
        panels = [_trim_columns(p) for p in panels]
    footer: list[tuple[str, str]] = []
    if legend and cmp is not None:
        footer = [
            (f"matched ({cmp.n_gt - cmp.n_fn} GT)", "tp"),
            (f"FN ({cmp.n_fn}, {cmp.fn_volume_ml:.1f} ml)", "fn"),
            (f"FP ({cmp.n_fp}, {cmp.fp_volume_ml:.1f} ml)", "fp"),
        ]
    elif legend and seg is not None and titles:
        footer = [("lesion mask", "lesion"), (f"SUV 0-{vmax:g}", "text")]
    return hstack(panels, footer=footer)
