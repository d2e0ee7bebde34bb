"""Synthetic whole-body FDG-PET/CT studies written as real DICOM, with their truth.

>>> from petcorpus.phantom import make_study
>>> study = make_study(seed=1, size="small", vendor="ge", diagnosis="LYMPHOMA")
>>> study.truth.pet_bqml.shape
(100, 100, 80)
"""

from petcorpus.phantom.anatomy import Lesion, Tissue
from petcorpus.phantom.corpus import write_clinical_csv, write_corpus
from petcorpus.phantom.enhance import write_enhance_corpus
from petcorpus.phantom.study import (
    DIAGNOSES,
    PhantomGeometry,
    PhantomStudy,
    PhantomTruth,
    make_study,
    write_study,
)

__all__ = [
    "DIAGNOSES",
    "Lesion",
    "PhantomGeometry",
    "PhantomStudy",
    "PhantomTruth",
    "Tissue",
    "make_study",
    "write_clinical_csv",
    "write_corpus",
    "write_enhance_corpus",
    "write_study",
]
