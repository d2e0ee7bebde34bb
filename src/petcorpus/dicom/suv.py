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

from petcorpus.dicom.suv_inputs import Sourced, SuvInputs
from petcorpus.dicom.values import scan_start
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
    #: what the user must know although factors exist (a radionuclide/half-life contradiction)
    warnings: tuple[str, ...] = ()
    #: the error behind each entry of ``errors`` (not part of :meth:`as_dict`)
    failures: dict[str, PetcorpusError] = dataclasses.field(
        default_factory=dict, repr=False, compare=False
    )
    #: raised by :meth:`factor` although the factors exist (a contradicted half-life, qiba)
    blocking: PetcorpusError | None = dataclasses.field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            f.name: copy.deepcopy(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name not in ("failures", "blocking")
        }

    def factor(self, key: str) -> float:
        """The factor ``key`` (``"bqml"``, ``"suv_bw"``, ``"suv_lbm"`` or ``"suv_bsa"``).

        Raises
        ------
        PetcorpusError
            The error that made it impossible, with its reason, tag and file; for the QIBA
            rule, also ``INVALID_VALUE`` when the header's radionuclide contradicts its
            half-life (the factor shown by ``petcorpus suv`` is not trusted for conversion).
        """
        if self.blocking is not None and key != "bqml":
            raise self.blocking
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


def _half_life_error(inp: SuvInputs) -> PetcorpusError | None:
    """The contradiction between the header's radionuclide and half-life as an error, where
    the QIBA factor decays with that half-life (DecayCorrection START or NONE)."""
    why = inp.half_life_conflict()
    if why is None:
        return None
    units = str(inp.units.value).upper() if inp.units else ""
    mode = str(inp.decay_correction.value).upper() if inp.decay_correction else ""
    if units == "GML" or mode not in ("START", "NONE"):
        return None
    if units == "CNTS" and not (inp.philips_bqml_scale and inp.philips_bqml_scale.value):
        return None
    return PetcorpusError(
        f"{why}: the SUV would decay the dose with a half-life the header itself contradicts; "
        "correct the header (`petcorpus suv` shows the factors from the header's half-life)",
        path=inp.path,
        reason=Reason.INVALID_VALUE,
    )


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
        > 24 h, unknown Units or DecayCorrection, CNTS without a Philips scale factor, a
        radionuclide that contradicts RadionuclideHalfLife (``"qiba"``, INVALID_VALUE), …
    """
    if time_reference == "qiba" and (err := _half_life_error(inputs)) is not None:
        raise err
    return _suv_factor(inputs, kind, time_reference)


def _suv_factor(inputs: SuvInputs, kind: SuvKind, time_reference: TimeReference) -> float:
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
            values[key] = _suv_factor(inp, kind, time_reference)  # type: ignore[arg-type]
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
    conflict = inp.half_life_conflict()
    blocking = _half_life_error(inp) if time_reference == "qiba" else None
    warnings: tuple[str, ...] = ()
    if conflict is not None:
        warnings = (
            f"{conflict}; the factors above decay with the header's half-life"
            + (", and convert/build refuse this series (INVALID_VALUE)" if blocking else ""),
        )
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
        warnings=warnings,
        failures=failures,
        blocking=blocking,
    )


def autopet_reference_file(pet_dir: str | PathLike[str]) -> Path:
    """The file the published recipe reads: ``next(Path(pet_dir).glob('*.dcm'))``."""
    try:
        return next(Path(pet_dir).glob("*.dcm"))
    except StopIteration:
        raise PetcorpusError(
            "no *.dcm file in the PET folder", path=pet_dir, reason=Reason.NO_SERIES
        ) from None
