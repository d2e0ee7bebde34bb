"""What the scan reads of each DICOM file and records of each series.

:data:`SCAN_TAGS` are the header elements the scan reads (pixel data never):
:func:`read_scan_header` reads them; :func:`series_params` turns a series' first and
earliest headers into the acquisition parameters the catalog stores (and the tables export).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.tag import Tag

from petcorpus.dicom.io import get_value, read_header
from petcorpus.dicom.values import (
    GE_SCAN_DATETIME,
    PHILIPS_BQML_SCALE,
    PHILIPS_SUV_SCALE,
    recon_iterations_subsets,
    tracer_info,
)

__all__ = [
    "SCAN_TAGS",
    "as_float",
    "as_text",
    "read_scan_header",
    "series_params",
    "series_summary",
]

_KEYWORDS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "PatientID",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "PatientSize",
    "StudyDate",
    "StudyTime",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "AcquisitionDateTime",
    "SeriesDescription",
    "SeriesNumber",
    "InstanceNumber",
    "Manufacturer",
    "ManufacturerModelName",
    "FrameOfReferenceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "SliceThickness",
    "KVP",
    "XRayTubeCurrent",
    "Exposure",
    "ConvolutionKernel",
    "ContrastBolusAgent",
    "Units",
    "DecayCorrection",
    "CorrectedImage",
    "ReconstructionMethod",
    "FilterType",
    "RadiopharmaceuticalInformationSequence",
    "ReferencedSeriesSequence",
    "NumberOfFrames",
    "ImageType",
    # for the BIDS-PET sidecar (petcorpus.bids)
    "ActualFrameDuration",
    "AttenuationCorrectionMethod",
    "SeriesType",
]
# Private creators and elements used for SUV (GE scan start; Philips scale factors), read
# where their block sits in the first slot (0x10), as every vendor file seen so far has it.
_PRIVATE = sorted(
    {t for p in (GE_SCAN_DATETIME, PHILIPS_BQML_SCALE, PHILIPS_SUV_SCALE) for t in p.tags()}
)
SCAN_TAGS: list[int] = [*(Tag(k) for k in _KEYWORDS), *(Tag(g, e) for g, e in _PRIVATE)]
#: the header elements the scan uses of one file (pixel data not read); a
#: :class:`~petcorpus.errors.CorruptFileError` names a damaged file
read_scan_header = functools.partial(read_header, specific_tags=SCAN_TAGS)


def as_float(v: Any) -> float | None:
    try:
        return None if v is None or v == "" else float(v)
    except (TypeError, ValueError):
        return None


def as_text(v: Any) -> str | None:
    if v is None or v == "":
        return None
    return str(v).strip() or None


def series_params(modality: str, first: Dataset, earliest: Dataset) -> dict[str, Any]:
    """What the catalog records of a series (its ``params``), from its first header and the
    header of its earliest acquisition; PT timing by :mod:`petcorpus.dicom.suv`'s rule."""

    def value(kw: str) -> Any:
        v = get_value(first, kw)
        if v is None or v == "":
            return None
        if kw in ("PixelSpacing", "CorrectedImage", "ImageType"):
            return [
                str(x) if kw != "PixelSpacing" else float(x)
                for x in ([v] if isinstance(v, str) else v)
            ]
        if kw in ("Rows", "Columns"):
            return int(v)
        if kw in (
            "KVP",
            "XRayTubeCurrent",
            "Exposure",
            "SliceThickness",
            "PatientWeight",
            "PatientSize",
        ):
            return as_float(v)
        return as_text(v) if not isinstance(v, (list, tuple)) else "\\".join(map(str, v))

    def get(kw: str) -> Any:
        try:
            return value(kw)
        except (TypeError, ValueError):  # a damaged value: left out of the summary
            return None

    p: dict[str, Any] = {}
    common = ["Rows", "Columns", "PixelSpacing", "SliceThickness", "ConvolutionKernel"]
    if modality == "CT":
        for kw in ["KVP", "XRayTubeCurrent", "Exposure", *common, "ContrastBolusAgent"]:
            p[kw] = get(kw)
    elif modality == "PT":
        for kw in [
            "Units",
            "DecayCorrection",
            "CorrectedImage",
            "ReconstructionMethod",
            "FilterType",
            *common,
            "PatientWeight",
            "PatientSize",
            "PatientAge",
            "PatientSex",
        ]:
            p[kw] = get(kw)
        p["Iterations"], p["Subsets"] = recon_iterations_subsets(p.get("ReconstructionMethod"))
        seq = get_value(first, "RadiopharmaceuticalInformationSequence")
        rp = seq[0] if seq else None
        p["RadionuclideTotalDose"] = as_float(get_value(rp, "RadionuclideTotalDose"))
        p["Radiopharmaceutical"] = as_text(get_value(rp, "Radiopharmaceutical"))
        info = tracer_info(rp)  # normalised: "FDG"/"PSMA", "F-18"/"Ga-68" (None: unknown)
        p["Tracer"], p["Radionuclide"] = info.tracer, info.radionuclide
        # What a BIDS-PET sidecar needs besides the SUV inputs (petcorpus.bids).
        p["ActualFrameDuration"] = as_float(get_value(first, "ActualFrameDuration"))
        p["AttenuationCorrectionMethod"] = get("AttenuationCorrectionMethod")
        p["SeriesType"] = get("SeriesType")
        from petcorpus.dicom.suv import SuvInputs, _scan_datetime

        inj = scan_dt = None
        try:
            inp = SuvInputs.from_datasets([first, earliest])
            inj = inp.injection_datetime.value if inp.injection_datetime else None
            scan_dt = _scan_datetime(inp).value
        except Exception:  # summary only: computing the SUV says what is wrong, and where
            pass
        p["InjectionDateTime"] = inj.isoformat() if inj else None
        p["ScanDateTime"] = scan_dt.isoformat() if scan_dt else None
        p["UptakeTimeS"] = (scan_dt - inj).total_seconds() if inj and scan_dt else None
    elif modality == "SEG":
        ref = get_value(first, "ReferencedSeriesSequence")
        p["ReferencedSeriesUID"] = as_text(get_value(ref[0], "SeriesInstanceUID")) if ref else None
    else:
        for kw in common:
            p[kw] = get(kw)
    return p


def series_summary(first_path: Path, earliest_path: Path) -> dict[str, Any]:
    """A series' summary (:data:`petcorpus.dicom.scan_cache.SUMMARY_FIELDS`) from its first
    file as walked and its earliest acquisition's headers."""
    first = read_scan_header(first_path)
    earliest = first if earliest_path == first_path else read_scan_header(earliest_path)
    modality = as_text(get_value(first, "Modality")) or "OT"
    return {
        "modality": modality,
        "manufacturer": as_text(get_value(first, "Manufacturer")),
        "model": as_text(get_value(first, "ManufacturerModelName")),
        "frame_of_reference_uid": as_text(get_value(first, "FrameOfReferenceUID")),
        "description": as_text(get_value(first, "SeriesDescription")),
        "series_number": _int(get_value(first, "SeriesNumber")),
        "params": series_params(modality, first, earliest),
        "patient_id": as_text(get_value(first, "PatientID")),
        "study_date": as_text(get_value(first, "StudyDate")),
    }


def _int(v: Any) -> int | None:
    f = as_float(v)
    return int(f) if f is not None and math.isfinite(f) else None
