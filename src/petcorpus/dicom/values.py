"""DICOM values, read one way everywhere: dates and times, private tags, scan and injection
times, reconstruction iterations and subsets.

Dates and times are parsed by pydicom's own value types (:class:`pydicom.valuerep.DA`,
:class:`~pydicom.valuerep.TM`, :class:`~pydicom.valuerep.DT`), private elements are found
through :meth:`pydicom.dataset.Dataset.private_block` (by their creator's name, in whatever
slot the block sits). The SUV factors (:mod:`petcorpus.dicom.suv`), the scan's series
parameters (:mod:`petcorpus.dicom.scan`) and the exported tables (:mod:`petcorpus.tables`)
call these functions and nothing else, so that one header gives one answer.

The scan-time rule (:func:`scan_start`, QIBA/UCSF vendor-neutral pseudo-code)
    scan start = SeriesDate/SeriesTime, unless it is after the earliest
    AcquisitionDate/AcquisitionTime of the series (some scanners rewrite SeriesTime when a
    series is post-processed); then GE's private scan start (0009,100D) in block
    ``GEMS_PETD_01`` where present, else the earliest acquisition date-time.
The injection rule (:func:`injection_datetime`)
    RadiopharmaceuticalStartDateTime, else SeriesDate + RadiopharmaceuticalStartTime, one day
    earlier if that lands after the series time (injected before midnight, scanned after).
Uptake time = scan start − injection.
The tracer rule (:func:`tracer_info`)
    the radionuclide from RadionuclideCodeSequence (SNOMED, old SRT or new SCT codes), else
    from the words of its CodeMeaning or of Radiopharmaceutical; the tracer (``FDG``,
    ``PSMA``) from Radiopharmaceutical. :func:`half_life_conflict` compares what they name
    with RadionuclideHalfLife: SUV always decays with the header's half-life, and a header
    whose radionuclide and half-life disagree is flagged, never silently "fixed".
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any, Literal

from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM

__all__ = [
    "GE_SCAN_DATETIME",
    "HALF_LIFE_TOLERANCE",
    "PHILIPS_BQML_SCALE",
    "PHILIPS_SUV_SCALE",
    "RADIONUCLIDES",
    "PrivateTag",
    "ScanTime",
    "TracerInfo",
    "half_life_conflict",
    "injection_datetime",
    "parse_date_time",
    "parse_datetime",
    "private_value",
    "recon_iterations_subsets",
    "scan_start",
    "tracer_info",
]


@dataclasses.dataclass(frozen=True)
class PrivateTag:
    """A private element: its group, its block's creator and its offset in the block."""

    group: int
    creator: str
    offset: int
    #: how errors and sources name it, e.g. ``(0009,100D) GEMS_PETD_01 scan datetime``
    name: str

    def tags(self, slot: int = 0x10) -> tuple[tuple[int, int], tuple[int, int]]:
        """The creator's tag and the element's tag when the block sits in ``slot``."""
        return (self.group, slot), (self.group, (slot << 8) | self.offset)


#: GE's scan start (DT), the QIBA fallback when SeriesTime is after the acquisition
GE_SCAN_DATETIME = PrivateTag(
    0x0009, "GEMS_PETD_01", 0x0D, "(0009,100D) GEMS_PETD_01 scan datetime"
)
#: Philips: Bq/ml per count of a CNTS series
PHILIPS_BQML_SCALE = PrivateTag(
    0x7053,
    "Philips PET Private Group",
    0x09,
    "(7053,1009) Philips activity concentration scale factor",
)
#: Philips: SUVbw per count of a CNTS series
PHILIPS_SUV_SCALE = PrivateTag(
    0x7053, "Philips PET Private Group", 0x00, "(7053,1000) Philips SUV scale factor"
)


def private_value(ds: Dataset, tag: PrivateTag) -> Any:
    """The value of a private element found by its creator's name, or None.

    Text of an element pydicom's private dictionary does not know (implicit VR) comes as
    bytes: it is decoded and stripped of padding.
    """
    try:
        block = ds.private_block(tag.group, tag.creator)
    except (KeyError, ValueError):
        return None
    # pydicom caches a dataset's blocks, and a deep copy keeps the cache of the original
    # (pydicom 3.0): take the block's tags, read the values from ``ds`` itself.
    creator = ds.get((tag.group, block.block_start >> 8))
    elem = ds.get(block.get_tag(tag.offset))
    if creator is None or creator.value != tag.creator or elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace").strip("\x00 ")
    return value


# -- dates and times ---------------------------------------------------------------------------
def _tm_text(time: str) -> str:
    """A TM as pydicom reads it: ACR-NEMA colons removed, the fraction cut to microseconds."""
    t = time.strip().replace(":", "")
    head, _, frac = t.partition(".")
    return f"{head}.{frac[:6]}" if frac else head


def parse_date_time(date: Any, time: Any) -> dt.datetime | None:
    """A DICOM DA and TM as one naive datetime; None when either is empty or unreadable.

    >>> parse_date_time("20200131", "235959.5")
    datetime.datetime(2020, 1, 31, 23, 59, 59, 500000)
    >>> parse_date_time("20200131", "") is None
    True
    """
    if date is None or time is None:
        return None
    d_text, t_text = str(date).strip(), _tm_text(str(time))
    if len(d_text) != 8 or len(t_text) < 2:
        return None
    try:
        d, t = DA(d_text), TM(t_text)
    except (TypeError, ValueError):
        return None
    return dt.datetime.combine(d, t)


def parse_datetime(value: Any) -> dt.datetime | None:
    """A DICOM DT (``YYYYMMDDHHMMSS.FFFFFF&ZZXX``) as a naive datetime, the offset dropped.

    At least the hour is needed (a date alone is no time); None when unreadable.

    >>> parse_datetime("20200131083000.00+0100")
    datetime.datetime(2020, 1, 31, 8, 30)
    """
    if value is None:
        return None
    v = str(value).strip()
    for sign in ("+", "-"):
        if sign in v[8:]:
            v = v[: 8 + v[8:].index(sign)]
    if len(v) < 10 or not v[:8].isdigit():
        return None
    try:
        parsed = DT(v[:8] + _tm_text(v[8:]))
    except (TypeError, ValueError):
        return None
    return dt.datetime.combine(parsed.date(), parsed.time())


# -- the scan and the injection ----------------------------------------------------------------
ScanTime = Literal["series", "ge", "acquisition"]


def scan_start(
    series: dt.datetime | None,
    earliest_acquisition: dt.datetime | None,
    ge_scan: dt.datetime | None = None,
) -> ScanTime | None:
    """Which time is the scan start (the rule in the module docstring); None without any.

    >>> t = dt.datetime(2020, 1, 1, 10)
    >>> scan_start(t + dt.timedelta(minutes=40), t), scan_start(t, t), scan_start(None, t)
    ('acquisition', 'series', 'acquisition')
    """
    if series is not None and (earliest_acquisition is None or series <= earliest_acquisition):
        return "series"
    if ge_scan is not None:
        return "ge"
    if earliest_acquisition is not None:
        return "acquisition"
    return None


def injection_datetime(
    start_datetime: Any, start_time: Any, series: dt.datetime | None
) -> tuple[dt.datetime, Literal["datetime", "time"]] | None:
    """The injection time and which tag gave it (the rule in the module docstring).

    >>> injection_datetime(None, "233000", dt.datetime(2020, 1, 2, 0, 45))
    (datetime.datetime(2020, 1, 1, 23, 30), 'time')
    """
    parsed = parse_datetime(start_datetime) if start_datetime not in (None, "") else None
    if parsed is not None:
        return parsed, "datetime"
    if series is None or start_time in (None, ""):
        return None
    parsed = parse_date_time(series.strftime("%Y%m%d"), start_time)
    if parsed is None:
        return None
    if parsed > series:  # injected before midnight, scanned after
        parsed -= dt.timedelta(days=1)
    return parsed, "time"


# -- reconstruction ----------------------------------------------------------------------------
_ITER_SUBSETS = re.compile(
    r"(?<![\d.])(\d+)\s*(?:i|it|iter|iters|iterations?)\s*[/x,]?\s*"
    r"(\d+)\s*(?:s|ss|sub|subsets?)",
    re.IGNORECASE,
)


def recon_iterations_subsets(method: Any) -> tuple[int | None, int | None]:
    """Iterations and subsets written in a ReconstructionMethod, else ``(None, None)``.

    >>> [recon_iterations_subsets(m) for m in ("PSF+TOF 2i21s", "OSEM 3i/24s", "3i24s")]
    [(2, 21), (3, 24), (3, 24)]
    >>> recon_iterations_subsets("OSEM3D 4i21s"), recon_iterations_subsets("VPFX")
    ((4, 21), (None, None))
    >>> recon_iterations_subsets("OSEM 3 iterations 24 subsets")
    (3, 24)
    """
    if not method:
        return None, None
    m = _ITER_SUBSETS.search(str(method))
    if m is None:
        return None, None
    return int(m.group(1)), int(m.group(2))


# -- tracer and radionuclide -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Radionuclide:
    """A PET radionuclide: its name, half-life (s) and SNOMED codes (SRT, SCT)."""

    name: str
    half_life_s: float
    codes: tuple[str, ...]
    #: words that name it in free text (lower case, matched as a regular expression)
    pattern: str


#: Half-lives from NNDC/ENSDF (F-18 109.77 min, Ga-68 67.71 min, C-11 20.364 min, ...);
#: codes as in DICOM CID 4020 (pydicom ``codes.SCT``) and their old SRT values
RADIONUCLIDES: dict[str, Radionuclide] = {
    r.name: r
    for r in (
        Radionuclide(
            "F-18", 6586.2, ("C-111A1", "77004003"), r"\b(?:f\W?18|18\W{0,2}f)\b|fluorine"
        ),
        Radionuclide(
            "Ga-68", 4062.6, ("C-131A3", "35337001"), r"\b(?:ga\W?68|68\W{0,2}ga)|gallium"
        ),
        Radionuclide(
            "C-11", 1221.84, ("C-105A1", "40565003"), r"\b(?:c\W?11|11\W{0,2}c)\b|carbon"
        ),
        Radionuclide(
            "N-13", 597.9, ("C-107A1", "21576001"), r"\b(?:n\W?13|13\W{0,2}n)\b|nitrogen"
        ),
        Radionuclide(
            "O-15", 122.24, ("C-B1038", "129504001"), r"\b(?:o\W?15|15\W{0,2}o)\b|oxygen"
        ),
        Radionuclide(
            "Rb-82", 75.45, ("C-159A2", "79197006"), r"\b(?:rb\W?82|82\W{0,2}rb)|rubidium"
        ),
        Radionuclide(
            "Cu-64", 45721.1, ("C-127A2", "3932008"), r"\b(?:cu\W?64|64\W{0,2}cu)|copper"
        ),
        Radionuclide(
            "Zr-89", 282276.0, ("C-168A4", "63360001"), r"\b(?:zr\W?89|89\W{0,2}zr)|zirconium"
        ),
    )
}
#: relative difference between RadionuclideHalfLife and the named radionuclide's half-life
#: that counts as a contradiction (headers round; F-18 and Ga-68 differ by 38 %)
HALF_LIFE_TOLERANCE = 0.05
_TRACERS = (
    ("FDG", r"\bfdg\b|fluorodeoxyglucose|fludeoxyglucose|deoxy\W?glucose"),
    ("PSMA", r"psma|pyl\b|piflufolastat|gozetotide|flotufolastat"),
)
#: the radionuclide a tracer's name implies (FDG is always F-18; PSMA-11 Ga-68; ...)
_IMPLIED = (
    (
        "F-18",
        r"\bfdg\b|fluorodeoxyglucose|fludeoxyglucose|psma\W?1007|pyl\b|piflufolastat"
        r"|flotufolastat",
    ),
    ("Ga-68", r"psma\W?11\b|psma\W?hbed|gozetotide"),
)


@dataclasses.dataclass(frozen=True)
class TracerInfo:
    """What a PET header says it was: the tracer family and the radionuclide, with where
    each reading came from (None where the header does not say)."""

    tracer: str | None
    radionuclide: str | None
    #: the radionuclide named by RadionuclideCodeSequence, and by the free text
    radionuclide_from_code: str | None
    radionuclide_from_text: str | None
    radiopharmaceutical: str | None


def _nuclide_in_text(text: str | None) -> str | None:
    if not text:
        return None
    t = text.lower()
    for r in RADIONUCLIDES.values():
        if re.search(r.pattern, t):
            return r.name
    for name, pattern in _IMPLIED:
        if re.search(pattern, t):
            return name
    return None


def tracer_info(rp: Dataset | None) -> TracerInfo:
    """The tracer and radionuclide of the first item of RadiopharmaceuticalInformationSequence.

    >>> from pydicom import Dataset
    >>> rp = Dataset(); rp.Radiopharmaceutical = "PSMA-11"
    >>> code = Dataset(); code.CodeValue = "C-131A3"; code.CodeMeaning = "^68^Gallium"
    >>> rp.RadionuclideCodeSequence = [code]
    >>> i = tracer_info(rp); (i.tracer, i.radionuclide)
    ('PSMA', 'Ga-68')
    >>> rp.Radiopharmaceutical = "Fluorodeoxyglucose"; del rp.RadionuclideCodeSequence
    >>> i = tracer_info(rp); (i.tracer, i.radionuclide)
    ('FDG', 'F-18')
    """
    if rp is None:
        return TracerInfo(None, None, None, None, None)
    text = str(rp.get("Radiopharmaceutical", "") or "").strip() or None
    from_code = None
    seq = rp.get("RadionuclideCodeSequence")
    if seq:
        item = seq[0]
        value = str(item.get("CodeValue", "") or "").strip()
        from_code = next((r.name for r in RADIONUCLIDES.values() if value in r.codes), None)
        if from_code is None:
            from_code = _nuclide_in_text(str(item.get("CodeMeaning", "") or ""))
    from_text = _nuclide_in_text(text)
    tracer = None
    if text:
        low = text.lower()
        tracer = next((name for name, pat in _TRACERS if re.search(pat, low)), None)
    return TracerInfo(tracer, from_code or from_text, from_code, from_text, text)


def half_life_conflict(info: TracerInfo, half_life_s: float | None) -> str | None:
    """Why the header's RadionuclideHalfLife contradicts its radionuclide, or None.

    >>> info = TracerInfo("PSMA", "Ga-68", "Ga-68", "Ga-68", "PSMA-11")
    >>> half_life_conflict(info, 4062.6) is None
    True
    >>> print(half_life_conflict(info, 6586.2))  # doctest: +NORMALIZE_WHITESPACE
    (0018,1075) RadionuclideHalfLife = 6586.2 s contradicts the radionuclide Ga-68 named by
    RadionuclideCodeSequence (half-life 4062.6 s; it is that of F-18)
    """
    if half_life_s is None or not half_life_s > 0:
        return None
    named = []
    if info.radionuclide_from_code:
        named.append((info.radionuclide_from_code, "RadionuclideCodeSequence"))
    if info.radionuclide_from_text and info.radionuclide_from_text != info.radionuclide_from_code:
        named.append(
            (info.radionuclide_from_text, f"Radiopharmaceutical {info.radiopharmaceutical!r}")
        )
    for name, where in named:
        ref = RADIONUCLIDES[name].half_life_s
        if abs(half_life_s - ref) / ref > HALF_LIFE_TOLERANCE:
            match = next(
                (
                    r.name
                    for r in RADIONUCLIDES.values()
                    if abs(half_life_s - r.half_life_s) / r.half_life_s <= HALF_LIFE_TOLERANCE
                ),
                None,
            )
            hint = f"; it is that of {match}" if match else ""
            return (
                f"(0018,1075) RadionuclideHalfLife = {half_life_s:g} s contradicts the "
                f"radionuclide {name} named by {where} (half-life {ref:g} s{hint})"
            )
    if (
        info.radionuclide_from_code
        and info.radionuclide_from_text
        and (info.radionuclide_from_code != info.radionuclide_from_text)
    ):
        return (
            f"RadionuclideCodeSequence names {info.radionuclide_from_code} but "
            f"Radiopharmaceutical {info.radiopharmaceutical!r} names {info.radionuclide_from_text}"
        )
    return None
