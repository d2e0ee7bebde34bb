"""DICOM PS3.15 Annex E, Table E.1-1 (Application Level Confidentiality Profile Attributes):
the actions of the Basic Profile and of the three options petcorpus applies, read from the
table kept as data in ``petcorpus/data/confidentiality_profile.json``.

Source: DICOM PS3.15 "Security and System Management Profiles", Annex E, Table E.1-1, as
published on 2024-09-19 (DICOM 2024d; part15 chapter E of the standard's HTML edition). The
rows are transcribed for the columns "Basic Prof.", "Rtn. Pat. Chars. Opt.", "Rtn. Long.
Modif. Dates Opt." and "Clean Desc. Opt." (``-``: the option says nothing of the attribute);
tests/test_deidentify.py checks a sample of rows against the standard's text. Neither pydicom
nor highdicom ships this table.

Action codes (PS3.15 E.1.1): D dummy value; Z zero length (or dummy); X remove; K keep; C
clean; U new UID, consistent within the set; Z/D, X/Z, X/D, X/Z/D: the first unless the IOD
needs the second (Type 3 vs 2 vs 1); X/Z/U*: remove unless the IOD needs the sequence, then
replace the UIDs it holds. A requirement of an option overrides the Basic Profile's.

Tag ``PRIVATE`` is every private attribute; ``50XXXXXX`` the curve groups, ``60XX4000`` and
``60XX3000`` the overlay comments and data (repeating groups, the ``X`` digits free).
"""

from __future__ import annotations

import enum
import functools
import json
from importlib import resources

__all__ = ["Action", "Option", "action_for", "actions", "table_rows"]


#: the table, one row per attribute (package data)
_DATA = "data/confidentiality_profile.json"


class Option(enum.IntEnum):
    """The table's columns petcorpus uses, in the order the table lists them."""

    BASIC = 0
    RETAIN_PATIENT_CHARACTERISTICS = 1
    RETAIN_LONGITUDINAL_MODIFIED_DATES = 2
    CLEAN_DESCRIPTORS = 3


class Action(enum.StrEnum):
    """The action codes of PS3.15 E.1.1."""

    D = "D"
    Z = "Z"
    X = "X"
    K = "K"
    C = "C"
    U = "U"
    Z_D = "Z/D"
    X_Z = "X/Z"
    X_D = "X/D"
    X_Z_D = "X/Z/D"
    X_Z_U = "X/Z/U*"


@functools.cache
def table_rows() -> list[tuple[str, tuple[str, str, str, str], str]]:
    """The rows as written: (tag text, the four columns' codes or ``-``, keyword)."""
    text = resources.files("petcorpus").joinpath(_DATA).read_text("utf-8")
    return [(r[0], (r[1], r[2], r[3], r[4]), r[5]) for r in json.loads(text)["rows"]]


@functools.cache
def actions() -> dict[str, tuple[Action | None, ...]]:
    """Tag text (``"00100010"``, ``"60XX3000"``, ``"PRIVATE"``) → each column's action."""
    return {
        tag: tuple(None if c == "-" else Action(c) for c in codes)
        for tag, codes, _ in table_rows()
    }


def _repeating(tag: int) -> str | None:
    group, elem = tag >> 16, tag & 0xFFFF
    if 0x5000 <= group <= 0x50FF and group % 2 == 0:
        return "50XXXXXX"
    if 0x6000 <= group <= 0x60FF and group % 2 == 0 and elem in (0x4000, 0x3000):
        return f"60XX{elem:04X}"
    return None


def action_for(tag: int, options: tuple[Option, ...] = tuple(Option)) -> Action | None:
    """The action on ``tag`` under the Basic Profile and ``options`` (None: not listed).

    The last listed option that names the attribute wins over the Basic Profile (options
    do not overlap on the attributes petcorpus uses).

    >>> action_for(0x00100010)  # PatientName
    <Action.Z: 'Z'>
    >>> action_for(0x00101030)  # PatientWeight: kept by Retain Patient Characteristics
    <Action.K: 'K'>
    >>> action_for(0x00080020)  # StudyDate: cleaned (shifted) by Modified Dates
    <Action.C: 'C'>
    """
    table = actions()
    row = table.get(f"{tag:08X}")
    if row is None:
        key = "PRIVATE" if (tag >> 16) % 2 == 1 else _repeating(tag)
        row = table.get(key) if key else None
    if row is None:
        return None
    chosen = row[Option.BASIC]
    for option in options:
        if option is not Option.BASIC and row[option] is not None:
            chosen = row[option]
    return chosen
