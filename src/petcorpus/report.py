"""An offline HTML quality-control report of a corpus in the autoPET layout.

:func:`write_report` reads ``<out>/<subject>/<study>/{SUV,SEG,CTres,...}.nii.gz`` and each
study's ``petcorpus.json``; when ``<out>/catalog.sqlite`` exists it also reads subjects (sex,
age, diagnosis, site), scanner vendor and recorded failures from it (read-only, and any table
or column that is missing is skipped). With a metrics CSV (``petcorpus evaluate``) it adds
the evaluation summary and per-case plots.

The result is one self-contained HTML file: every picture is an embedded PNG (``data:``
URI), there is no script from the network and no external stylesheet, so it opens offline
and can be mailed. Thumbnails are 8-bit palette PNGs a few kB each.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import html
import logging
import math
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petcorpus import viz
from petcorpus.errors import PetcorpusError
from petcorpus.volume import Volume

__all__ = [
    "CatalogInfo",
    "LesionSummary",
    "StudyEntry",
    "find_prediction",
    "find_studies",
    "lesion_summary",
    "read_catalog",
    "read_metrics",
    "write_report",
]

log = logging.getLogger(__name__)

LAYOUT_FILES = ("CT.nii.gz", "PET.nii.gz", "SUV.nii.gz", "CTres.nii.gz", "SEG.nii.gz")
SIDECAR = "petcorpus.json"
UNKNOWN = "unknown"


# --------------------------------------------------------------------------------------------
# Lesions
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LesionSummary:
    """Lesion burden of one study.

    Attributes
    ----------
    count : int
        18-connected components of the mask.
    mtv_ml : float
        Metabolic tumour volume: mask voxels x voxel volume (ml).
    tlg : float
        Total lesion glycolysis: sum of SUV over the mask x voxel volume (SUV*ml).
    suv_max : float
        Highest SUV inside the mask (nan for an empty mask).
    source : str
        Which code computed it.
    """

    count: int
    mtv_ml: float
    tlg: float
    suv_max: float
    source: str = "petcorpus.report's minimal cc3d count (18-connectivity)"


def lesion_summary(suv: Volume, mask: Volume, *, use_metrics: bool = True) -> LesionSummary:
    """Count lesions and compute MTV, TLG and SUVmax (18-connected components).

    Uses :mod:`petcorpus.metrics.lesions` when it is importable (and ``use_metrics``) on the
    mask's bounding box grown by the SUVpeak radius (the numbers are those of the full
    volume, and a whole-body grid is not scanned for a few small lesions), else a minimal
    cc3d computation here; both define MTV as voxels x voxel volume and TLG as the sum of SUV
    over the mask x voxel volume. ``source`` says which ran.

    >>> m = np.zeros((4, 4, 4), np.uint8); m[0, 0, 0] = m[3, 3, 3] = 1
    >>> s = lesion_summary(Volume(m * 2.5, np.eye(4)), Volume(m, np.eye(4)))
    >>> s.count, s.mtv_ml, round(s.tlg, 12), s.suv_max
    (2, 0.002, 0.005, 2.5)
    """
    if use_metrics:
        try:
            from petcorpus.metrics.lesions import PEAK_RADIUS_MM, lesion_statistics, study_summary
        except ImportError:  # pragma: no cover - the metrics module ships with petcorpus
            pass
        else:
            source = "petcorpus.metrics.lesions (cc3d, 18-connectivity)"
            if not suv.same_grid(mask):
                raise PetcorpusError(f"lesion mask {mask.shape} is not on the SUV grid")
            box = _mask_box(mask, margin_mm=PEAK_RADIUS_MM + 1.0)
            if box is None:
                return LesionSummary(0, 0.0, 0.0, math.nan, source)
            stats = lesion_statistics(_crop(suv, box), _crop(mask, box), connectivity=18)
            summ = study_summary(stats)
            return LesionSummary(
                count=int(summ.lesion_count),
                mtv_ml=float(summ.total_mtv_ml),
                tlg=float(summ.total_tlg),
                suv_max=max((x.suv_max for x in stats), default=math.nan),
                source=source,
            )
    import cc3d

    m = np.asarray(mask.array) > 0
    if m.shape != suv.shape:
        raise PetcorpusError(f"lesion mask {m.shape} and SUV {suv.shape} differ in shape")
    _, n = cc3d.connected_components(m.view(np.uint8), connectivity=18, return_N=True)
    ml = mask.voxel_volume_ml
    vals = np.asarray(suv.array)[m].astype(np.float64)
    return LesionSummary(
        count=int(n),
        mtv_ml=float(m.sum() * ml),
        tlg=float(vals.sum() * ml),
        suv_max=float(vals.max()) if vals.size else math.nan,
    )


def _mask_box(mask: Volume, margin_mm: float) -> tuple[slice, slice, slice] | None:
    """Bounding box of ``mask > 0`` grown by ``margin_mm`` (clipped), or None when empty."""
    m = np.asarray(mask.array) > 0
    box = []
    for axis, sp in enumerate(mask.spacing):
        others = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(m.any(axis=others))
        if idx.size == 0:
            return None
        pad = math.ceil(margin_mm / float(sp))
        box.append(slice(max(0, idx[0] - pad), min(m.shape[axis], idx[-1] + pad + 1)))
    return (box[0], box[1], box[2])


def _crop(vol: Volume, box: tuple[slice, slice, slice]) -> Volume:
    """The sub-volume ``vol[box]`` with its affine moved so world positions are unchanged."""
    shift = np.eye(4)
    shift[:3, 3] = [b.start for b in box]
    return Volume(np.asarray(vol.array)[box], vol.affine @ shift)


# --------------------------------------------------------------------------------------------
# Catalog (optional, read defensively)
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class CatalogInfo:
    """What the report takes from ``catalog.sqlite``; every part may be empty."""

    subjects: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    study_subject: dict[str, str] = dataclasses.field(default_factory=dict)  # uid -> subject
    study_vendor: dict[str, str] = dataclasses.field(default_factory=dict)  # uid -> vendor
    study_diagnosis: dict[str, str] = dataclasses.field(default_factory=dict)
    study_status: dict[str, str] = dataclasses.field(default_factory=dict)  # uid -> status
    path_study: dict[str, str] = dataclasses.field(default_factory=dict)  # "subj/study" -> uid
    failures: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    present: bool = False


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    try:
        return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
    except sqlite3.Error:
        return set()


def _select(
    conn: sqlite3.Connection, table: str, wanted: Sequence[str], info: CatalogInfo
) -> list[dict[str, Any]]:
    cols = _columns(conn, table)
    if not cols:
        info.notes.append(f"catalog has no table {table!r}; that part is skipped")
        return []
    have = [c for c in wanted if c in cols]
    missing = [c for c in wanted if c not in cols]
    if missing:
        info.notes.append(f"catalog table {table} lacks {', '.join(missing)}")
    if not have:
        return []
    rows = conn.execute(f"SELECT {', '.join(have)} FROM {table}").fetchall()
    return [dict(zip(have, r, strict=True)) for r in rows]


def read_catalog(out_dir: str | Path) -> CatalogInfo:
    """Read subjects, studies, vendors, artifact paths and failures from the catalog.

    Missing file → an empty :class:`CatalogInfo` (``present`` false). Missing tables or
    columns are skipped and noted in ``notes``; a file that is not SQLite is noted too.
    """
    info = CatalogInfo()
    db = Path(out_dir) / "catalog.sqlite"
    if not db.exists():
        return info
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        info.notes.append(f"cannot open catalog: {exc}")
        return info
    try:
        info.present = True
        for r in _select(
            conn, "subjects", ["subject_id", "sex", "age", "diagnosis", "site"], info
        ):
            if r.get("subject_id") is not None:
                info.subjects[str(r["subject_id"])] = r
        for r in _select(
            conn, "studies", ["study_uid", "subject_id", "diagnosis", "status"], info
        ):
            uid = r.get("study_uid")
            if uid is None:
                continue
            if r.get("status"):
                info.study_status[str(uid)] = str(r["status"])
            if r.get("subject_id"):
                info.study_subject[str(uid)] = str(r["subject_id"])
            if r.get("diagnosis"):
                info.study_diagnosis[str(uid)] = str(r["diagnosis"])
        for r in _select(conn, "series", ["study_uid", "modality", "manufacturer"], info):
            if r.get("study_uid") and r.get("manufacturer"):
                uid = str(r["study_uid"])
                if r.get("modality") in ("PT", None) or uid not in info.study_vendor:
                    info.study_vendor[uid] = str(r["manufacturer"])
        for r in _select(conn, "artifacts", ["study_uid", "path"], info):
            parts = str(r.get("path") or "").split("/")
            if r.get("study_uid") and len(parts) >= 3:
                info.path_study[f"{parts[0]}/{parts[1]}"] = str(r["study_uid"])
        info.failures = _select(
            conn, "failures", ["study_uid", "stage", "error_class", "reason", "message"], info
        )
    except sqlite3.Error as exc:
        info.notes.append(f"catalog could not be read completely: {exc}")
    finally:
        conn.close()
    return info


# --------------------------------------------------------------------------------------------
# Studies on disk
# --------------------------------------------------------------------------------------------
def find_studies(out_dir: str | Path) -> list[Path]:
    """Study folders ``<out>/<subject>/<study>/`` holding a layout file or a sidecar."""
    out = Path(out_dir)
    if not out.is_dir():
        raise PetcorpusError("output folder does not exist", path=out)
    found = []
    for subj in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for st in sorted(p for p in subj.iterdir() if p.is_dir()):
            if any((st / f).exists() for f in (*LAYOUT_FILES, SIDECAR)):
                found.append(st)
    return found


@dataclasses.dataclass
class StudyEntry:
    """One row of the report."""

    key: str  # "<subject>/<study>"
    subject: str
    study: str
    study_uid: str | None = None
    sex: str = UNKNOWN
    age: Any = None
    diagnosis: str = UNKNOWN
    site: str = UNKNOWN
    vendor: str = UNKNOWN
    suv: dict[str, Any] = dataclasses.field(default_factory=dict)
    lesions: LesionSummary | None = None
    files: list[str] = dataclasses.field(default_factory=list)
    thumb_png: bytes | None = None
    figure_png: bytes | None = None
    prediction_png: bytes | None = None
    prediction_note: str | None = None
    error: str | None = None
    error_class: str | None = None

    @property
    def anchor(self) -> str:
        return "s-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in self.key)


def _first(*values: Any) -> Any:
    for v in values:
        if v not in (None, ""):
            return v
    return None


def _dig(d: Mapping[str, Any], *keys: str) -> Any:
    """``d[k]`` for the first key present at top level, in ``suv.inputs`` or ``clinical``."""
    places: list[Mapping[str, Any]] = [d]
    for sub in ("clinical", "subject_info", "patient"):
        if isinstance(d.get(sub), Mapping):
            places.append(d[sub])
    suv = d.get("suv")
    if isinstance(suv, Mapping) and isinstance(suv.get("inputs"), Mapping):
        places.append(suv["inputs"])
    for place in places:
        for k in keys:
            v = _unwrap(place.get(k))
            if v not in (None, ""):
                return v
    return None


def _unwrap(v: Any) -> Any:
    """A sidecar input may be a plain value or ``{"value": ..., "source": tag, "file": ...}``."""
    if isinstance(v, Mapping) and "value" in v:
        return v["value"]
    return v


def _pixel_mm_for_height(vol: Volume, height_px: int) -> float:
    canon = viz.to_canonical(vol)
    return float(canon.shape[2] * canon.spacing[2] / max(1, height_px))


def _build_entry(
    study_dir: Path,
    *,
    cat: CatalogInfo,
    vmax: float,
    thumb_height: int,
    figure_height: int,
    with_ct: bool,
    predictions: Path | None = None,
) -> StudyEntry:
    subject, study = study_dir.parent.name, study_dir.name
    e = StudyEntry(key=f"{subject}/{study}", subject=subject, study=study)
    e.files = [f for f in LAYOUT_FILES if (study_dir / f).exists()]
    images: viz.StudyImages | None
    try:
        images = viz.read_study_dir(study_dir, with_ct=with_ct)
    except PetcorpusError as exc:
        e.error, e.error_class = str(exc), type(exc).__name__
        try:
            sidecar = viz.read_sidecar(study_dir)
        except PetcorpusError:
            sidecar = {}
        images = None
    else:
        sidecar = images.sidecar
    e.study_uid = _first(cat.path_study.get(e.key), sidecar.get("study_instance_uid"))
    subj = cat.subjects.get(subject, {})
    uid = e.study_uid or ""
    e.sex = str(_first(subj.get("sex"), _dig(sidecar, "sex", "PatientSex")) or UNKNOWN)
    e.age = _first(subj.get("age"), _dig(sidecar, "age", "PatientAge"))
    e.diagnosis = str(
        _first(cat.study_diagnosis.get(uid), subj.get("diagnosis"), _dig(sidecar, "diagnosis"))
        or UNKNOWN
    )
    e.site = str(_first(subj.get("site"), _dig(sidecar, "site", "Data-Source")) or UNKNOWN)
    e.vendor = str(
        _first(cat.study_vendor.get(uid), _dig(sidecar, "vendor", "manufacturer", "Manufacturer"))
        or UNKNOWN
    )
    suv = sidecar.get("suv")
    e.suv = dict(suv) if isinstance(suv, Mapping) else {}
    if images is None or images.suv is None:
        return e
    if images.seg is not None:
        e.lesions = lesion_summary(images.suv, images.seg)
    cache: dict[tuple[str, str], viz.Projection] = {}
    thumb = viz.study_figure(
        images.suv,
        images.seg,
        vmax=vmax,
        pixel_mm=_pixel_mm_for_height(images.suv, thumb_height),
        style="fill",
        titles=False,
        legend=False,
        cache=cache,
        trim=True,
    )
    e.thumb_png = viz.png_bytes(thumb)
    fig = viz.study_figure(
        images.suv,
        images.seg,
        ct=images.ct,
        vmax=vmax,
        pixel_mm=max(2.0, _pixel_mm_for_height(images.suv, figure_height)),
        cache=cache,
    )
    e.figure_png = viz.png_bytes(fig)
    pred_path = find_prediction(predictions, subject, study) if predictions else None
    if pred_path is not None:
        try:
            pred = Volume.from_nifti(pred_path)
            truth = (
                images.seg
                if images.seg is not None
                else pred.with_array(np.zeros(pred.shape, np.uint8))
            )
            cmp_fig = viz.study_figure(
                images.suv,
                truth,
                pred=pred,
                vmax=vmax,
                views=("coronal",),
                pixel_mm=max(2.0, _pixel_mm_for_height(images.suv, figure_height)),
                cache=cache,
            )
            e.prediction_png = viz.png_bytes(cmp_fig)
            e.prediction_note = pred_path.name
        except (PetcorpusError, ValueError, OSError) as exc:
            e.prediction_note = f"prediction {pred_path.name} not shown: {exc}"
    return e


def find_prediction(predictions: str | Path, subject: str, study: str) -> Path | None:
    """The predicted mask of a study in a folder laid out as ``petcorpus evaluate`` reads it.

    Tried in order: ``<pred>/<subject>/<study>/PRED.nii.gz``, ``.../SEG.nii.gz``, then flat
    files ``<subject>_<study>.nii.gz``, ``<study>.nii.gz``, ``<subject>.nii.gz``.
    """
    root = Path(predictions)
    for cand in (
        root / subject / study / "PRED.nii.gz",
        root / subject / study / "SEG.nii.gz",
        root / f"{subject}_{study}.nii.gz",
        root / f"{study}.nii.gz",
        root / f"{subject}.nii.gz",
    ):
        if cand.is_file():
            return cand
    return None


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------
def read_metrics(path: str | Path) -> Any:
    """Read a per-case metrics CSV (``case``, ``dice``, ``fp_volume_ml``, ``fn_volume_ml``...).

    Column names are matched case-insensitively; missing metric columns are filled with nan.

    Raises
    ------
    PetcorpusError
        The file is missing, unreadable, or has no ``case`` column.
    """
    import pandas as pd

    p = Path(path)
    try:
        df = pd.read_csv(p)
    except (OSError, ValueError) as exc:
        raise PetcorpusError(f"cannot read metrics CSV: {exc}", path=p) from exc
    df.columns = [str(c).strip().lower() for c in df.columns]
    if "case" not in df.columns:
        raise PetcorpusError("metrics CSV has no 'case' column", path=p)
    df["case"] = df["case"].astype(str)
    for col in ("dice", "fp_volume_ml", "fn_volume_ml"):
        if col not in df.columns:
            df[col] = np.nan
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def _match_case(case: str, entries: Sequence[StudyEntry]) -> StudyEntry | None:
    c = case.strip().strip("/").replace("\\", "/")
    for e in entries:
        if c in (e.key, e.study, e.subject, f"{e.subject}_{e.study}", e.study_uid):
            return e
    return None


_MTV_COLUMNS = ("gt_volume_ml", "mtv_ml", "gt_mtv_ml", "mtv", "gt_ml")


def _metric_plots(df: Any, mtv: np.ndarray) -> list[tuple[str, bytes]]:
    FigureCanvasAgg = viz.require("matplotlib.backends.backend_agg", "matplotlib").FigureCanvasAgg
    Figure = viz.require("matplotlib.figure", "matplotlib").Figure

    plots = []
    dice = df["dice"].to_numpy(dtype=float)
    fig = Figure(figsize=(4.2, 3.0), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ok = np.isfinite(mtv) & np.isfinite(dice) & (mtv > 0)
    ax.scatter(mtv[ok], dice[ok], s=14, c="#4477aa")
    if ok.any():
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("ground-truth MTV (ml)")
    ax.set_ylabel("Dice")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Dice vs MTV ({int(ok.sum())} cases with lesions)", fontsize=9)
    fig.tight_layout()
    plots.append(("Dice vs MTV", _fig_png(fig)))

    fig = Figure(figsize=(4.2, 3.0), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(df))
    fp = df["fp_volume_ml"].to_numpy(dtype=float)
    fn = df["fn_volume_ml"].to_numpy(dtype=float)
    ax.bar(x - 0.2, np.nan_to_num(fp), width=0.4, color="#ee6633", label="FP volume")
    ax.bar(x + 0.2, np.nan_to_num(fn), width=0.4, color="#0077bb", label="FN volume")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("case (row of the per-case table, from 0)")
    ax.set_ylabel("ml")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("false-positive and false-negative volumes", fontsize=9)
    fig.tight_layout()
    plots.append(("FP/FN volumes", _fig_png(fig)))
    return plots


def _fig_png(fig: Any) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return viz.png_bytes(img.quantize(colors=64, method=Image.Quantize.MEDIANCUT))


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em auto;max-width:1250px;color:#222}
h1{font-size:1.5em;margin:.2em 0}h2{border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ddd;padding:2px 6px;
vertical-align:top;text-align:left}th{background:#f3f3f3}td.n{text-align:right}
.counts{display:flex;gap:1.5em;flex-wrap:wrap}.bad{color:#b00}.muted{color:#777;font-size:.9em}
section.study{border-top:2px solid #ddd;margin-top:1em}section.study img{max-width:100%;
height:auto}
details{font-size:.9em}code{font-size:.9em}#broken{display:none;background:#fdd;padding:.5em}
"""

# Flags images that fail to decode (a broken report) in the page itself and on the console.
_JS = """
window.addEventListener('error',function(e){var t=e.target;if(t&&t.tagName==='IMG'){
var b=document.getElementById('broken');if(b){b.style.display='block';}
document.documentElement.setAttribute('data-broken-images',
(+(document.documentElement.getAttribute('data-broken-images')||0))+1);
console.error('broken image: '+(t.alt||''));}},true);
"""


def _esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _img(png: bytes | None, alt: str, *, assets: Callable[[bytes, str], str] | None) -> str:
    if png is None:
        return '<span class="muted">no image</span>'
    src = assets(png, alt) if assets else "data:image/png;base64," + base64.b64encode(png).decode()
    return f'<img src="{src}" alt="{_esc(alt)}">'


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}g}"
    return _esc(v)


def _counts_table(title: str, counter: Counter[str]) -> str:
    rows = "".join(
        f"<tr><td>{_esc(k)}</td><td class=n>{n}</td></tr>" for k, n in counter.most_common()
    )
    return f"<div><table><tr><th>{_esc(title)}</th><th>studies</th></tr>{rows}</table></div>"


def _suv_cell(suv: Mapping[str, Any]) -> str:
    if not suv:
        return '<span class="muted">no sidecar</span>'
    factor = suv.get("factor")
    head = (
        f"{_fmt(factor)} <span class=muted>{_esc(suv.get('kind', ''))}"
        f" {_esc(suv.get('time_reference', ''))}</span>"
    )
    inputs = suv.get("inputs")
    parts = []
    if isinstance(inputs, Mapping):
        for k, raw in inputs.items():
            v = _unwrap(raw)
            if isinstance(v, list | tuple) and all(isinstance(x, str | int | float) for x in v):
                v = ", ".join(str(x) for x in v)
            if not (isinstance(v, str | int | float | bool) or v is None):
                continue
            src = raw.get("source") if isinstance(raw, Mapping) else None
            title = f' title="{_esc(src)}"' if src else ""
            parts.append(f"<span{title}>{_esc(k)}={_fmt(v)}</span>")
    errors = suv.get("errors")
    if isinstance(errors, Mapping) and errors:
        parts += [f'<span class="bad">{_esc(k)}: {_esc(v)}</span>' for k, v in errors.items()]
    if not parts:
        return head
    return f"{head}<details><summary>inputs</summary>{'<br>'.join(parts)}</details>"


def _lesion_cells(les: LesionSummary | None) -> str:
    if les is None:
        return '<td colspan=4 class="muted">no SEG</td>'
    return (
        f"<td class=n>{les.count}</td><td class=n>{les.mtv_ml:.1f}</td>"
        f"<td class=n>{les.tlg:.1f}</td>"
        f"<td class=n>{'–' if math.isnan(les.suv_max) else f'{les.suv_max:.1f}'}</td>"
    )


def _render_html(
    out_dir: Path,
    entries: list[StudyEntry],
    cat: CatalogInfo,
    failures: list[dict[str, Any]],
    metrics: Any,
    metric_plots: list[tuple[str, bytes]],
    build_s: float,
    assets: Callable[[bytes, str], str] | None,
) -> str:
    ok = [e for e in entries if e.error is None]
    h: list[str] = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>petcorpus report: {_esc(out_dir.name)}</title>",
        f"<style>{_CSS}</style><script>{_JS}</script></head><body>",
        '<div id="broken">Some images in this report could not be decoded.</div>',
        f"<h1>petcorpus report: {_esc(out_dir.name)}</h1>",
        f"<p class=muted>{len(entries)} study folders, {len(ok)} readable; "
        f"{len(failures)} failures. Source: "
        + ("catalog.sqlite + study folders" if cat.present else "study folders and sidecars")
        + f". Built {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC in {build_s:.1f} s.</p>",
    ]
    # summary
    h.append("<h2 id=summary>Summary</h2><div class=counts>")
    for title, attr in (
        ("diagnosis", "diagnosis"),
        ("sex", "sex"),
        ("site", "site"),
        ("vendor", "vendor"),
    ):
        h.append(_counts_table(title, Counter(getattr(e, attr) for e in entries)))
    if cat.study_status:
        h.append(_counts_table("catalog status", Counter(cat.study_status.values())))
    les = [e.lesions for e in ok if e.lesions is not None]
    if les:
        mtv = np.array([x.mtv_ml for x in les])
        h.append(
            "<div><table><tr><th>lesions</th><th></th></tr>"
            f"<tr><td>studies with lesions</td><td class=n>{sum(x.count > 0 for x in les)}"
            f"</td></tr><tr><td>lesions</td><td class=n>{sum(x.count for x in les)}</td></tr>"
            f"<tr><td>median MTV (ml)</td><td class=n>{np.median(mtv):.1f}</td></tr>"
            "</table></div>"
        )
    h.append("</div>")
    if cat.notes:
        h.append("<p class=muted>" + "<br>".join(_esc(n) for n in cat.notes) + "</p>")
    # failures
    h.append(f"<h2 id=failures>Failures ({len(failures)})</h2>")
    if failures:
        reasons = Counter(str(f.get("reason") or f.get("error_class") or "?") for f in failures)
        h.append(_counts_table("reason", reasons))
        h.append(
            "<table><tr><th>study</th><th>stage</th><th>error</th><th>reason</th>"
            "<th>message</th></tr>"
        )
        for f in failures:
            h.append(
                f"<tr><td>{_esc(f.get('study'))}</td><td>{_esc(f.get('stage'))}</td>"
                f"<td>{_esc(f.get('error_class'))}</td><td>{_esc(f.get('reason'))}</td>"
                f"<td class=bad>{_esc(f.get('message'))}</td></tr>"
            )
        h.append("</table>")
    else:
        h.append("<p>None.</p>")
    # metrics
    if metrics is not None:
        h.append(_metrics_html(metrics, metric_plots, entries, assets))
    # study table
    src = les[0].source if les else LesionSummary(0, 0, 0, 0).source
    h.append(
        f"<h2 id=studies>Studies ({len(entries)})</h2><p class=muted>Coronal and sagittal PET "
        f"MIPs (patient's right on the image's left, head up), lesions in colour. Lesions "
        f"counted by {_esc(src)}; MTV in ml, TLG in SUV·ml.</p>"
        "<table><tr><th>study</th><th>MIP</th><th>diagnosis</th><th>sex / age</th>"
        "<th>site / vendor</th><th>SUV factor</th><th>lesions</th><th>MTV</th><th>TLG</th>"
        "<th>SUVmax</th></tr>"
    )
    for e in entries:
        h.append(
            f"<tr><td><a href='#{e.anchor}'>{_esc(e.subject)}</a><br>"
            f"<span class=muted>{_esc(e.study)}</span></td>"
            f"<td>{_img(e.thumb_png, f'thumbnail {e.key}', assets=assets) if e.error is None else '<span class=bad>' + _esc(e.error_class) + '</span>'}</td>"  # noqa: E501
            f"<td>{_esc(e.diagnosis)}</td><td>{_esc(e.sex)} / {_esc(e.age or '?')}</td>"
            f"<td>{_esc(e.site)}<br>{_esc(e.vendor)}</td><td>{_suv_cell(e.suv)}</td>"
            + _lesion_cells(e.lesions)
            + "</tr>"
        )
    h.append("</table>")
    # per-study sections
    for e in entries:
        h.append(f"<section class=study id='{e.anchor}'><h3>{_esc(e.key)}</h3>")
        if e.error:
            h.append(f"<p class=bad>{_esc(e.error_class)}: {_esc(e.error)}</p>")
        h.append(
            f"<p class=muted>files: {_esc(', '.join(e.files) or 'none')}; study UID "
            f"{_esc(e.study_uid or '?')}</p>"
        )
        if e.figure_png is not None:
            h.append(_img(e.figure_png, f"MIPs {e.key}", assets=assets))
        if e.prediction_png is not None:
            h.append(
                "<p>Ground truth vs prediction (coronal): green matched, blue missed (FN), "
                "orange false positive (FP), 18-connected components.</p>"
            )
            h.append(_img(e.prediction_png, f"prediction {e.key}", assets=assets))
        elif e.prediction_note:
            h.append(f"<p class=bad>{_esc(e.prediction_note)}</p>")
        h.append("<p><a href='#studies'>back to the table</a></p></section>")
    h.append("</body></html>")
    return "\n".join(h)


def _metrics_html(
    df: Any,
    plots: list[tuple[str, bytes]],
    entries: Sequence[StudyEntry],
    assets: Callable[[bytes, str], str] | None,
) -> str:
    def nanstat(col: str, fn: Callable[[np.ndarray], float]) -> str:
        v = df[col].to_numpy(dtype=float)
        return "nan" if not np.isfinite(v).any() else f"{fn(v[np.isfinite(v)]):.3f}"

    h = [
        f"<h2 id=evaluation>Evaluation ({len(df)} cases)</h2>",
        "<table><tr><th></th><th>mean (nan-mean)</th><th>median</th></tr>",
    ]
    for col in ("dice", "fp_volume_ml", "fn_volume_ml"):
        h.append(
            f"<tr><td>{col}</td><td class=n>{nanstat(col, np.mean)}</td>"
            f"<td class=n>{nanstat(col, np.median)}</td></tr>"
        )
    h.append("</table>")
    h += [_img(png, title, assets=assets) for title, png in plots]
    cols = [c for c in df.columns if c != "case"]
    h.append("<details><summary>per case</summary><table><tr><th>case</th>")
    h += [f"<th>{_esc(c)}</th>" for c in cols]
    h.append("</tr>")
    for _, row in df.iterrows():
        e = _match_case(str(row["case"]), entries)
        name = _esc(row["case"])
        link = f"<a href='#{e.anchor}'>{name}</a>" if e else name
        h.append(f"<tr><td>{link}</td>" + "".join(f"<td>{_fmt(row[c])}</td>" for c in cols))
        h.append("</tr>")
    h.append("</table></details>")
    return "".join(h)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------
def write_report(
    out_dir: str | Path,
    metrics: str | Path | None = None,
    output: str | Path | None = None,
    *,
    embed: bool = True,
    vmax: float = 10.0,
    thumb_height: int = 120,
    figure_height: int = 420,
    with_ct: bool = False,
    predictions: str | Path | None = None,
    workers: int = 1,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
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
        Height in pixels of the table thumbnails and of the per-study MIPs.
    with_ct : bool
        Add a CT MIP (CTres, else CT) to each study's figure.
    predictions : str or Path, optional
        Folder of predicted masks (see :func:`find_prediction`): each study's section then
        shows truth vs prediction with matched, FN and FP components coloured.
    workers : int
        Processes that read and draw studies in parallel (1: in this process). Reading a
        full-size study's SUV takes ~1.5 s, so large corpora gain from 2 or more.
    progress : callable, optional
        Wraps the list of per-study work items (e.g. ``rich.progress.track``).

    Returns
    -------
    Path
        The HTML file written.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    studies = find_studies(out)
    cat = read_catalog(out)
    html_path = Path(output) if output is not None else out / "report.html"
    df = read_metrics(metrics) if metrics is not None else None

    build = functools.partial(
        _build_entry,
        cat=cat,
        vmax=vmax,
        thumb_height=thumb_height,
        figure_height=figure_height,
        with_ct=with_ct,
        predictions=None if predictions is None else Path(predictions),
    )
    show: Callable[[Iterable[Any]], Iterable[Any]] = progress or (lambda it: it)
    if workers > 1 and len(studies) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(workers, len(studies))) as pool:
            futures = [pool.submit(build, d) for d in studies]
            entries = [f.result() for f in show(futures)]
    else:
        entries = [build(d) for d in show(studies)]
    uid_key = {e.study_uid: e.key for e in entries if e.study_uid}
    failures: list[dict[str, Any]] = []
    for f in cat.failures:
        uid = f.get("study_uid")
        label = uid_key.get(uid) or (
            f"{cat.study_subject[uid]} (study {uid})" if uid in cat.study_subject else uid
        )
        failures.append({**f, "study": label or "(corpus)"})
    for e in entries:
        if e.error is not None:
            failures.append(
                {
                    "study": e.key,
                    "stage": "report",
                    "error_class": e.error_class,
                    "reason": "UNREADABLE",
                    "message": e.error,
                }
            )

    plots: list[tuple[str, bytes]] = []
    if df is not None:
        mtv = np.full(len(df), np.nan)
        col = next((c for c in _MTV_COLUMNS if c in df.columns), None)
        if col is not None:
            mtv = df[col].to_numpy(dtype=float)
        else:
            for i, case in enumerate(df["case"]):
                e = _match_case(str(case), entries)
                if e is not None and e.lesions is not None:
                    mtv[i] = e.lesions.mtv_ml
        plots = _metric_plots(df, mtv)

    assets = None
    if not embed:
        folder = html_path.with_name(html_path.stem + "_files")
        folder.mkdir(parents=True, exist_ok=True)
        counter = iter(range(1_000_000))

        def assets(png: bytes, alt: str) -> str:
            name = f"img{next(counter):05d}.png"
            (folder / name).write_bytes(png)
            return f"{folder.name}/{name}"

    text = _render_html(out, entries, cat, failures, df, plots, time.perf_counter() - t0, assets)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = html_path.with_name(html_path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(html_path)
    log.info("report: %d studies, %d bytes, %s", len(entries), len(text), html_path)
    return html_path
