"""The inputs of an SUV factor, each read from a PET series' headers with its tag and file.

:class:`SuvInputs` collects them (:meth:`SuvInputs.from_datasets`); the factors are computed
in :mod:`petcorpus.dicom.suv`, which re-exports both classes. Dates, times and private tags
are read by :mod:`petcorpus.dicom.values`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from petcorpus.dicom.values import (
    GE_SCAN_DATETIME,
    PHILIPS_BQML_SCALE,
    PHILIPS_SUV_SCALE,
    TracerInfo,
    half_life_conflict,
    injection_datetime,
    parse_date_time,
    parse_datetime,
    private_value,
    tracer_info,
)
from petcorpus.errors import MissingTagError, PetcorpusError, Reason

__all__ = ["Sourced", "SuvInputs"]


@dataclasses.dataclass(frozen=True)
class Sourced:
    """A value read from a header, with the tag and the file it came from."""

    value: Any
    tag: str
    file: str | None

    def as_dict(self) -> dict[str, Any]:
        v = self.value
        if isinstance(v, dt.datetime):
            v = v.isoformat()
        elif isinstance(v, tuple):
            v = list(v)
        return {"value": v, "source": self.tag, "file": self.file}


def _str(ds: Dataset, keyword: str) -> str | None:
    v = ds.get(keyword)
    if v is None or v == "":
        return None
    return str(v).strip() or None


def _float(ds: Dataset, keyword: str) -> float | None:
    v = ds.get(keyword)
    if v is None or v == "":
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _autopet_index(files: Sequence[str | None]) -> int:
    """Index of the dataset the published recipe reads: ``next(Path(pet_dir).glob('*.dcm'))``
    in the folder of the files, when the datasets came from files of one folder; else 0."""
    if not files or any(f is None for f in files):
        return 0
    paths = [Path(f) for f in files]  # type: ignore[arg-type]
    parents = {p.parent.resolve() for p in paths}
    if len(parents) != 1:
        return 0
    ref = next(paths[0].parent.glob("*.dcm"), None)
    if ref is None:
        return 0
    ref = ref.resolve()
    for i, p in enumerate(paths):
        if p.resolve() == ref:
            return i
    return 0


@dataclasses.dataclass(frozen=True)
class SuvInputs:
    """Everything an SUV factor depends on, each value with its tag and file.

    Build it with :meth:`from_datasets`; fields are None when the header lacks them.
    """

    units: Sourced | None = None
    decay_correction: Sourced | None = None
    corrected_image: Sourced | None = None
    weight_kg: Sourced | None = None
    height_m: Sourced | None = None
    sex: Sourced | None = None
    total_dose_bq: Sourced | None = None
    half_life_s: Sourced | None = None
    injection_datetime: Sourced | None = None
    series_datetime: Sourced | None = None
    earliest_acquisition_datetime: Sourced | None = None
    ge_scan_datetime: Sourced | None = None
    philips_bqml_scale: Sourced | None = None
    philips_suv_scale: Sourced | None = None
    #: per slice (in the order given): acquisition datetimes, for DecayCorrection NONE
    acquisition_datetimes: tuple[dt.datetime | None, ...] = ()
    #: the raw strings the autoPET recipe uses, from the first dataset given
    autopet_acquisition_time: Sourced | None = None
    autopet_injection_time: Sourced | None = None
    autopet_weight: Sourced | None = None
    autopet_total_dose: Sourced | None = None
    autopet_half_life: Sourced | None = None
    #: what the header says was injected (Radiopharmaceutical, the radionuclide's name)
    radiopharmaceutical: Sourced | None = None
    radionuclide: Sourced | None = None
    tracer: Sourced | None = None
    tracer_info: TracerInfo | None = None
    path: str | None = None

    def half_life_conflict(self) -> str | None:
        """Why RadionuclideHalfLife contradicts the named radionuclide, or None
        (:func:`petcorpus.dicom.values.half_life_conflict`)."""
        if self.tracer_info is None or self.half_life_s is None:
            return None
        return half_life_conflict(self.tracer_info, self.half_life_s.value)

    @classmethod
    def from_datasets(
        cls,
        datasets: Dataset | Sequence[Dataset],
        path: str | PathLike[str] | Sequence[str | PathLike[str]] | None = None,
    ) -> SuvInputs:
        """Collect SUV inputs from the headers of one PET series.

        Parameters
        ----------
        datasets : Dataset or sequence of Dataset
            Headers of the series' slices (pixel data not needed). Per-series values are read
            from the first; acquisition times from all. For ``time_reference="autopet"`` the
            recipe's "one file" is used: the dataset read from
            ``next(Path(pet_dir).glob('*.dcm'))`` when the datasets come from files of one
            folder (as :func:`~petcorpus.dicom.series.load_series` returns them), else the
            first dataset given.
        path : path or sequence of paths, optional
            The files (one per dataset) or the series folder, named in sources and errors.
            Defaults to each dataset's ``filename``.
        """
        dss = [datasets] if isinstance(datasets, Dataset) else list(datasets)
        if not dss:
            raise PetcorpusError("no PET datasets given", path=None, reason=Reason.NO_SERIES)
        if path is None or isinstance(path, (str, PathLike)):
            files = [
                str(p) if isinstance(p := getattr(d, "filename", None), (str, PathLike)) else None
                for d in dss
            ]
            if path is not None:
                files = [f or str(path) for f in files]
        else:
            files = [str(p) for p in path]
        first, f0 = dss[0], files[0]
        folder = str(path) if isinstance(path, (str, PathLike)) else f0

        def src(value: Any, tag: str, file: str | None = f0) -> Sourced | None:
            return None if value is None else Sourced(value, tag, file)

        rp = None
        seq = first.get("RadiopharmaceuticalInformationSequence")
        if seq:
            rp = seq[0]
        rp_tag = "(0054,0016) RadiopharmaceuticalInformationSequence[0]"

        series_dt = None
        sd, st = _str(first, "SeriesDate"), _str(first, "SeriesTime")
        parsed = parse_date_time(sd, st)
        if parsed is not None:
            series_dt = Sourced(parsed, "(0008,0021) SeriesDate + (0008,0031) SeriesTime", f0)
        inj = None
        found = (
            injection_datetime(
                _str(rp, "RadiopharmaceuticalStartDateTime"),
                _str(rp, "RadiopharmaceuticalStartTime"),
                series_dt.value if series_dt is not None else None,
            )
            if rp is not None
            else None
        )
        if found is not None:
            inj = Sourced(
                found[0],
                f"{rp_tag} > (0018,1078) RadiopharmaceuticalStartDateTime"
                if found[1] == "datetime"
                else f"(0008,0021) SeriesDate + {rp_tag} > (0018,1072) "
                "RadiopharmaceuticalStartTime (midnight-safe)",
                f0,
            )

        acq: list[dt.datetime | None] = []
        for d in dss:
            parsed = parse_datetime(_str(d, "AcquisitionDateTime")) or parse_date_time(
                _str(d, "AcquisitionDate") or sd, _str(d, "AcquisitionTime")
            )
            acq.append(parsed)
        earliest = None
        known = [(a, f) for a, f in zip(acq, files, strict=True) if a is not None]
        if known:
            a, f = min(known, key=lambda x: x[0])
            earliest = Sourced(
                a, "(0008,0022) AcquisitionDate + (0008,0032) AcquisitionTime (earliest)", f
            )

        ap_i = _autopet_index(files)
        ap, ap_file = dss[ap_i], files[ap_i]
        ap_seq = ap.get("RadiopharmaceuticalInformationSequence")
        ap_rp = ap_seq[0] if ap_seq else None

        ge_dt = parse_datetime(private_value(first, GE_SCAN_DATETIME))
        ph_bqml = private_value(first, PHILIPS_BQML_SCALE)
        ph_suv = private_value(first, PHILIPS_SUV_SCALE)

        def _num(v: Any) -> float | None:
            try:
                return None if v in (None, "") else float(v)
            except (TypeError, ValueError):
                return None

        info = tracer_info(rp)
        nuclide_tag = (
            f"{rp_tag} > (0054,0300) RadionuclideCodeSequence"
            if info.radionuclide_from_code
            else f"{rp_tag} > (0018,0031) Radiopharmaceutical"
        )
        ci = first.get("CorrectedImage")
        ci_val = None
        if ci not in (None, ""):
            ci_val = tuple(str(x).strip().upper() for x in ([ci] if isinstance(ci, str) else ci))
        return cls(
            units=src(_str(first, "Units"), "(0054,1001) Units"),
            decay_correction=src(_str(first, "DecayCorrection"), "(0054,1102) DecayCorrection"),
            corrected_image=src(ci_val, "(0028,0051) CorrectedImage"),
            weight_kg=src(_float(first, "PatientWeight"), "(0010,1030) PatientWeight"),
            height_m=src(_float(first, "PatientSize"), "(0010,1020) PatientSize"),
            sex=src(_str(first, "PatientSex"), "(0010,0040) PatientSex"),
            total_dose_bq=src(
                _float(rp, "RadionuclideTotalDose") if rp is not None else None,
                f"{rp_tag} > (0018,1074) RadionuclideTotalDose",
            ),
            half_life_s=src(
                _float(rp, "RadionuclideHalfLife") if rp is not None else None,
                f"{rp_tag} > (0018,1075) RadionuclideHalfLife",
            ),
            injection_datetime=inj,
            series_datetime=series_dt,
            earliest_acquisition_datetime=earliest,
            ge_scan_datetime=src(ge_dt, GE_SCAN_DATETIME.name),
            philips_bqml_scale=src(_num(ph_bqml), PHILIPS_BQML_SCALE.name),
            philips_suv_scale=src(_num(ph_suv), PHILIPS_SUV_SCALE.name),
            acquisition_datetimes=tuple(acq),
            autopet_acquisition_time=src(
                ap.get("AcquisitionTime"), "(0008,0032) AcquisitionTime", ap_file
            ),
            autopet_injection_time=src(
                ap_rp.get("RadiopharmaceuticalStartTime") if ap_rp is not None else None,
                f"{rp_tag} > (0018,1072) RadiopharmaceuticalStartTime",
                ap_file,
            ),
            autopet_weight=src(ap.get("PatientWeight"), "(0010,1030) PatientWeight", ap_file),
            autopet_total_dose=src(
                ap_rp.get("RadionuclideTotalDose") if ap_rp is not None else None,
                f"{rp_tag} > (0018,1074) RadionuclideTotalDose",
                ap_file,
            ),
            autopet_half_life=src(
                ap_rp.get("RadionuclideHalfLife") if ap_rp is not None else None,
                f"{rp_tag} > (0018,1075) RadionuclideHalfLife",
                ap_file,
            ),
            radiopharmaceutical=src(
                info.radiopharmaceutical, f"{rp_tag} > (0018,0031) Radiopharmaceutical"
            ),
            radionuclide=src(info.radionuclide, nuclide_tag),
            tracer=src(info.tracer, f"{rp_tag} > (0018,0031) Radiopharmaceutical"),
            tracer_info=info,
            path=folder,
        )

    def as_dict(self) -> dict[str, Any]:
        """The inputs as plain JSON-able data: ``{name: {value, source, file}}``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Sourced):
                out[f.name] = v.as_dict()
        return out

    # -- checked accessors ---------------------------------------------------------------------
    def _need(self, name: str, tag: str) -> Any:
        s = getattr(self, name)
        if s is None or s.value is None:
            raise MissingTagError(f"{tag} is missing or empty", path=self.path)
        return s.value
