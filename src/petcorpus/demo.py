"""The built-in demo: the whole petcorpus flow on synthetic studies, end to end.

Every step is a library call a user could make themselves:

1. :func:`petcorpus.phantom.write_corpus` — phantom studies as DICOM (mixed vendors) plus
   the TCIA-style clinical CSV;
2. :func:`petcorpus.pipeline.build` — the autoPET NIfTI layout, the catalog and HDF5;
3. a stand-in "model": each study's lesion mask with one lesion dropped, the others grown
   by a voxel and a false positive added at the brain (where FDG is physiologically high);
4. :func:`petcorpus.metrics.evaluate.evaluate_folders` — the official autoPET metrics;
5. :func:`petcorpus.report.write_report` — the HTML quality-control report with MIPs.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

__all__ = ["DemoResult", "fake_prediction", "run_demo"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class DemoResult:
    """What the demo made, for the CLI to print and tests to check."""

    dicom_root: Path
    corpus: Path
    predictions: Path
    metrics_csv: Path
    report: Path
    studies: int
    failed: int
    summary: dict[str, float]


def fake_prediction(seg: np.ndarray, pet_labels_hint: np.ndarray | None = None) -> np.ndarray:
    """A plausible imperfect prediction of ``seg`` (uint8 0/1), deterministic.

    Drops the smallest lesion (a false negative), grows the others by one voxel and adds
    a 3x3x3 false positive near the top of the volume (the brain's high FDG uptake).
    """
    import cc3d
    from scipy import ndimage

    pred: np.ndarray = np.zeros_like(seg, dtype=np.uint8)
    labels, n = cc3d.connected_components(seg.astype(np.uint8), connectivity=18, return_N=True)
    if n:
        sizes = np.bincount(labels.ravel())[1:]
        keep = labels.copy()
        keep[labels == int(np.argmin(sizes)) + 1] = 0
        pred = ndimage.binary_dilation(keep > 0).astype(np.uint8) if n > 1 else (keep > 0)
        pred = pred.astype(np.uint8)
    i, j = seg.shape[0] // 2, seg.shape[1] // 2
    top = seg.shape[2] - max(3, seg.shape[2] // 12)
    pred[i - 1 : i + 2, j - 1 : j + 2, top - 1 : top + 2] = 1
    return pred


def run_demo(out: str | Path, subjects: int = 4, seed: int = 0, workers: int = 2) -> DemoResult:
    """Run the whole flow under ``out`` (``dicom/``, ``corpus/``, ``predictions/``...)."""
    from petcorpus.layouts.autopet import AutopetCorpus, file_name
    from petcorpus.metrics.evaluate import evaluate_folders, write_evaluation
    from petcorpus.nifti import write_nifti
    from petcorpus.phantom import write_corpus
    from petcorpus.phantom.corpus import CLINICAL_CSV_NAME
    from petcorpus.pipeline import build
    from petcorpus.report import write_report

    out = Path(out)
    dicom_root = out / "dicom"
    if not (dicom_root / CLINICAL_CSV_NAME).exists():
        write_corpus(dicom_root, subjects=subjects, seed=seed, vendor="mixed")
    corpus = out / "corpus"
    report = build(
        dicom_root,
        corpus,
        clinical=dicom_root / CLINICAL_CSV_NAME,
        hdf5=corpus / "corpus.h5",
        workers=workers,
        site="phantom",
        licence="CC0 (synthetic)",
    )
    predictions = out / "predictions"
    for case in AutopetCorpus(corpus).cases():
        if not case.has("SEG"):
            continue
        gt = case.volume("SEG")
        target = predictions / case.subject / case.study / file_name("SEG")
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            write_nifti(gt.with_array(fake_prediction(np.asarray(gt.array))), target)
    evaluation = evaluate_folders(corpus, predictions, metrics="autopet", edition="III")
    metrics_csv = out / "metrics.csv"
    write_evaluation(evaluation, metrics_csv)
    html = write_report(corpus, metrics=metrics_csv)
    autopet = evaluation.summary.get("autopet")
    summary = {
        k: float(v)
        for k, v in (autopet.items() if isinstance(autopet, dict) else ())
        if isinstance(v, int | float)
    }
    return DemoResult(
        dicom_root=dicom_root,
        corpus=corpus,
        predictions=predictions,
        metrics_csv=metrics_csv,
        report=html,
        studies=len(report.done) + len(report.skipped),
        failed=len(report.failed),
        summary=summary,
    )
