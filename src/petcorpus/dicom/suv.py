"""SUV factors of a PET series: SUVbw, SUL (Janmahasatian lean body mass) and SUVbsa.

Every factor is *the number that multiplies a rescaled pixel value* (the modality LUT's
output, in the series' own Units: BQML, CNTS or GML) to give Bq/ml, SUVbw, SUL or SUVbsa.

Two time references:

``"qiba"`` (default; QIBA/UCSF vendor-neutral pseudo-code)
    Scan start and injection time by the rules of :mod:`petcorpus.dicom.values`
    (:func:`~petcorpus.dicom.values.scan_start`,
    :func:`~petcorpus.dicom.values.injection_datetime`), written there once. Decay:
    ``DecayCorrection`` START → decay the dose to the scan time; ADMIN → no decay; NONE →
    pixels are not decay corrected, each slice is decayed to its own acquisition time (see
    :attr:`SuvResult.per_slice`; one number describes the series only when every slice
    shares one acquisition time).
``"autopet"``
    The published recipe (lab-midas/TCIA_processing ``calculate_suv_factor``) bit for bit:
    one file (the one the recipe picks, :func:`autopet_reference_file`, when the datasets
    were read from files of one folder; else the first dataset given),
    Δt = AcquisitionTime − RadiopharmaceuticalStartTime as times of day,
    ``1000 * PatientWeight / (RadionuclideTotalDose * 0.5 ** (Δt / RadionuclideHalfLife))``,
    no checks, Units ignored. SUL and SUVbsa use the same decayed dose.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import math
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from pydicom.dataset import Dataset

from petcorpus.dicom.values import (
    GE_SCAN_DATETIME,
    PHILIPS_BQML_SCALE,
    PHILIPS_SUV_SCALE,
    injection_datetime,
    parse_date_time,
    parse_datetime,
    private_value,
    scan_start,
)
from petcorpus.errors import MissingTagError, PetcorpusError, Reason, UnsupportedError

__all__ = [
    "Sourced",
    "SuvInputs",
    "SuvKind",
    "SuvResult",
    "autopet_reference_file",
    "bqml_factor",
    "bsa_m2",
    "compute_suv",
    "lbm_kg",
    "suv_factor",
]

TimeReference = Literal["qiba", "autopet"]
SuvKind = Literal["bw", "lbm", "bsa"]
_MAX_UPTAKE_S = 24 * 3600.0
#: heavier than any patient a PET/CT table takes (a weight in grams shows up as absurd)
_MAX_WEIGHT_KG = 500.0


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


def _tagname(tag: str, keyword: str) -> str:
    return f"{tag} {keyword}"


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
    path: str | None = None

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


@dataclasses.dataclass(frozen=True)
class SuvResult:
    """SUV factors of one series (None where impossible; the reason is in ``errors``)."""

    bqml: float | None
    suv_bw: float | None
    suv_lbm: float | None
    suv_bsa: float | None
    inputs: dict[str, Any]
    time_reference: str
    errors: dict[str, str]
    #: DecayCorrection NONE with several acquisition times: one factor per slice (order given)
    per_slice: dict[str, tuple[float, ...]] | None = None
    scan_datetime: str | None = None
    scan_datetime_source: str | None = None
    #: the error behind each entry of ``errors`` (not part of :meth:`as_dict`)
    failures: dict[str, PetcorpusError] = dataclasses.field(
        default_factory=dict, repr=False, compare=False
    )

    def as_dict(self) -> dict[str, Any]:
        return {
            f.name: copy.deepcopy(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name != "failures"
        }

    def factor(self, key: str) -> float:
        """The factor ``key`` (``"bqml"``, ``"suv_bw"``, ``"suv_lbm"`` or ``"suv_bsa"``).

        Raises
        ------
        PetcorpusError
            The error that made it impossible, with its reason, tag and file.
        """
        value = getattr(self, key)
        if value is None:
            raise self.failures[key]
        return float(value)


# -- body size ---------------------------------------------------------------------------------
def lbm_kg(weight_kg: float, height_m: float, sex: str) -> float:
    """Lean body mass (kg), Janmahasatian et al., Clin Pharmacokinet 2005.

    >>> round(lbm_kg(70.0, 1.75, "M"), 3)
    56.414
    """
    bmi = weight_kg / height_m**2
    if sex == "M":
        return 9270.0 * weight_kg / (6680.0 + 216.0 * bmi)
    if sex == "F":
        return 9270.0 * weight_kg / (8780.0 + 244.0 * bmi)
    raise ValueError(f"sex must be 'M' or 'F', got {sex!r}")


def bsa_m2(weight_kg: float, height_m: float) -> float:
    """Body surface area (m²), Du Bois & Du Bois 1916.

    >>> round(bsa_m2(70.0, 1.75), 4)
    1.8481
    """
    return 0.007184 * weight_kg**0.425 * (height_m * 100.0) ** 0.725


# -- factors -----------------------------------------------------------------------------------
def _scan_datetime(inp: SuvInputs) -> Sourced:
    """The scan start by :func:`petcorpus.dicom.values.scan_start`, with its source."""
    series, earliest = inp.series_datetime, inp.earliest_acquisition_datetime
    ge = inp.ge_scan_datetime
    which = scan_start(
        series.value if series else None,
        earliest.value if earliest else None,
        ge.value if ge else None,
    )
    chosen = {"series": series, "ge": ge, "acquisition": earliest}.get(which or "")
    if chosen is None:
        raise MissingTagError(
            "no scan time: (0008,0021/0031) SeriesDate/SeriesTime and "
            "(0008,0022/0032) AcquisitionDate/AcquisitionTime are missing",
            path=inp.path,
        )
    return chosen


def _checked_common(inp: SuvInputs) -> tuple[float, float]:
    """Weight (kg) and dose (Bq) after sanity checks."""
    w = inp._need("weight_kg", "(0010,1030) PatientWeight")
    if not (0 < w < _MAX_WEIGHT_KG):
        raise PetcorpusError(
            f"(0010,1030) PatientWeight = {w:g} kg is not a body weight (more than 0 and less "
            f"than {_MAX_WEIGHT_KG:g} kg expected); SUV needs the patient's weight and "
            "petcorpus reads it only from this header: correct the header",
            path=inp.path,
            reason=Reason.INVALID_VALUE,
        )
    d = inp._need("total_dose_bq", "(0018,1074) RadionuclideTotalDose")
    if not (d > 0 and math.isfinite(d)):
        raise PetcorpusError(
            f"(0018,1074) RadionuclideTotalDose = {d} Bq is not a positive dose",
            path=inp.path,
            reason=Reason.INVALID_VALUE,
        )
    return w, d


def _uptake_s(inp: SuvInputs, when: dt.datetime) -> float:
    inj = inp._need("injection_datetime", "(0018,1078/1072) RadiopharmaceuticalStart(Date)Time")
    s = (when - inj).total_seconds()
    if not (0 <= s <= _MAX_UPTAKE_S):
        raise PetcorpusError(
            f"uptake time {s / 60:.1f} min (injection {inj.isoformat()} → scan "
            f"{when.isoformat()}) is negative or over 24 h",
            path=inp.path,
            reason=Reason.INVALID_VALUE,
        )
    return s


def _mass(inp: SuvInputs, kind: str, weight: float) -> float:
    """The body size the kind divides by: g for bw/lbm, cm² for bsa."""
    if kind == "bw":
        return weight * 1000.0
    h = inp._need("height_m", "(0010,1020) PatientSize")
    if not (0.3 < h < 3.0):
        raise PetcorpusError(
            f"(0010,1020) PatientSize = {h} m is not a body height (metres, 0.3-3 expected)",
            path=inp.path,
            reason=Reason.INVALID_VALUE,
        )
    if kind == "bsa":
        return bsa_m2(weight, h) * 1e4
    sex = inp._need("sex", "(0010,0040) PatientSex")
    if sex not in ("M", "F"):
        raise UnsupportedError(
            f"(0010,0040) PatientSex = {sex!r}: the Janmahasatian LBM needs M or F", path=inp.path
        )
    return lbm_kg(weight, h, sex) * 1000.0


def _units_scale(inp: SuvInputs) -> tuple[str, float | None]:
    """('BQML', bq_per_unit) or ('GML'|'PHILIPS_SUV', None)."""
    units = inp._need("units", "(0054,1001) Units").upper()
    if units == "BQML":
        return units, 1.0
    if units == "CNTS":
        if inp.philips_bqml_scale is not None and inp.philips_bqml_scale.value > 0:
            return units, float(inp.philips_bqml_scale.value)
        if inp.philips_suv_scale is not None and inp.philips_suv_scale.value > 0:
            return "PHILIPS_SUV", None
        raise MissingTagError(
            "(0054,1001) Units = CNTS but neither (7053,1009) Philips activity concentration "
            "scale factor nor (7053,1000) SUV scale factor is present: counts cannot be "
            "converted",
            path=inp.path,
        )
    if units == "GML":
        return units, None
    raise UnsupportedError(
        f"(0054,1001) Units = {units!r}: only BQML, CNTS (Philips) and GML are understood",
        path=inp.path,
    )


def bqml_factor(inputs: SuvInputs) -> float:
    """The factor from a rescaled pixel value to Bq/ml (raises where impossible)."""
    units, scale = _units_scale(inputs)
    if scale is None:
        raise UnsupportedError(
            f"Units {units}: pixel values are already SUV, activity concentration cannot "
            "be recovered",
            path=inputs.path,
        )
    return scale


def _decay_mode(inp: SuvInputs) -> str:
    mode = inp._need("decay_correction", "(0054,1102) DecayCorrection").upper()
    if mode not in ("START", "ADMIN", "NONE"):
        raise UnsupportedError(
            f"(0054,1102) DecayCorrection = {mode!r}: only START, ADMIN and NONE are understood",
            path=inp.path,
        )
    ci = inp._need("corrected_image", "(0028,0051) CorrectedImage")
    ci_text = "\\".join(ci)
    if "ATTN" not in ci:
        raise PetcorpusError(
            f"(0028,0051) CorrectedImage = {ci_text} lacks ATTN: the PET is not "
            "attenuation corrected, SUV is meaningless",
            path=inp.path,
            reason=Reason.UNSUPPORTED,
        )
    if mode != "NONE" and "DECY" not in ci:
        raise PetcorpusError(
            f"(0028,0051) CorrectedImage = {ci_text} lacks DECY but DecayCorrection is {mode}",
            path=inp.path,
            reason=Reason.INVALID_VALUE,
        )
    return mode


def _qiba_per_bqml(inp: SuvInputs, kind: str) -> float | tuple[float, ...]:
    """Body size / decayed dose: the factor from Bq/ml to SUV (per slice for NONE)."""
    mode = _decay_mode(inp)
    weight, dose = _checked_common(inp)
    mass = _mass(inp, kind, weight)
    if mode == "ADMIN":
        return mass / dose
    half = inp._need("half_life_s", "(0018,1075) RadionuclideHalfLife")
    if not half > 0:
        raise PetcorpusError(
            f"(0018,1075) RadionuclideHalfLife = {half} s is not a positive half-life",
            path=inp.path,
            reason=Reason.INVALID_VALUE,
        )
    if mode == "START":
        t = _uptake_s(inp, _scan_datetime(inp).value)
        return mass / (dose * 0.5 ** (t / half))
    acqs = inp.acquisition_datetimes
    if not acqs or any(a is None for a in acqs):
        raise MissingTagError(
            "DecayCorrection NONE needs (0008,0022/0032) AcquisitionDate/Time of every slice",
            path=inp.path,
        )
    out = tuple(mass / (dose * 0.5 ** (_uptake_s(inp, a) / half)) for a in acqs)  # type: ignore[arg-type]
    return out[0] if len(set(acqs)) == 1 else out


def _conv_time(time_str: str) -> float:
    # the recipe's conv_time, character for character
    return float(time_str[:2]) * 3600 + float(time_str[2:4]) * 60 + float(time_str[4:13])


def _autopet_factor(inp: SuvInputs, kind: str) -> float:
    def need(name: str, tag: str) -> Any:
        return inp._need(name, tag)

    total_dose = need("autopet_total_dose", "(0018,1074) RadionuclideTotalDose")
    start_time = need("autopet_injection_time", "(0018,1072) RadiopharmaceuticalStartTime")
    half_life = need("autopet_half_life", "(0018,1075) RadionuclideHalfLife")
    acq_time = need("autopet_acquisition_time", "(0008,0032) AcquisitionTime")
    weight = need("autopet_weight", "(0010,1030) PatientWeight")
    time_diff = _conv_time(acq_time) - _conv_time(start_time)
    act_dose = total_dose * 0.5 ** (time_diff / half_life)
    if kind == "bw":
        return 1000 * weight / act_dose
    return _mass(inp, kind, float(weight)) / act_dose


def suv_factor(
    inputs: SuvInputs,
    kind: SuvKind = "bw",
    time_reference: TimeReference = "qiba",
) -> float:
    """The factor from a rescaled pixel value (series Units) to SUV of one kind.

    Parameters
    ----------
    inputs : SuvInputs
    kind : {"bw", "lbm", "bsa"}
        SUVbw (g/ml), SUL (lean body mass, g/ml) or SUVbsa (cm²/ml).
    time_reference : {"qiba", "autopet"}

    Raises
    ------
    MissingTagError, UnsupportedError, PetcorpusError
        Naming the tag and the file: missing weight/dose/height, dose ≤ 0, uptake < 0 or
        > 24 h, unknown Units or DecayCorrection, CNTS without a Philips scale factor, …
    """
    if kind not in ("bw", "lbm", "bsa"):
        raise ValueError(f"kind must be 'bw', 'lbm' or 'bsa', got {kind!r}")
    if time_reference == "autopet":
        return _autopet_factor(inputs, kind)
    if time_reference != "qiba":
        raise ValueError(f"time_reference must be 'qiba' or 'autopet', got {time_reference!r}")
    units, scale = _units_scale(inputs)
    if units == "GML":
        if kind == "bw":
            return 1.0
        w, _ = _checked_common(inputs)
        return _mass(inputs, kind, w) / (w * 1000.0)
    if units == "PHILIPS_SUV":
        ph = float(inputs.philips_suv_scale.value)  # type: ignore[union-attr]
        if kind == "bw":
            return ph
        w, _ = _checked_common(inputs)
        return ph * _mass(inputs, kind, w) / (w * 1000.0)
    per_bqml = _qiba_per_bqml(inputs, kind)
    if isinstance(per_bqml, tuple):
        n_times = len(set(inputs.acquisition_datetimes))
        raise UnsupportedError(
            f"(0054,1102) DecayCorrection = NONE and the slices were acquired at {n_times} "
            "different times: the pixels are not decay corrected, so the SUV factor differs "
            "per slice, and SUV.nii.gz with one factor per slice is not supported; "
            "`petcorpus suv PET_FOLDER --json` lists the per-slice factors, and "
            "`--suv-time autopet` applies the published autoPET recipe's single factor "
            "(decay to one file's AcquisitionTime, DecayCorrection ignored)",
            path=inputs.path,
        )
    assert scale is not None
    return scale * per_bqml


def compute_suv(
    datasets_or_inputs: SuvInputs | Dataset | Sequence[Dataset],
    time_reference: TimeReference = "qiba",
    path: str | PathLike[str] | Sequence[str | PathLike[str]] | None = None,
) -> SuvResult:
    """All factors of a series; impossible ones are None with the reason in ``errors``.

    Parameters
    ----------
    datasets_or_inputs : SuvInputs, Dataset or sequence of Dataset
        Headers of one PET series (any order; for ``"autopet"`` the first one is used).
    time_reference : {"qiba", "autopet"}
    path : optional
        Passed to :meth:`SuvInputs.from_datasets`.
    """
    if isinstance(datasets_or_inputs, SuvInputs):
        inp = datasets_or_inputs
    else:
        inp = SuvInputs.from_datasets(datasets_or_inputs, path=path)
    if time_reference not in ("qiba", "autopet"):
        raise ValueError(f"time_reference must be 'qiba' or 'autopet', got {time_reference!r}")
    errors: dict[str, str] = {}
    values: dict[str, float | None] = {}
    per_slice: dict[str, tuple[float, ...]] = {}
    failures: dict[str, PetcorpusError] = {}
    try:
        values["bqml"] = bqml_factor(inp)
    except PetcorpusError as exc:
        values["bqml"] = None
        errors["bqml"] = f"[{exc.reason}] {exc}"
        failures["bqml"] = exc
    for kind in ("bw", "lbm", "bsa"):
        key = f"suv_{kind}"
        try:
            values[key] = suv_factor(inp, kind, time_reference)  # type: ignore[arg-type]
        except PetcorpusError as exc:
            values[key] = None
            errors[key] = f"[{exc.reason}] {exc}"
            failures[key] = exc
            if time_reference == "qiba" and values["bqml"] is not None:
                try:
                    ps = _qiba_per_bqml(inp, kind)
                except PetcorpusError:
                    continue
                if isinstance(ps, tuple):
                    per_slice[key] = tuple(values["bqml"] * p for p in ps)
    scan_dt = scan_src = None
    if time_reference == "qiba":
        try:
            s = _scan_datetime(inp)
            scan_dt, scan_src = s.value.isoformat(), s.tag
        except PetcorpusError:
            pass
    elif inp.autopet_acquisition_time is not None:
        scan_dt = str(inp.autopet_acquisition_time.value)
        scan_src = inp.autopet_acquisition_time.tag + " (time of day, first file)"
    return SuvResult(
        bqml=values["bqml"],
        suv_bw=values["suv_bw"],
        suv_lbm=values["suv_lbm"],
        suv_bsa=values["suv_bsa"],
        inputs=inp.as_dict(),
        time_reference=time_reference,
        errors=errors,
        per_slice=per_slice or None,
        scan_datetime=scan_dt,
        scan_datetime_source=scan_src,
        failures=failures,
    )


def autopet_reference_file(pet_dir: str | PathLike[str]) -> Path:
    """The file the published recipe reads: ``next(Path(pet_dir).glob('*.dcm'))``."""
    try:
        return next(Path(pet_dir).glob("*.dcm"))
    except StopIteration:
        raise PetcorpusError(
            "no *.dcm file in the PET folder", path=pet_dir, reason=Reason.NO_SERIES
        ) from None
