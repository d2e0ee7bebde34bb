"""Whole-day date shifts (PS3.15 E.3.6, Retain Longitudinal Temporal Information with
Modified Dates): every date and date-time of a patient moves by the same number of days,
times of day stay as they are, so every interval (injection to scan, study to study) is kept.
"""

from __future__ import annotations

import datetime as dt
import re

from petcorpus.deid.uids import keyed_digest

__all__ = ["AUTO_SHIFT_RANGE", "auto_shift_days", "shift_da", "shift_dt"]

#: ``--date-shift auto`` moves each patient back by 1 to 10 years (a keyed, whole-day amount)
AUTO_SHIFT_RANGE = (365, 3650)
_DA = re.compile(r"^\d{8}$")


def auto_shift_days(key: bytes, patient_id: str) -> int:
    """The patient's shift in days (negative: into the past), from the key and the ID.

    >>> d = auto_shift_days(b"k" * 16, "P1")
    >>> -3650 <= d <= -365 and d == auto_shift_days(b"k" * 16, "P1")
    True
    """
    lo, hi = AUTO_SHIFT_RANGE
    n = int.from_bytes(keyed_digest(key, "date-shift", patient_id.strip())[:8], "big")
    return -(lo + n % (hi - lo + 1))


def _shift_date(text: str, days: int) -> str | None:
    if not _DA.match(text):
        return None
    try:
        day = dt.datetime.strptime(text, "%Y%m%d").date()
        return (day + dt.timedelta(days=days)).strftime("%Y%m%d")
    except (ValueError, OverflowError):
        return None


def shift_da(value: str, days: int) -> str:
    """A DA value (also a range ``A-B`` or ``A-`` / ``-B``) shifted by ``days``.

    A value that is not a full date is emptied (it cannot be shifted, so it is not kept).

    >>> shift_da("20200301", -1), shift_da("20200101-20200105", 2), shift_da("2020", 3)
    ('20200229', '20200103-20200107', '')
    """
    text = value.strip()
    if "-" in text:
        parts = text.split("-")
        if len(parts) != 2:
            return ""
        shifted = [(_shift_date(p, days) if p else "") for p in parts]
        return "" if None in shifted or not any(shifted) else f"{shifted[0]}-{shifted[1]}"
    return _shift_date(text, days) or ""


def shift_dt(value: str, days: int) -> str:
    """A DT value shifted by whole days: the date part moves, the time and offset stay.

    A value without a full date (``YYYY``, ``YYYYMM``) is emptied.

    >>> shift_dt("20200101083000.00+0100", -2)
    '20191230083000.00+0100'
    """
    text = value.strip()
    head = _shift_date(text[:8], days)
    return "" if head is None else head + text[8:]
