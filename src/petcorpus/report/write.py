""":func:`write_report`: collect every study, draw, render, and write the page atomically."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from petcorpus.atomic import atomic_write
from petcorpus.report.collect import (
    StudyEntry,
    collect_study,
    failed_entry,
    failure_rows,
    find_studies,
    metrics_mtv,
    read_catalog,
    read_metrics,
)
from petcorpus.report.plots import StudyOptions, metric_plots
from petcorpus.report.render import ImageSource, data_uri, render_html

__all__ = ["write_report"]

log = logging.getLogger(__name__)


def _collect_all(
    studies: list[Path],
    build: Callable[[Path], StudyEntry],
    on_crash: Callable[[Path, BaseException], StudyEntry],
    workers: int,
    show: Callable[[Iterable[Any]], Iterable[Any]],
) -> list[StudyEntry]:
    """Entries in the order of ``studies``, built here or in ``workers`` processes; a worker
    that dies (or any error the build did not catch) fails that study alone."""
    if workers > 1 and len(studies) > 1:
        from petcorpus._procs import process_pool

        # Workers end with the driver and never import from the current folder.
        with process_pool(min(workers, len(studies)), preload=(__name__,)) as pool:
            futures = [pool.submit(build, d) for d in studies]
            entries = []
            for d, fut in zip(studies, show(futures), strict=True):
                try:
                    entries.append(fut.result())
                except Exception as exc:
                    entries.append(on_crash(d, exc))
            return entries
    entries = []
    for d in show(studies):
        try:
            entries.append(build(d))
        except Exception as exc:  # pragma: no cover - collect_study records its own errors
            entries.append(on_crash(d, exc))
    return entries


def _external_images(html_path: Path) -> ImageSource:
    """Write each picture as ``<stem>_files/imgNNNNN.png`` beside the page; return its src."""
    folder = html_path.with_name(html_path.stem + "_files")
    folder.mkdir(parents=True, exist_ok=True)
    counter = iter(range(1_000_000))

    def write(png: bytes, alt: str) -> str:
        name = f"img{next(counter):05d}.png"
        with atomic_write(folder / name) as f:
            f.write(png)
        return f"{folder.name}/{name}"

    return write


def write_report(
    out_dir: str | Path,
    metrics: str | Path | None = None,
    output: str | Path | None = None,
    *,
    embed: bool = True,
    vmax: float = 10.0,
    thumb_height: int = StudyOptions.thumb_height,
    figure_height: int = StudyOptions.figure_height,
    with_ct: bool = False,
    predictions: str | Path | None = None,
    workers: int = 1,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
    timestamp: bool = False,
) -> Path:
    """Write the HTML quality-control report of a corpus and return its path.

    Parameters
    ----------
    out_dir : str or Path
        Corpus in the autoPET layout (``<out>/<subject>/<study>/*.nii.gz``).
    metrics : str or Path, optional
        Per-case CSV from ``petcorpus evaluate`` (``case``, ``dice``, ``fp_volume_ml``,
        ``fn_volume_ml``, ...): adds the evaluation section.
    output : str or Path, optional
        The HTML file; default ``<out>/report.html``.
    embed : bool
        Embed images as ``data:`` URIs (one self-contained file, the default) or write them
        to ``<output stem>_files/`` beside the HTML.
    vmax : float
        Upper end of the SUV window (inverted grey, 0..vmax).
    thumb_height, figure_height : int
        Height in pixels of the table thumbnails (at most
        :data:`~petcorpus.report.plots.THUMB_MAX_PIXEL_MM` mm per pixel, so a taller field of
        view gives taller thumbnails) and of the per-study MIPs.
    with_ct : bool
        Add a CT MIP (CTres, else CT) to each study's figure.
    predictions : str or Path, optional
        Folder of predicted masks (found by :func:`petcorpus.layouts.flat.find_prediction`):
        each study's section then shows truth vs prediction with matched, FN and FP
        components coloured.
    workers : int
        Processes that read and draw studies in parallel (1: in this process). Reading a
        full-size study's SUV takes ~1.5 s, so large corpora gain from 2 or more.
    progress : callable, optional
        Wraps the list of per-study work items (e.g. ``rich.progress.track``).
    timestamp : bool
        Write the build date and duration into the page. Off by default: the same corpus
        (and options) then gives the same bytes.

    Returns
    -------
    Path
        The HTML file written.

    Notes
    -----
    A study that cannot be read or drawn (any error) is listed under Failures with its error
    class, reason code and message; the other studies render.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    studies = find_studies(out)
    cat = read_catalog(out)
    html_path = Path(output) if output is not None else out / "report.html"
    df = read_metrics(metrics) if metrics is not None else None

    options = StudyOptions(
        vmax=vmax,
        thumb_height=thumb_height,
        figure_height=figure_height,
        with_ct=with_ct,
        predictions=None if predictions is None else Path(predictions),
    )
    build = functools.partial(collect_study, cat=cat, options=options)
    on_crash = functools.partial(failed_entry, cat=cat)
    entries = _collect_all(studies, build, on_crash, workers, progress or (lambda it: it))
    plots = [] if df is None else metric_plots(df, metrics_mtv(df, entries))

    html_path.parent.mkdir(parents=True, exist_ok=True)
    built = None
    if timestamp:
        built = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC in {time.perf_counter() - t0:.1f} s"
    text = render_html(
        name=out.name,
        entries=entries,
        cat=cat,
        failures=failure_rows(cat, entries),
        metrics=df,
        metric_plots=plots,
        image_src=data_uri if embed else _external_images(html_path),
        built=built,
    )
    with atomic_write(html_path, "w") as f:
        f.write(text)
    log.info("report: %d studies, %d bytes, %s", len(entries), len(text), html_path)
    return html_path
