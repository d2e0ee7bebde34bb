"""Many phantom studies as a TCIA-like tree plus the clinical metadata CSV."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from petcorpus.phantom.study import (
    DIAGNOSES,
    PhantomStudy,
    Tracer,
    Vendor,
    make_study,
    write_study,
)

__all__ = ["CLINICAL_CSV_NAME", "MIXED_TRACERS", "write_clinical_csv", "write_corpus"]

CLINICAL_CSV_NAME = "Clinical Metadata FDG PET_CT Lesions.csv"
_VENDORS: tuple[Vendor, ...] = ("siemens", "ge", "philips")
#: ``tracer="mixed"`` cycles these (FDG every other study, PSMA Ga-68 and F-18 in turn)
MIXED_TRACERS: tuple[Tracer, ...] = ("FDG", "PSMA-Ga68", "FDG", "PSMA-F18")


def write_corpus(
    out: str | Path,
    subjects: int = 3,
    seed: int = 0,
    size: Literal["small", "full"] = "small",
    vendor: Literal["siemens", "ge", "philips", "mixed"] = "siemens",
    tracer: Literal["FDG", "PSMA-Ga68", "PSMA-F18", "mixed"] = "FDG",
) -> list[PhantomStudy]:
    """Write ``subjects`` studies under ``out`` and the TCIA-style clinical CSV.

    Diagnoses cycle through LYMPHOMA, MELANOMA, LUNG_CANCER, NEGATIVE so every corpus of
    four or more holds each kind; ``vendor="mixed"`` cycles Siemens, GE, Philips;
    ``tracer="mixed"`` cycles FDG, PSMA-Ga68, FDG, PSMA-F18 (:data:`MIXED_TRACERS`).
    """
    if tracer != "mixed" and tracer not in MIXED_TRACERS:
        raise ValueError(f"tracer must be FDG, PSMA-Ga68, PSMA-F18 or mixed, got {tracer!r}")
    if subjects < 1:
        raise ValueError(f"subjects must be >= 1, got {subjects}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    studies = []
    for i in range(subjects):
        v = _VENDORS[i % 3] if vendor == "mixed" else vendor
        study = make_study(
            seed=seed * 10_000 + i,
            size=size,
            vendor=v,
            diagnosis=DIAGNOSES[i % len(DIAGNOSES)],
            index=i + 1,
            tracer=MIXED_TRACERS[i % len(MIXED_TRACERS)] if tracer == "mixed" else tracer,
        )
        write_study(study, out)
        studies.append(study)
    write_clinical_csv(studies, out / CLINICAL_CSV_NAME)
    return studies


def write_clinical_csv(studies: Sequence[PhantomStudy], path: str | Path) -> Path:
    """One row per series, TCIA manifest columns plus diagnosis, age and sex."""
    path = Path(path)
    columns = [
        "Subject ID",
        "Study UID",
        "Study Description",
        "Study Date",
        "Series ID",
        "Series Description",
        "Modality",
        "Manufacturer",
        "File Location",
        "diagnosis",
        "age",
        "sex",
    ]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for st in studies:
            for modality, datasets in st.series.items():
                ds = datasets[0]
                date = f"{ds.StudyDate[4:6]}-{ds.StudyDate[6:8]}-{ds.StudyDate[:4]}"
                m, d, y = date.split("-")
                writer.writerow(
                    [
                        st.subject_id,
                        st.study_uid,
                        ds.StudyDescription,
                        f"{int(m)}/{int(d)}/{y}",
                        ds.SeriesInstanceUID,
                        getattr(ds, "SeriesDescription", ""),
                        modality,
                        getattr(ds, "Manufacturer", ""),
                        f"./FDG-PET-CT-Lesions/{st.subject_id}/{st.study_folder}",
                        st.truth.diagnosis,
                        f"{st.truth.age:03d}Y",
                        st.truth.sex,
                    ]
                )
    return path
