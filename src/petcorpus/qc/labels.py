"""Label contradictions: the diagnosis against the lesion mask, and masks no lesion can have.

A lesion is an 18-connected component of the mask (cc3d, as the autoPET metrics count
them). Flags: a ``NEGATIVE`` study whose mask is not empty; a positive diagnosis with an
empty (or missing) mask; components more than half outside the body (the body outline of
the CT, filled: a lung lesion is inside the body although its CT voxels are air);
components of one voxel (no lesion is smaller than the scanner's resolution); a mask on
a grid other than the PET's.
"""

from __future__ import annotations

import dataclasses

import cc3d
import numpy as np

from petcorpus.qc.align import CT_BODY_HU, line_bounds
from petcorpus.qc.flags import QcFlag, QcReason
from petcorpus.volume import Volume

__all__ = ["NEGATIVE", "LabelFindings", "check_labels"]

NEGATIVE = "NEGATIVE"
#: A component is outside the body when more than this share of its voxels is.
OUTSIDE_SHARE = 0.5
#: Lines of the CT read at once for the body outline at the lesion voxels.
_LINES_PER_READ = 16_384


@dataclasses.dataclass
class LabelFindings:
    """What :func:`check_labels` measured (and the masks its pictures need)."""

    flags: list[QcFlag]
    components: int = 0
    voxels: int = 0
    outside: np.ndarray | None = None  # bool, PET grid: components outside the body
    single: np.ndarray | None = None  # bool, PET grid: one-voxel components


def check_labels(
    suv: Volume,
    ct: Volume | None,
    seg: Volume | None,
    diagnosis: str | None,
    *,
    which: str = "",
) -> LabelFindings:
    """Check a study's lesion mask against its PET grid, its body and its diagnosis.

    Parameters
    ----------
    suv : Volume
        The PET grid (any PET volume).
    ct : Volume, optional
        CT in HU on the PET grid (CTres), for the body outline.
    seg : Volume, optional
        The lesion mask (None: the study has none).
    diagnosis : str, optional
        ``NEGATIVE`` or a disease (``LYMPHOMA``...); None skips the diagnosis checks.
    which : str
        Names the study in messages (e.g. ``"study 2 of 3 of PETCT_0123456789"``).
    """
    flags: list[QcFlag] = []
    pre = f"{which}: " if which else ""
    diag = (diagnosis or "").strip().upper() or None
    if seg is None:
        if diag not in (None, NEGATIVE):
            flags.append(
                QcFlag("labels", QcReason.POSITIVE_WITHOUT_LESIONS,
                       f"{pre}diagnosis {diag} but the study has no lesion mask", 0.0)
            )  # fmt: skip
        return LabelFindings(flags)
    if not seg.same_grid(suv, atol=1e-3):
        flags.append(
            QcFlag("labels", QcReason.MASK_OFF_GRID,
                   f"{pre}the lesion mask {seg.shape} is not on the PET grid {suv.shape}")
        )  # fmt: skip
        return LabelFindings(flags)
    arr = np.asarray(seg.array)
    # Work in the mask's bounding box (one voxel of margin keeps components apart), found
    # from the maximum along the last axis (a contiguous reduction, ~20x faster than
    # nonzero over the whole mask), then within the columns that hold lesion voxels.
    box: list[slice] = [slice(0, 0)] * 3
    cols = np.asarray(arr.max(axis=2)) > 0
    if cols.any():
        for a in (0, 1):
            idx = np.flatnonzero(cols.any(axis=1 - a))
            box[a] = slice(max(0, int(idx[0]) - 1), min(arr.shape[a], int(idx[-1]) + 2))
        idx = np.flatnonzero((arr[box[0], box[1], :] > 0).any(axis=(0, 1)))
        box[2] = slice(max(0, int(idx[0]) - 1), min(arr.shape[2], int(idx[-1]) + 2))
    m = arr[tuple(box)] > 0
    labels, n = cc3d.connected_components(m, connectivity=18, return_N=True)
    voxels = int(np.count_nonzero(m))
    ml = voxels * suv.voxel_volume_ml
    found = LabelFindings(flags, components=int(n), voxels=voxels)
    if diag == NEGATIVE and n:
        flags.append(
            QcFlag("labels", QcReason.NEGATIVE_WITH_LESIONS,
                   f"{pre}diagnosis NEGATIVE but the lesion mask holds {n} "
                   f"component{'s' if n != 1 else ''} ({ml:.1f} ml)", float(n))
        )  # fmt: skip
    elif diag not in (None, NEGATIVE) and not n:
        flags.append(
            QcFlag("labels", QcReason.POSITIVE_WITHOUT_LESIONS,
                   f"{pre}diagnosis {diag} but the lesion mask is empty", 0.0)
        )  # fmt: skip
    if not n:
        return found
    sizes = np.bincount(labels[m], minlength=n + 1)

    def on_grid(part: np.ndarray) -> np.ndarray:
        whole = np.zeros(arr.shape, dtype=bool)
        whole[tuple(box)] = part
        return whole

    ones = np.flatnonzero(sizes[1:] == 1) + 1
    if ones.size:
        found.single = on_grid(np.isin(labels, ones))
        flags.append(
            QcFlag("labels", QcReason.ONE_VOXEL_COMPONENT,
                   f"{pre}{ones.size} lesion component{'s' if ones.size != 1 else ''} of one "
                   f"voxel ({ones.size} of {n})", float(ones.size))
        )  # fmt: skip
    if ct is not None and ct.same_grid(suv, atol=1e-3):
        where = np.nonzero(m)
        inside = _in_filled_body(
            np.asarray(ct.array), tuple(w + b.start for w, b in zip(where, box, strict=True)), suv
        )
        out_counts = np.bincount(labels[m][~inside], minlength=n + 1)
        bad = np.flatnonzero(out_counts[1:] > OUTSIDE_SHARE * sizes[1:]) + 1
        if bad.size:
            found.outside = on_grid(np.isin(labels, bad))
            share = float(out_counts[bad].sum()) / float(sizes[bad].sum())
            flags.append(
                QcFlag("labels", QcReason.MASK_OUTSIDE_BODY,
                       f"{pre}{bad.size} lesion component{'s' if bad.size != 1 else ''} "
                       f"outside the body ({share:.0%} of their voxels)", float(bad.size))
            )  # fmt: skip
    return found


def _in_filled_body(ct: np.ndarray, points: tuple[np.ndarray, ...], grid: Volume) -> np.ndarray:
    """Whether each voxel ``points`` (index arrays) lies in the CT body outline filled along
    the left-right and anterior-posterior axes (air between body voxels, e.g. lungs, counts
    as body). Only the lines through the points are read, at full resolution."""
    lin = grid.affine[:3, :3]
    norms = np.linalg.norm(lin, axis=0)
    lr = int(np.argmax(np.abs(lin[0, :]) / norms))
    ap = int(np.argmax(np.abs(lin[1, :]) / norms))
    body = ct[points] > CT_BODY_HU
    if lr == ap:  # an oblique grid: the outline as it is
        return np.asarray(body)
    filled = np.ones(body.shape, dtype=bool)
    for axis in (lr, ap):
        rest = [a for a in range(3) if a != axis]
        # One line per distinct (other two indices); its voxels along ``axis``.
        keys = np.stack([points[rest[0]], points[rest[1]]])
        lines, which = np.unique(keys, axis=1, return_inverse=True)
        inside = np.zeros(body.shape, dtype=bool)
        for lo in range(0, lines.shape[1], _LINES_PER_READ):
            part = lines[:, lo : lo + _LINES_PER_READ]
            sel: list[np.ndarray | slice] = [slice(None)] * 3
            sel[rest[0]], sel[rest[1]] = part[0], part[1]
            rows = ct[tuple(sel)] > CT_BODY_HU
            # Index arrays on axes 1 and 2 put the lines last; otherwise first (numpy rule).
            first, last = line_bounds(rows.T if axis == 0 else rows, 1)
            hit = (which >= lo) & (which < lo + part.shape[1])
            u = which[hit] - lo
            pos = points[axis][hit]
            inside[hit] = (pos >= first[u, 0]) & (pos <= last[u, 0])
        filled &= inside
    return np.asarray(body | filled)
