"""The report's HTML, from the Jinja2 template ``petcorpus/templates/report.html.j2``.

The template is autoescaped: every study, subject, sidecar, catalog and metrics value is
inserted as text, so a name such as ``<script>`` shows as typed and never runs. This module
only turns the collected data into display strings (numbers formatted, images given a
``src``); it reads no file other than the template.
"""

from __future__ import annotations

import base64
import functools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jinja2
import numpy as np

from petcorpus.report.collect import (
    LESION_SOURCE,
    CatalogInfo,
    StudyEntry,
    match_case,
    sidecar_value,
)

__all__ = ["TEMPLATE", "ImageSource", "data_uri", "render_html"]

TEMPLATE = "report.html.j2"
#: Maps a PNG and its alt text to an ``<img src>``: a ``data:`` URI or a relative file name.
ImageSource = Callable[[bytes, str], str]


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("petcorpus", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def data_uri(png: bytes, alt: str = "") -> str:
    """A PNG as a ``data:`` URI (the report's embedded images)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _fmt(v: Any, digits: int = 4) -> Any:
    """Floats with ``digits`` significant digits (``nan`` as such); other values as given."""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}g}"
    return "" if v is None else v


def _suv_view(suv: Mapping[str, Any]) -> dict[str, Any] | None:
    """The SUV factor cell: factor, kind, time reference, scalar inputs (with the DICOM tag
    they came from) and errors; keys the report does not know are ignored."""
    if not suv:
        return None
    inputs: list[tuple[str, Any, Any]] = []
    raw_inputs = suv.get("inputs")
    if isinstance(raw_inputs, Mapping):
        for k, raw in raw_inputs.items():
            v = sidecar_value(raw)
            if isinstance(v, list | tuple) and all(isinstance(x, str | int | float) for x in v):
                v = ", ".join(str(x) for x in v)
            if not (isinstance(v, str | int | float | bool) or v is None):
                continue
            src = raw.get("source") if isinstance(raw, Mapping) else None
            inputs.append((str(k), _fmt(v), src or None))
    errors = suv.get("errors")
    return {
        "factor": _fmt(suv.get("factor")),
        "kind": suv.get("kind", ""),
        "time_reference": suv.get("time_reference", ""),
        "inputs": inputs,
        "errors": list(errors.items()) if isinstance(errors, Mapping) else [],
    }


def _image(png: bytes | None, alt: str, src: ImageSource) -> dict[str, str] | None:
    return None if png is None else {"src": src(png, alt), "alt": alt}


def _study_view(e: StudyEntry, src: ImageSource) -> dict[str, Any]:
    les = e.lesions
    return {
        "key": e.key,
        "anchor": e.anchor,
        "subject": e.subject,
        "study": e.study,
        "study_uid": e.study_uid or "?",
        "diagnosis": e.diagnosis,
        "sex": e.sex,
        "age": e.age or "?",
        "site": e.site,
        "vendor": e.vendor,
        "files": ", ".join(e.files) or "none",
        "suv": _suv_view(e.suv),
        "lesions": None
        if les is None
        else {
            "count": les.count,
            "mtv": f"{les.mtv_ml:.1f}",
            "tlg": f"{les.tlg:.1f}",
            "suv_max": "–" if math.isnan(les.suv_max) else f"{les.suv_max:.1f}",
        },
        "error": e.error,
        "error_class": e.error_class,
        "thumb": _image(e.thumb_png, f"thumbnail {e.key}", src),
        "figure": _image(e.figure_png, f"MIPs {e.key}", src),
        "prediction": _image(e.prediction_png, f"prediction {e.key}", src),
        "prediction_note": e.prediction_note,
    }


def _counts(title: str, values: Iterable[Any]) -> dict[str, Any]:
    return {"title": title, "rows": Counter(values).most_common()}


def _evaluation(
    df: Any, plots: Sequence[tuple[str, bytes]], entries: Sequence[StudyEntry], src: ImageSource
) -> dict[str, Any]:
    def nanstat(col: str, fn: Callable[[np.ndarray], Any]) -> str:
        v = df[col].to_numpy(dtype=float)
        return "nan" if not np.isfinite(v).any() else f"{fn(v[np.isfinite(v)]):.3f}"

    cols = [c for c in df.columns if c != "case"]
    rows = []
    for _, row in df.iterrows():
        e = match_case(str(row["case"]), entries)
        rows.append(
            {
                "case": row["case"],
                "anchor": e.anchor if e else None,
                "cells": [_fmt(row[c]) for c in cols],
            }
        )
    return {
        "n": len(df),
        "stats": [
            (col, nanstat(col, np.mean), nanstat(col, np.median))
            for col in ("dice", "fp_volume_ml", "fn_volume_ml")
        ],
        "plots": [_image(png, title, src) for title, png in plots],
        "columns": cols,
        "rows": rows,
    }


def _qc_view(
    cat: CatalogInfo, entries: Sequence[StudyEntry], src: ImageSource
) -> dict[str, Any] | None:
    """The quality-control section: every flag of the last ``petcorpus qc`` with its
    picture, grouped by study (None when qc never ran)."""
    if not cat.qc_checked:
        return None
    anchors = {e.key: e.anchor for e in entries}
    studies: dict[str, dict[str, Any]] = {}
    for f in cat.qc_flags:
        key = str(f["case_key"])
        st = studies.setdefault(key, {"key": key, "anchor": anchors.get(key), "flags": []})
        st["flags"].append(
            {
                "check": f["check_name"],
                "reason": f["reason"],
                "message": f["message"],
                "picture": _image(f.get("picture"), f"{f['reason']} {key}", src),
            }
        )
    return {
        "checked": cat.qc_checked,
        "studies": list(studies.values()),
        "reasons": _counts("reason", (str(f["reason"]) for f in cat.qc_flags)),
    }


def render_html(
    *,
    name: str,
    entries: Sequence[StudyEntry],
    cat: CatalogInfo,
    failures: Sequence[Mapping[str, Any]],
    metrics: Any = None,
    metric_plots: Sequence[tuple[str, bytes]] = (),
    image_src: ImageSource = data_uri,
    built: str | None = None,
) -> str:
    """The report page.

    Parameters
    ----------
    name : str
        Corpus name for the title (the folder's name).
    entries : sequence of StudyEntry
        One per study folder, in display order.
    cat : CatalogInfo
        Catalog facts (status counts, notes).
    failures : sequence of mapping
        Rows of the Failures table (:func:`~petcorpus.report.collect.failure_rows`).
    metrics : pandas.DataFrame, optional
        Per-case metrics; adds the evaluation section with ``metric_plots``.
    image_src : callable
        ``(png, alt) -> src`` for every picture (default: embedded ``data:`` URIs).
    built : str, optional
        When and how fast the report was built; left out by default, so the same corpus
        gives the same bytes.
    """
    ok = [e for e in entries if e.error is None]
    les = [e.lesions for e in ok if e.lesions is not None]
    counts = [
        _counts(title, (getattr(e, title) for e in entries))
        for title in ("diagnosis", "sex", "site", "vendor")
    ]
    if cat.study_status:
        counts.append(_counts("catalog status", cat.study_status.values()))
    context = {
        "name": name,
        "n_studies": len(entries),
        "n_readable": len(ok),
        "source": "catalog.sqlite + study folders"
        if cat.present
        else "study folders and sidecars",
        "built": built,
        "counts": counts,
        "lesions": None
        if not les
        else {
            "studies": sum(x.count > 0 for x in les),
            "count": sum(x.count for x in les),
            "median_mtv": f"{np.median([x.mtv_ml for x in les]):.1f}",
        },
        "notes": cat.notes,
        "failures": [
            {k: _fmt(f.get(k)) for k in ("study", "stage", "error_class", "reason", "message")}
            for f in failures
        ],
        "failure_reasons": _counts(
            "reason", (str(f.get("reason") or f.get("error_class") or "?") for f in failures)
        ),
        "evaluation": None
        if metrics is None
        else _evaluation(metrics, metric_plots, entries, image_src),
        "lesion_source": les[0].source if les else LESION_SOURCE,
        "qc": _qc_view(cat, entries, image_src),
        "studies": [_study_view(e, image_src) for e in entries],
    }
    return _environment().get_template(TEMPLATE).render(context)
