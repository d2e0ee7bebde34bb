"""Acquisition outliers against the corpus: robust z-scores, so a site's corpus teaches the
check what is normal.

For each quantity (uptake time, injected dose per kg, slice thickness, field of view) the
robust z-score of a study is ``0.6745 (x − median) / MAD`` over the corpus (Iglewicz and
Hoaglin's modified z; :data:`Z_LIMIT` = 3.5 is their outlier limit). When more than half
of the corpus shares one value (MAD 0, e.g. one slice thickness everywhere) a value that
differs from the median by more than :data:`REL_TOL` of it is an outlier. With fewer than
:data:`MIN_STUDIES` values a quantity is not scored (noted in the report). A PET whose
``CorrectedImage`` lacks ATTN or DECY, or whose ``DecayCorrection`` is NONE, is flagged
whatever the corpus does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from petcorpus.qc.flags import QcFlag, QcReason

__all__ = ["MIN_STUDIES", "QUANTITIES", "Z_LIMIT", "correction_flags", "outlier_flags",
           "robust_z"]  # fmt: skip

Z_LIMIT = 3.5
REL_TOL = 0.05
MIN_STUDIES = 5
#: Measure name → (label, unit, scored on a log scale) of the quantities scored against
#: the corpus. Dose per kg is a ratio (a fixed-dose protocol spreads it as 1 / weight), so
#: it is scored as a logarithm: twice and half the median are equally far.
QUANTITIES: Mapping[str, tuple[str, str, bool]] = {
    "uptake_min": ("uptake time", "min", False),
    "dose_mbq_per_kg": ("injected dose per kg", "MBq/kg", True),
    "slice_mm": ("slice thickness", "mm", False),
    "fov_mm": ("field of view (head-foot)", "mm", False),
}


def robust_z(values: Sequence[float]) -> np.ndarray:
    """Modified z-scores of ``values`` (nan stays nan); see the module docstring.

    >>> robust_z([1.0, 1.0, 1.0, 2.0]).tolist()
    [0.0, 0.0, 0.0, inf]
    >>> [round(float(z), 2) for z in robust_z([10.0, 11.0, 12.0, 13.0, 30.0])]
    [-1.35, -0.67, 0.0, 0.67, 12.14]
    """
    x = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(x)
    z = np.full(x.shape, np.nan)
    if not ok.any():
        return z
    med = float(np.median(x[ok]))
    mad = float(np.median(np.abs(x[ok] - med)))
    if mad > 0:
        z[ok] = 0.6745 * (x[ok] - med) / mad
    else:
        d = x[ok] - med
        tol = REL_TOL * abs(med) if med else 0.0
        z[ok] = np.where(np.abs(d) > tol, np.copysign(np.inf, d), 0.0)
    return z


def outlier_flags(
    measures: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, list[QcFlag]], dict[str, dict[str, float]], list[str]]:
    """Score :data:`QUANTITIES` of every study against the corpus.

    Parameters
    ----------
    measures : mapping
        Study key → its measures (missing or non-numeric values are skipped).

    Returns
    -------
    flags : dict
        Study key → its outlier flags.
    zscores : dict
        Study key → ``z_<quantity>`` → robust z.
    notes : list of str
        Quantities not scored, and why.
    """
    keys = list(measures)
    flags: dict[str, list[QcFlag]] = {k: [] for k in keys}
    zs: dict[str, dict[str, float]] = {k: {} for k in keys}
    notes = []
    for name, (label, unit, log) in QUANTITIES.items():
        vals = [_num(measures[k].get(name)) for k in keys]
        scored = [math.log(v) if log and v > 0 else v if not log else math.nan for v in vals]
        good = [v for v in vals if math.isfinite(v)]
        if len(good) < MIN_STUDIES:
            notes.append(
                f"{label}: not scored against the corpus ({len(good)} studies with a value, "
                f"{MIN_STUDIES} needed)"
            )
            continue
        med = float(np.median(good))
        for k, v, z in zip(keys, vals, robust_z(scored), strict=True):
            if not math.isfinite(v):
                continue
            zs[k][f"z_{name}"] = float(z)
            if abs(z) > Z_LIMIT:
                flags[k].append(
                    QcFlag(
                        "acquisition",
                        QcReason.ACQUISITION_OUTLIER,
                        f"{label} {v:.4g} {unit} against the corpus median {med:.4g} {unit} "
                        f"(robust z {z:+.1f})",
                        float(z),
                    )
                )
    return flags, zs, notes


def correction_flags(corrected: Any, decay: Any) -> list[QcFlag]:
    """Flags for a PET without attenuation or decay correction (``CorrectedImage`` values,
    ``DecayCorrection``); unknown values are not flagged."""
    out = []
    codes = _codes(corrected)
    if codes is not None:
        missing = [c for c in ("ATTN", "DECY") if c not in codes]
        if missing:
            what = {"ATTN": "attenuation", "DECY": "decay"}
            out.append(
                QcFlag("acquisition", QcReason.NOT_CORRECTED,
                       "CorrectedImage lacks " + " and ".join(
                           f"{c} ({what[c]} correction)" for c in missing))
            )  # fmt: skip
    if isinstance(decay, str) and decay.strip().upper() == "NONE":
        out.append(
            QcFlag("acquisition", QcReason.NOT_CORRECTED,
                   "DecayCorrection is NONE (the PET is not decay-corrected)")
        )  # fmt: skip
    return out


def _codes(v: Any) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        import json

        try:
            parsed = json.loads(v)
        except ValueError:
            parsed = v.replace("\\", " ").split()
        v = parsed if isinstance(parsed, list) else [parsed]
    return [str(c).strip().upper() for c in v]


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f
