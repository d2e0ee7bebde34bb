"""The JSON sidecars of a BIDS-PET export: the PET's ``_pet.json`` and the SUV's.

Values come from the corpus: the study sidecar ``petcorpus.json`` (the SUV inputs with their
DICOM sources) and the catalog's record of the PET series (manufacturer, model,
reconstruction, tracer). Which fields a ``_pet.json`` must hold is the BIDS schema's
business (:func:`petcorpus.bids.schema.sidecar_fields`); :data:`NOT_KNOWN` lists, with the
reason, each recommended field a corpus cannot fill. Times are seconds relative to
``TimeZero``, which is the scan start (the rule of :func:`petcorpus.dicom.values.scan_start`,
the SUV's own).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Any

from petcorpus.dicom.values import RADIONUCLIDES, recon_iterations_subsets, scan_start
from petcorpus.errors import MissingTagError, PetcorpusError, Reason

__all__ = ["NOT_KNOWN", "PetFacts", "pet_facts", "pet_sidecar_values", "suv_sidecar"]

#: Recommended ``_pet.json`` fields a corpus does not know, with the reason (documented in
#: docs/bids.md; a field the schema adds later and nobody fills is reported by the export).
NOT_KNOWN: Mapping[str, str] = {
    **dict.fromkeys(
        ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName"),
        "identifies the site: left out on purpose",
    ),
    **dict.fromkeys(
        (
            "TracerRadLex",
            "InjectedMassPerWeight",
            "InjectedMassPerWeightUnits",
            "SpecificRadioactivityMeasTime",
            "MolarActivity",
            "MolarActivityUnits",
            "MolarActivityMeasTime",
            "Purity",
            "InjectionEnd",
        ),
        "not in a clinical PET header",
    ),
    **dict.fromkeys(
        (
            "InfusionRadioactivity",
            "InfusionStart",
            "InfusionSpeed",
            "InfusionSpeedUnits",
            "InjectedVolume",
        ),
        "for a bolus-infusion only",
    ),
    **dict.fromkeys(
        (
            "PharmaceuticalName",
            "PharmaceuticalDoseAmount",
            "PharmaceuticalDoseUnits",
            "PharmaceuticalDoseRegimen",
            "PharmaceuticalDoseTime",
        ),
        "no pharmacological challenge in a clinical PET/CT",
    ),
    **dict.fromkeys(
        (
            "ReconMethodImplementationVersion",
            "AttenuationCorrectionMethodReference",
            "ScaleFactor",
            "ScatterFraction",
            "DoseCalibrationFactor",
            "PromptRate",
            "SinglesRate",
            "RandomRate",
        ),
        "scanner details a corpus does not keep",
    ),
    "DecayCorrectionFactor": "per bed position in DICOM (DecayFactor); the corpus keeps one "
    "image decay corrected to the scan start (ImageDecayCorrectionTime)",
}

#: What a tracer name (DICOM Radiopharmaceutical) is called in a ``trc-`` label, matched
#: case-insensitively on the name without spaces and dashes.
_TRACER_LABELS = {"fluorodeoxyglucose": "FDG", "fdg": "FDG", "18ffdg": "FDG"}
#: Facts of a tracer, by trc- label (DICOM CID 25: FDG is SNOMED CT 35321007).
_TRACER_FACTS: Mapping[str, Mapping[str, Any]] = {
    "FDG": {
        "TracerSNOMED": "35321007",
        "TracerMolecularWeight": 181.15,
        "TracerMolecularWeightUnits": "g/mol",
    }
}


@dataclasses.dataclass(frozen=True)
class PetFacts:
    """The timing and SUV inputs of one study, in BIDS units.

    Times are seconds relative to ``time_zero`` (the scan start).
    """

    time_zero: dt.datetime
    injection_start: float  # s, negative: before the scan
    decay_correction: str  # DICOM DecayCorrection: START, ADMIN or NONE
    decay_time: float  # s from injection to the time the SUV decays the dose to
    decay_reference: str  # what that time is
    weight_kg: float
    height_m: float | None
    sex: str | None
    dose_mbq: float
    half_life_s: float
    suv_kind: str
    suv_factor_per_bqml: float  # the corpus's factor, per Bq/ml
    time_reference: str  # "qiba" or "autopet"
    sources: dict[str, str]  # BIDS quantity → DICOM source


def _value(inputs: Mapping[str, Any], name: str) -> Any:
    item = inputs.get(name)
    return item.get("value") if isinstance(item, Mapping) else None


def _source(inputs: Mapping[str, Any], name: str) -> str:
    item = inputs.get(name)
    return str(item.get("source")) if isinstance(item, Mapping) else ""


def _datetime(inputs: Mapping[str, Any], name: str) -> dt.datetime | None:
    v = _value(inputs, name)
    try:
        return dt.datetime.fromisoformat(v) if isinstance(v, str) else None
    except ValueError:
        return None


def _seconds_of_day(time_str: str) -> float:
    # the autoPET recipe's conv_time (petcorpus.dicom.suv), for its time reference
    return float(time_str[:2]) * 3600 + float(time_str[2:4]) * 60 + float(time_str[4:13])


def pet_facts(metadata: Mapping[str, Any], where: Any = None) -> PetFacts:
    """Timing and SUV inputs from a study sidecar ``petcorpus.json``.

    Raises
    ------
    MissingTagError
        The sidecar lacks an SUV input (named, with its DICOM tag); the study cannot be
        written as BIDS-PET.
    """
    suv = metadata.get("suv") or {}
    inputs = suv.get("inputs") or {}
    factor, bqml = suv.get("factor"), suv.get("bqml_factor")
    if not isinstance(factor, int | float) or not isinstance(bqml, int | float) or not bqml:
        raise MissingTagError(
            "petcorpus.json has no SUV factor and Bq/ml factor (suv.factor, suv.bqml_factor)",
            path=where,
        )
    series, earliest = (
        _datetime(inputs, "series_datetime"),
        _datetime(inputs, "earliest_acquisition_datetime"),
    )
    ge = _datetime(inputs, "ge_scan_datetime")
    which = scan_start(series, earliest, ge)
    zero = {"series": series, "acquisition": earliest, "ge": ge}.get(which or "")
    inj = _datetime(inputs, "injection_datetime")
    if zero is None or inj is None:
        missing = "the scan start (SeriesDate/Time)" if zero is None else "the injection time"
        raise MissingTagError(f"petcorpus.json has no {missing} in suv.inputs", path=where)
    time_reference = str(suv.get("time_reference") or "qiba")
    prefix = "autopet_" if time_reference == "autopet" else ""
    names = {
        "weight": f"{prefix}weight" if prefix else "weight_kg",
        "dose": f"{prefix}total_dose" if prefix else "total_dose_bq",
        "half": f"{prefix}half_life" if prefix else "half_life_s",
    }
    values = {k: _value(inputs, n) for k, n in names.items()}
    lacking = [names[k] for k, v in values.items() if not isinstance(v, int | float)]
    if lacking:
        raise MissingTagError(f"petcorpus.json lacks suv.inputs {', '.join(lacking)}", path=where)
    mode = str(_value(inputs, "decay_correction") or "START").upper()
    injection_start = (inj - zero).total_seconds()
    if time_reference == "autopet":
        acq, start = (
            _value(inputs, "autopet_acquisition_time"),
            _value(inputs, "autopet_injection_time"),
        )
        decay_time = _seconds_of_day(str(acq)) - _seconds_of_day(str(start))
        reference = "AcquisitionTime of the autoPET recipe's file (times of day)"
    elif mode == "ADMIN":
        decay_time, reference = 0.0, "injection (DecayCorrection ADMIN)"
    else:
        decay_time, reference = -injection_start, "scan start (TimeZero)"
    height = _value(inputs, "height_m")
    return PetFacts(
        time_zero=zero,
        injection_start=injection_start,
        decay_correction=mode,
        decay_time=decay_time,
        decay_reference=reference,
        weight_kg=float(values["weight"]),
        height_m=float(height) if isinstance(height, int | float) else None,
        sex=_value(inputs, "sex"),
        dose_mbq=float(values["dose"]) / 1e6,
        half_life_s=float(values["half"]),
        suv_kind=str(suv.get("kind") or "bw"),
        suv_factor_per_bqml=float(factor) / float(bqml),
        time_reference=time_reference,
        sources={
            "BodyWeight": _source(inputs, names["weight"]),
            "InjectedRadioactivity": _source(inputs, names["dose"]),
            "RadionuclideHalfLife": _source(inputs, names["half"]),
            "InjectionStart": _source(inputs, "injection_datetime"),
            "TimeZero": _source(
                inputs,
                {
                    "series": "series_datetime",
                    "acquisition": "earliest_acquisition_datetime",
                    "ge": "ge_scan_datetime",
                }[str(which)],
            ),
            "DecayCorrection": _source(inputs, "decay_correction"),
        },
    )


def tracer_label(name: str | None) -> str:
    """The ``trc-`` label of a tracer name: ``Fluorodeoxyglucose`` → ``FDG``; other names
    keep their letters and digits (``unknown`` without a name)."""
    if not name:
        return "unknown"
    key = re.sub(r"[\s\-_^]+", "", name).lower()
    return _TRACER_LABELS.get(key) or re.sub(r"[^A-Za-z0-9]", "", name) or "unknown"


def radionuclide(name: str | None, half_life_s: float) -> str:
    """BIDS radionuclide (``F18``) from the catalog's normalised Radionuclide (``F-18``,
    :func:`petcorpus.dicom.values.tracer_info`), else from the half-life (within 1 %) —
    both from the one table :data:`petcorpus.dicom.values.RADIONUCLIDES`."""
    if name in RADIONUCLIDES:
        return name.replace("-", "")
    for nuclide in RADIONUCLIDES.values():
        if abs(half_life_s - nuclide.half_life_s) <= 0.01 * nuclide.half_life_s:
            return nuclide.name.replace("-", "")
    raise PetcorpusError(
        f"radionuclide unknown: no (0054,0300) RadionuclideCodeSequence and no nuclide with "
        f"a half-life of {half_life_s:g} s",
        reason=Reason.UNSUPPORTED,
    )


def _filter(params: Mapping[str, Any]) -> dict[str, Any]:
    """ReconFilterType/Size from FilterType, else the kernel text (``Gaussian 2.00``)."""
    text = params.get("FilterType") or params.get("ConvolutionKernel")
    if not text:
        return {"ReconFilterType": "none"}
    text = str(text)
    m = re.search(r"gauss\w*\s*([\d.]+)", text, re.IGNORECASE)
    if m:
        return {"ReconFilterType": "Gaussian", "ReconFilterSize": float(m.group(1))}
    return {"ReconFilterType": text}


def _recon(params: Mapping[str, Any]) -> dict[str, Any]:
    method = params.get("ReconstructionMethod")
    out: dict[str, Any] = {"ReconMethodName": str(method) if method else "unknown"}
    iters, subsets = recon_iterations_subsets(method)
    if iters is not None and subsets is not None:
        out["ReconMethodParameterLabels"] = ["subsets", "iterations"]
        out["ReconMethodParameterUnits"] = ["none", "none"]
        out["ReconMethodParameterValues"] = [subsets, iters]
    else:
        out["ReconMethodParameterLabels"] = ["none"]
    return {**out, **_filter(params)}


def _attenuation(params: Mapping[str, Any]) -> str | None:
    method = params.get("AttenuationCorrectionMethod")
    if method:
        return str(method)
    corrected = str(params.get("CorrectedImage") or "")
    return "CT-based" if "ATTN" in corrected else None


def _time_text(t: dt.datetime) -> str:
    return t.strftime("%H:%M:%S.%f").rstrip("0").rstrip(".")


def pet_sidecar_values(facts: PetFacts, series: Mapping[str, Any]) -> dict[str, Any]:
    """Every ``_pet.json`` value the corpus knows (BIDS names and units).

    ``series`` is the catalog's record of the PET series
    (:meth:`~petcorpus.catalog.Catalog.series_record`).
    """
    params = series.get("params") or {}
    tracer = tracer_label(params.get("Radiopharmaceutical"))
    frame_ms = params.get("ActualFrameDuration")
    decayed = facts.decay_correction != "NONE"
    values: dict[str, Any] = {
        "Manufacturer": series.get("manufacturer"),
        "ManufacturersModelName": series.get("model"),
        "Units": "Bq/mL",
        "TracerName": tracer,
        "TracerRadionuclide": radionuclide(params.get("Radionuclide"), facts.half_life_s),
        "InjectedRadioactivity": facts.dose_mbq,
        "InjectedRadioactivityUnits": "MBq",
        "InjectedMass": "n/a",
        "InjectedMassUnits": "n/a",
        "SpecificRadioactivity": "n/a",
        "SpecificRadioactivityUnits": "n/a",
        "ModeOfAdministration": "bolus",
        **_TRACER_FACTS.get(tracer, {}),
        "TimeZero": _time_text(facts.time_zero),
        "ScanStart": 0.0,
        "InjectionStart": facts.injection_start,
        "FrameTimesStart": [0.0],
        "FrameDuration": [float(frame_ms) / 1000.0]
        if isinstance(frame_ms, int | float) and frame_ms > 0
        else None,
        "AcquisitionMode": "static",
        "ImageDecayCorrected": decayed,
        "ImageDecayCorrectionTime": facts.injection_start
        if facts.decay_correction == "ADMIN"
        else 0.0,
        "AttenuationCorrection": _attenuation(params),
        **_recon(params),
    }
    return {k: v for k, v in values.items() if v is not None}


def suv_sidecar(facts: PetFacts, *, pet_file: str, sessions_file: str) -> dict[str, Any]:
    """The SUV image's sidecar: every input, so SUV can be recomputed from BIDS alone.

    ``SUV = PET [Bq/mL] * BodyWeight [g] / (InjectedRadioactivity [Bq] *
    2 ** (-DecayTime / RadionuclideHalfLife))`` for SUVbw; the factor is written too, and
    checked against the corpus's (:class:`PetcorpusError` when they differ by more than
    1e-9 relative: the inputs would not reproduce the corpus's SUV).
    """
    weight_g = facts.weight_kg * 1000.0
    decayed_bq = facts.dose_mbq * 1e6 * 2.0 ** (-facts.decay_time / facts.half_life_s)
    if facts.suv_kind == "bw":
        recomputed = weight_g / decayed_bq
        if not math.isclose(recomputed, facts.suv_factor_per_bqml, rel_tol=1e-9):
            raise PetcorpusError(
                f"the SUV inputs give a factor of {recomputed:.9g} per Bq/ml, the corpus's SUV "
                f"used {facts.suv_factor_per_bqml:.9g}: not exported",
                reason=Reason.INVALID_VALUE,
            )
    return {
        "Description": f"SUV{facts.suv_kind} of the PET (petcorpus); recompute: SUV = PET "
        "[Bq/mL] x BodyWeight [g] / (InjectedRadioactivity [Bq] x 2^(-DecayTime / "
        "RadionuclideHalfLife)) for SUVbw (SUL and SUVbsa replace the weight by the lean body "
        "mass (Janmahasatian) or the body surface area (Du Bois) from height and sex)",
        "Sources": [f"bids::{pet_file}", f"bids::{sessions_file}"],
        "Units": "g/mL" if facts.suv_kind != "bsa" else "cm2/mL",
        "SUVType": facts.suv_kind,
        "SUVFactor": facts.suv_factor_per_bqml,
        "SUVFactorUnits": "mL/Bq" if facts.suv_kind != "bsa" else "cm2 mL/(Bq g)",
        "BodyWeight": facts.weight_kg,
        "BodyWeightUnits": "kg",
        "BodyHeight": facts.height_m,
        "BodyHeightUnits": "m",
        "InjectedRadioactivity": facts.dose_mbq,
        "InjectedRadioactivityUnits": "MBq",
        "RadionuclideHalfLife": facts.half_life_s,
        "RadionuclideHalfLifeUnits": "s",
        "TimeZero": _time_text(facts.time_zero),
        "InjectionStart": facts.injection_start,
        "DecayTime": facts.decay_time,
        "DecayTimeUnits": "s",
        "DecayTimeReference": facts.decay_reference,
        "DecayCorrection": facts.decay_correction,
        "ImageDecayCorrectionTime": 0.0
        if facts.decay_correction != "ADMIN"
        else facts.injection_start,
        "SUVTimeReference": facts.time_reference,
        "DICOMSources": facts.sources,
    }
