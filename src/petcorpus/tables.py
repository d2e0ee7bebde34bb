"""Metadata tables: ingest the TCIA clinical CSV, export clinical / CT / PT tables.

Ingest reads the autoPET release's "Clinical Metadata FDG PET_CT Lesions.csv" (one row per
series; column names vary in case and spacing between versions) into the catalog's
``subjects`` and ``studies``. Exports join the catalog into three tables:

- ``clinical``: one row per study (subject, date, diagnosis, age, sex, site, licence, status);
- ``CT-details``: one row per CT series, the columns of ENHANCE.PET's ``CT-details.xlsx``
  (kVp, tube current, exposure, slice thickness, kernel, pixel spacing, matrix,
  manufacturer/model, contrast, Data-Source);
- ``PT-details``: one row per PET series, like ENHANCE.PET's ``PT-details.xlsx`` (Patient,
  Age, Sex, Weight [kg], Height [m], injected activity, uptake time, reconstruction method,
  iterations, subsets, filter, matrix, Data-Source);

written as ``clinical.csv``, ``CT-details.xlsx``, ``PT-details.xlsx`` and Parquet of all three.

Acquisition parameters are read from the catalog's ``params`` table by DICOM keyword (the
names in :data:`CT_KEYWORDS` and :data:`PT_KEYWORDS`; matching ignores case and
underscores, so ``kvp`` or ``slice_thickness`` also work), as the scan
(:mod:`petcorpus.dicom.scan`) records them. The uptake time is the scan's ``UptakeTimeS``,
computed by the rule of :mod:`petcorpus.dicom.values` that the SUV uses; iterations and
subsets are parsed from ReconstructionMethod by the same module.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from petcorpus.errors import PetcorpusError, Reason

if TYPE_CHECKING:
    import pandas as pd

    from petcorpus.catalog import Catalog

__all__ = [
    "CT_KEYWORDS",
    "PT_KEYWORDS",
    "TABLE_NAMES",
    "clinical_table",
    "ct_details",
    "export_tables",
    "ingest_clinical",
    "pt_details",
    "read_clinical_csv",
]

log = logging.getLogger(__name__)

#: DICOM keywords the CT table reads from a series' params.
CT_KEYWORDS = (
    "KVP",
    "XRayTubeCurrent",
    "Exposure",
    "ExposureTime",
    "SliceThickness",
    "ConvolutionKernel",
    "PixelSpacing",
    "Rows",
    "Columns",
    "ContrastBolusAgent",
)
#: DICOM keywords the PT table reads (radiopharmaceutical items flattened into the series).
PT_KEYWORDS = (
    "Units",
    "DecayCorrection",
    "PatientWeight",
    "PatientSize",
    "Radiopharmaceutical",
    "RadionuclideTotalDose",
    "RadiopharmaceuticalStartDateTime",
    "RadiopharmaceuticalStartTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "SeriesDate",
    "SeriesTime",
    "ReconstructionMethod",
    "ConvolutionKernel",
    "SliceThickness",
    "PixelSpacing",
    "Rows",
    "Columns",
)
TABLE_NAMES = ("clinical", "CT-details", "PT-details")

_CSV_COLUMNS = {
    "subjectid": "subject_id",
    "patientid": "subject_id",
    "studyuid": "study_uid",
    "studyinstanceuid": "study_uid",
    "studydate": "study_date",
    "seriesid": "series_uid",
    "seriesuid": "series_uid",
    "seriesinstanceuid": "series_uid",
    "modality": "modality",
    "manufacturer": "manufacturer",
    "diagnosis": "diagnosis",
    "age": "age",
    "patientage": "age",
    "sex": "sex",
    "patientsex": "sex",
    "studydescription": "study_description",
}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


# -- clinical CSV ------------------------------------------------------------------------------
def _parse_date(text: str, path: Path) -> str | None:
    text = str(text).strip()
    if not text or text.lower() == "nan":
        return None
    for fmt in ("%m/%d/%Y", "%Y-%m-%d", "%Y%m%d", "%m-%d-%Y"):
        try:
            return dt.datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    raise PetcorpusError(f"cannot read the study date {text!r} (expected M/D/YYYY)", path=path)


def _parse_age(text: Any, path: Path) -> int | None:
    s = str(text).strip().upper()
    if not s or s == "NAN":
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([YMWD]?)", s)
    if m is None:
        raise PetcorpusError(f"cannot read the age {text!r} (expected e.g. 054Y)", path=path)
    value, unit = float(m.group(1)), m.group(2) or "Y"
    years = value / {"Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.25}[unit]
    return int(years)


def read_clinical_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read the TCIA clinical CSV leniently into one row per study.

    Returns
    -------
    DataFrame
        Columns ``subject_id, study_uid, study_date`` (ISO), ``diagnosis`` (upper case),
        ``age`` (years, nullable Int64), ``sex``.

    Raises
    ------
    PetcorpusError
        No subject or study column, an unreadable date or age, or one study given two
        different diagnoses.
    """
    import pandas as pd

    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise PetcorpusError(f"cannot read the clinical CSV: {exc}", path=path) from exc
    rename = {c: _CSV_COLUMNS[_norm(c)] for c in raw.columns if _norm(c) in _CSV_COLUMNS}
    df = raw.rename(columns=rename)
    missing = [c for c in ("subject_id", "study_uid") if c not in df.columns]
    if missing:
        raise PetcorpusError(
            f"the clinical CSV has no {' or '.join(missing)} column "
            f"(columns: {', '.join(raw.columns)})",
            path=path,
            reason=Reason.MISSING_TAG,
        )
    rows = []
    for study_uid, grp in df.groupby("study_uid", sort=True):

        def first(col: str, grp: pd.DataFrame = grp) -> str:
            if col not in grp.columns:
                return ""
            vals = [v.strip() for v in grp[col] if v.strip()]
            return vals[0] if vals else ""

        diags = {v.strip().upper() for v in grp.get("diagnosis", []) if v.strip()}
        if len(diags) > 1:
            raise PetcorpusError(
                f"study {study_uid} has several diagnoses: {', '.join(sorted(diags))}", path=path
            )
        rows.append(
            {
                "subject_id": first("subject_id"),
                "study_uid": str(study_uid).strip(),
                "study_date": _parse_date(first("study_date"), path),
                "diagnosis": diags.pop() if diags else None,
                "age": _parse_age(first("age"), path),
                "sex": first("sex").upper() or None,
            }
        )
    out = pd.DataFrame(
        rows, columns=["subject_id", "study_uid", "study_date", "diagnosis", "age", "sex"]
    )
    out["age"] = out["age"].astype("Int64")
    return out


def ingest_clinical(
    catalog: Catalog,
    path: str | os.PathLike[str],
    *,
    site: str | None = None,
    licence: str | None = None,
) -> int:
    """Record the CSV's subjects (sex, age, diagnosis) and studies (date, diagnosis).

    ``site``/``licence`` label every subject (for the TCIA autoPET release: ``autoPET``,
    ``CC BY-NC 4.0``). Returns the number of studies read.
    """
    import pandas as pd

    table = read_clinical_csv(path)
    with catalog.transaction():
        for row in table.itertuples(index=False):
            age = None if pd.isna(row.age) else int(row.age)
            catalog.record_subject(
                row.subject_id,
                sex=row.sex,
                age=age,
                diagnosis=row.diagnosis,
                site=site,
                licence=licence,
            )
            catalog.record_study(
                row.study_uid,
                subject_id=row.subject_id,
                study_date=row.study_date,
                diagnosis=row.diagnosis,
            )
    return len(table)


# -- exports -----------------------------------------------------------------------------------
def _series_params(catalog: Catalog, modality: str) -> pd.DataFrame:
    return catalog.query(
        """SELECT se.series_uid, se.study_uid, se.manufacturer, se.model, st.subject_id,
                  su.age, su.sex, coalesce(su.site, '') AS site
           FROM series se JOIN studies st USING (study_uid)
           JOIN subjects su USING (subject_id)
           WHERE se.modality = ? ORDER BY st.subject_id, st.study_date, se.series_uid""",
        (modality,),
    )


def _params_by_series(catalog: Catalog) -> dict[str, dict[str, tuple[Any, Any]]]:
    out: dict[str, dict[str, tuple[Any, Any]]] = {}
    for uid, name, value, num in catalog.query(
        "SELECT series_uid, name, value, value_num FROM params"
    ).itertuples(index=False):
        out.setdefault(uid, {})[_norm(name)] = (value, num)
    return out


class _P:
    """Typed lookups in one series' params (names normalised)."""

    def __init__(self, params: Mapping[str, tuple[Any, Any]]) -> None:
        self.p = params

    def num(self, *names: str) -> float | None:
        for n in names:
            v = self.p.get(_norm(n))
            if v is not None and v[1] is not None and v[1] == v[1]:
                return float(v[1])
        return None

    def text(self, *names: str) -> str | None:
        for n in names:
            v = self.p.get(_norm(n))
            # a NULL comes back from the catalog as None or NaN (a column of NULLs is float)
            if v is not None and v[0] not in (None, "") and v[0] == v[0]:
                return str(v[0])
        return None

    def pair(self, *names: str) -> list[float] | None:
        import json

        t = self.text(*names)
        if t is None:
            return None
        try:
            vals = json.loads(t) if t.startswith("[") else re.split(r"[\\,x ]+", t)
            return [float(v) for v in vals]
        except (ValueError, TypeError):
            return None


def _fmt_pair(values: Sequence[float] | None) -> str | None:
    if not values:
        return None
    return " x ".join(f"{v:g}" for v in values)


def _matrix(p: _P) -> str | None:
    r, c = p.num("Rows"), p.num("Columns")
    return None if r is None or c is None else f"{int(r)} x {int(c)}"


def _uptake_minutes(p: _P) -> float | None:
    """Scan start minus injection, in minutes, by :mod:`petcorpus.dicom.values`' rule.

    The scan records it as ``UptakeTimeS``; params recorded without it (another source)
    are read by the same rule from their DICOM keywords.
    """
    from petcorpus.dicom.values import (
        injection_datetime,
        parse_date_time,
        parse_datetime,
        scan_start,
    )

    explicit = p.num("UptakeTimeS", "UptakeTime")
    if explicit is not None:
        return explicit / 60.0
    series = parse_date_time(p.text("SeriesDate"), p.text("SeriesTime"))
    acquisition = parse_datetime(p.text("AcquisitionDateTime")) or parse_date_time(
        p.text("AcquisitionDate") or p.text("SeriesDate"), p.text("AcquisitionTime")
    )
    which = scan_start(series, acquisition)
    scan = {"series": series, "acquisition": acquisition}.get(which or "")
    inj = injection_datetime(
        p.text("RadiopharmaceuticalStartDateTime"), p.text("RadiopharmaceuticalStartTime"), series
    )
    if scan is None or inj is None:
        return None
    return (scan - inj[0]).total_seconds() / 60.0


def clinical_table(catalog: Catalog) -> pd.DataFrame:
    """One row per study: subject, date, diagnosis, age, sex, site, licence, status, series."""
    return catalog.query(
        """SELECT st.subject_id AS "Patient", st.study_uid AS "Study UID",
                  st.study_date AS "Study Date",
                  coalesce(st.diagnosis, su.diagnosis) AS "Diagnosis",
                  su.age AS "Age", su.sex AS "Sex",
                  su.site AS "Data-Source", su.licence AS "Licence",
                  st.status AS "Status",
                  (SELECT count(*) FROM series se WHERE se.study_uid = st.study_uid)
                    AS "Series"
           FROM studies st JOIN subjects su USING (subject_id)
           ORDER BY st.subject_id, st.study_date, st.study_uid"""
    )


def ct_details(catalog: Catalog) -> pd.DataFrame:
    """One row per CT series, ENHANCE ``CT-details.xlsx``-style columns."""
    params = _params_by_series(catalog)
    rows = []
    for r in _series_params(catalog, "CT").itertuples(index=False):
        p = _P(params.get(r.series_uid, {}))
        rows.append(
            {
                "Patient": r.subject_id,
                "Study UID": r.study_uid,
                "Series UID": r.series_uid,
                "Age": r.age,
                "Sex": r.sex,
                "Manufacturer": r.manufacturer,
                "Model": r.model,
                "kVp": p.num("KVP"),
                "Tube current [mA]": p.num("XRayTubeCurrent", "tube_current"),
                "Exposure [mAs]": p.num("Exposure"),
                "Exposure time [ms]": p.num("ExposureTime"),
                "Slice thickness [mm]": p.num("SliceThickness"),
                "Kernel": p.text("ConvolutionKernel", "kernel"),
                "Pixel spacing [mm]": _fmt_pair(p.pair("PixelSpacing")),
                "Matrix": _matrix(p),
                "Contrast": p.text("ContrastBolusAgent", "contrast") or "",
                "Data-Source": r.site,
            }
        )
    return _frame(rows, _CT_COLUMNS)


def pt_details(catalog: Catalog) -> pd.DataFrame:
    """One row per PET series, ENHANCE ``PT-details.xlsx``-style columns."""
    from petcorpus.dicom.values import recon_iterations_subsets

    params = _params_by_series(catalog)
    rows = []
    for r in _series_params(catalog, "PT").itertuples(index=False):
        p = _P(params.get(r.series_uid, {}))
        method = p.text("ReconstructionMethod")
        iters, subsets = recon_iterations_subsets(method)
        if p.num("Iterations") is not None and p.num("Subsets") is not None:
            iters, subsets = int(p.num("Iterations") or 0), int(p.num("Subsets") or 0)
        dose = p.num("RadionuclideTotalDose")
        rows.append(
            {
                "Patient": r.subject_id,
                "Study UID": r.study_uid,
                "Series UID": r.series_uid,
                "Age": r.age,
                "Sex": r.sex,
                "Weight [kg]": p.num("PatientWeight"),
                "Height [m]": p.num("PatientSize"),
                "Radiopharmaceutical": p.text("Radiopharmaceutical"),
                "Injected activity [MBq]": None if dose is None else dose / 1e6,
                "Uptake time [min]": _uptake_minutes(p),
                "Units": p.text("Units"),
                "Decay correction": p.text("DecayCorrection"),
                "Reconstruction method": method,
                "Iterations": iters,
                "Subsets": subsets,
                "Filter": p.text("ConvolutionKernel"),
                "Matrix": _matrix(p),
                "Pixel spacing [mm]": _fmt_pair(p.pair("PixelSpacing")),
                "Slice thickness [mm]": p.num("SliceThickness"),
                "Manufacturer": r.manufacturer,
                "Model": r.model,
                "Data-Source": r.site,
            }
        )
    df = _frame(rows, _PT_COLUMNS)
    for col in ("Iterations", "Subsets"):
        df[col] = df[col].astype("Int64")
    return df


_CT_COLUMNS = [
    "Patient",
    "Study UID",
    "Series UID",
    "Age",
    "Sex",
    "Manufacturer",
    "Model",
    "kVp",
    "Tube current [mA]",
    "Exposure [mAs]",
    "Exposure time [ms]",
    "Slice thickness [mm]",
    "Kernel",
    "Pixel spacing [mm]",
    "Matrix",
    "Contrast",
    "Data-Source",
]
_PT_COLUMNS = [
    "Patient",
    "Study UID",
    "Series UID",
    "Age",
    "Sex",
    "Weight [kg]",
    "Height [m]",
    "Radiopharmaceutical",
    "Injected activity [MBq]",
    "Uptake time [min]",
    "Units",
    "Decay correction",
    "Reconstruction method",
    "Iterations",
    "Subsets",
    "Filter",
    "Matrix",
    "Pixel spacing [mm]",
    "Slice thickness [mm]",
    "Manufacturer",
    "Model",
    "Data-Source",
]


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    df = pd.DataFrame(rows, columns=columns)
    if "Age" in df:
        df["Age"] = df["Age"].astype("Int64")
    return df


_FORMATS = ("csv", "xlsx", "parquet")


def export_tables(
    catalog: Catalog,
    dest: str | os.PathLike[str],
    formats: Iterable[str] | None = None,
    *,
    on_skip: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write the three tables into ``dest`` (atomically, file by file).

    Parameters
    ----------
    formats : iterable of {"csv", "xlsx", "parquet"}, optional
        Default: ``clinical.csv``, ``CT-details.xlsx``, ``PT-details.xlsx`` and the three
        as Parquet when pyarrow is installed (``pip install 'petcorpus[parquet]'``); without
        it the Parquet files are skipped and ``on_skip`` is told why. Given formats write
        every table in each, and ``"parquet"`` without pyarrow is an error (nothing is
        written).
    on_skip : callable, optional
        Called with one sentence per skipped format (default: logged as a warning).

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    MissingDependencyError
        ``"parquet"`` was asked for and pyarrow is not installed.
    """
    from petcorpus._optional import import_optional
    from petcorpus.atomic import atomic_write
    from petcorpus.errors import MissingDependencyError

    dest = Path(dest)
    if formats is None:
        plan = [("clinical", "csv"), ("CT-details", "xlsx"), ("PT-details", "xlsx")]
        try:
            import_optional("pyarrow", extra="parquet", purpose="Parquet export")
        except MissingDependencyError as exc:
            (on_skip or log.warning)(f"Parquet files skipped: {exc}")
        else:
            plan += [(name, "parquet") for name in TABLE_NAMES]
    else:
        fmts = list(dict.fromkeys(formats))
        bad = [f for f in fmts if f not in _FORMATS]
        if bad:
            raise PetcorpusError(f"unknown table format(s) {bad}; use csv, xlsx or parquet")
        if "parquet" in fmts:
            import_optional("pyarrow", extra="parquet", purpose="Parquet export")
        plan = [(name, f) for f in fmts for name in TABLE_NAMES]
    tables = {
        "clinical": clinical_table(catalog),
        "CT-details": ct_details(catalog),
        "PT-details": pt_details(catalog),
    }
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fmt in plan:
        final = dest / f"{name}.{fmt}"
        df = tables[name]
        if fmt == "csv":
            with atomic_write(final, "w") as fh:
                df.to_csv(fh, index=False)
        elif fmt == "xlsx":
            with atomic_write(final) as fh:
                df.to_excel(fh, index=False, engine="openpyxl", sheet_name=name)
        else:
            with atomic_write(final) as fh:
                df.to_parquet(fh, index=False)
        written.append(final)
    return written
