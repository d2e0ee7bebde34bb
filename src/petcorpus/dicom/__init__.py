"""Reading DICOM: index a tree (:func:`scan`), load a series (:func:`load_series`), SUV."""

from petcorpus.dicom.io import read_dataset
from petcorpus.dicom.scan import ScanResult, Selection, SeriesInfo, StudyInfo, scan
from petcorpus.dicom.series import LoadedSeries, load_series
from petcorpus.dicom.suv import SuvInputs, SuvResult, compute_suv, suv_factor

__all__ = [
    "LoadedSeries",
    "ScanResult",
    "Selection",
    "SeriesInfo",
    "StudyInfo",
    "SuvInputs",
    "SuvResult",
    "compute_suv",
    "load_series",
    "read_dataset",
    "scan",
    "suv_factor",
]
