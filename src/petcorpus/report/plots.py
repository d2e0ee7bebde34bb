"""The report's pictures, as PNG bytes: study MIPs (:mod:`petcorpus.viz`) and the
evaluation plots (matplotlib, Agg canvas, no display needed).

Every picture is an 8-bit palette PNG; the same inputs give the same bytes.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np

from petcorpus import viz
from petcorpus.volume import Volume

__all__ = ["THUMB_MAX_PIXEL_MM", "StudyOptions", "StudyPictures", "fig_png", "metric_plots"]

#: Coarsest thumbnail pixel (mm): a 1 cm lesion then fills at least 2 x 2 pixels (lesion
#: masks are max-pooled, :mod:`petcorpus.viz_downsample`), and a 98 cm field of view at the
#: default 240 px height is drawn at about 4 mm per pixel.
THUMB_MAX_PIXEL_MM = 5.0


@dataclasses.dataclass(frozen=True)
class StudyOptions:
    """How each study is drawn (picklable: sent to worker processes).

    ``thumb_height`` and ``figure_height`` are in pixels (a thumbnail pixel is never coarser
    than :data:`THUMB_MAX_PIXEL_MM`); ``predictions`` is the folder of predicted masks (see
    :func:`petcorpus.layouts.flat.find_prediction`).
    """

    vmax: float = 10.0
    thumb_height: int = 240
    figure_height: int = 420
    with_ct: bool = False
    predictions: Path | None = None


def _pixel_mm_for_height(vol: Volume, height_px: int) -> float:
    canon = viz.to_canonical(vol)
    return float(canon.shape[2] * canon.spacing[2] / max(1, height_px))


class StudyPictures:
    """The pictures of one study; projections are computed once and shared between them.

    Parameters
    ----------
    suv : Volume
        SUV image.
    seg : Volume, optional
        Lesion mask on the SUV grid.
    options : StudyOptions
        SUV window and picture heights.
    """

    def __init__(self, suv: Volume, seg: Volume | None, options: StudyOptions) -> None:
        self.suv, self.seg, self.options = suv, seg, options
        self._cache: dict[tuple[str, str], viz.Projection] = {}

    def _figure_pixel_mm(self) -> float:
        return max(2.0, _pixel_mm_for_height(self.suv, self.options.figure_height))

    def thumbnail_pixel_mm(self) -> float:
        """Pixel size of the thumbnails: the study fits ``thumb_height``, but never coarser
        than :data:`THUMB_MAX_PIXEL_MM`."""
        fit = _pixel_mm_for_height(self.suv, self.options.thumb_height)
        return min(THUMB_MAX_PIXEL_MM, fit)

    def thumbnail(self) -> bytes:
        """Coronal and sagittal MIPs with lesions filled, no titles, trimmed."""
        img = viz.study_figure(
            self.suv,
            self.seg,
            vmax=self.options.vmax,
            pixel_mm=self.thumbnail_pixel_mm(),
            style="fill",
            titles=False,
            legend=False,
            cache=self._cache,
            trim=True,
        )
        return viz.png_bytes(img)

    def figure(self, ct: Volume | None = None) -> bytes:
        """Full-size coronal and sagittal MIPs with lesion outlines (and CT MIPs)."""
        img = viz.study_figure(
            self.suv,
            self.seg,
            ct=ct,
            vmax=self.options.vmax,
            pixel_mm=self._figure_pixel_mm(),
            cache=self._cache,
        )
        return viz.png_bytes(img)

    def comparison(self, pred: Volume) -> bytes:
        """Coronal truth vs prediction: matched, missed (FN) and false-positive components."""
        truth = (
            self.seg if self.seg is not None else pred.with_array(np.zeros(pred.shape, np.uint8))
        )
        img = viz.study_figure(
            self.suv,
            truth,
            pred=pred,
            vmax=self.options.vmax,
            views=("coronal",),
            pixel_mm=self._figure_pixel_mm(),
            cache=self._cache,
        )
        return viz.png_bytes(img)


def metric_plots(df: Any, mtv: np.ndarray) -> list[tuple[str, bytes]]:
    """Dice against ground-truth MTV, and FP/FN volume per case: ``(title, png)`` pairs.

    Parameters
    ----------
    df : pandas.DataFrame
        Metrics as :func:`petcorpus.report.read_metrics` returns them.
    mtv : (N,) array
        Ground-truth MTV (ml) per row of ``df`` (nan where unknown).
    """
    FigureCanvasAgg = viz.require("matplotlib.backends.backend_agg", "matplotlib").FigureCanvasAgg
    Figure = viz.require("matplotlib.figure", "matplotlib").Figure
    from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, ScalarFormatter

    plots = []
    dice = df["dice"].to_numpy(dtype=float)
    fig = Figure(figsize=(4.2, 3.0), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ok = np.isfinite(mtv) & np.isfinite(dice) & (mtv > 0)
    ax.scatter(mtv[ok], dice[ok], s=14, c="#4477aa")
    if ok.any():
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("ground-truth MTV (ml)")
    ax.set_ylabel("Dice")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Dice vs MTV ({int(ok.sum())} cases with lesions)", fontsize=9)
    fig.tight_layout()
    plots.append(("Dice vs MTV", fig_png(fig)))

    fig = Figure(figsize=(4.2, 3.0), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(df))
    fp = df["fp_volume_ml"].to_numpy(dtype=float)
    fn = df["fn_volume_ml"].to_numpy(dtype=float)
    ax.bar(x - 0.2, np.nan_to_num(fp), width=0.4, color="#ee6633", label="FP volume")
    ax.bar(x + 0.2, np.nan_to_num(fn), width=0.4, color="#0077bb", label="FN volume")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("case (row of the per-case table, from 0)")
    ax.set_ylabel("ml")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("false-positive and false-negative volumes", fontsize=9)
    fig.tight_layout()
    plots.append(("FP/FN volumes", fig_png(fig)))
    return plots


def fig_png(fig: Any) -> bytes:
    """A matplotlib figure as a 64-colour palette PNG (no metadata, so reproducible)."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return viz.png_bytes(img.quantize(colors=64, method=Image.Quantize.MEDIANCUT))
