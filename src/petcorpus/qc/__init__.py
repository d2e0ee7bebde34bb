"""Quality control of a corpus: PET/CT misalignment, implausible SUV, label contradictions,
acquisition outliers (``petcorpus qc``; docs/qc.md).

:func:`qc_corpus` checks every case of a corpus and returns a :class:`QcReport`;
:func:`run_qc` also stores it in the catalog, where ``petcorpus catalog status`` and the HTML
report show it. :func:`check_study` runs the per-study checks on volumes in memory.

The modules: :mod:`~petcorpus.qc.align` (PET/CT shift from the body outlines, organ
activity inside CT masks), :mod:`~petcorpus.qc.suv` (liver SUV and its likely cause,
PERCIST references), :mod:`~petcorpus.qc.labels` (diagnosis vs mask, masks outside the
body, one-voxel components, off-grid masks), :mod:`~petcorpus.qc.acquisition` (robust
z-scores against the corpus, missing corrections), :mod:`~petcorpus.qc.pictures` (one
picture per flag), :mod:`~petcorpus.qc.flags` (what a check finds) and
:mod:`~petcorpus.qc.run` (the loop and the catalog).
"""

from petcorpus.qc.align import Shift, estimate_shift, organ_activity_share
from petcorpus.qc.flags import CHECKS, QcFlag, QcReason, QcReport, StudyQc
from petcorpus.qc.run import QcOptions, check_study, qc_corpus, run_qc
from petcorpus.qc.suv import likely_cause, percist_problems

__all__ = [
    "CHECKS",
    "QcFlag",
    "QcOptions",
    "QcReason",
    "QcReport",
    "Shift",
    "StudyQc",
    "check_study",
    "estimate_shift",
    "likely_cause",
    "organ_activity_share",
    "percist_problems",
    "qc_corpus",
    "run_qc",
]
