"""Keyed pseudonyms: new UIDs and patient IDs from a secret key (HMAC-SHA256).

The same key gives the same replacement for the same value in every file and every run, so
the references between series (a SEG's referenced series and instances, the frame of
reference, source images) stay consistent; another key gives other values, and without the
key the originals cannot be found by trying candidates (an unkeyed hash could be: PS3.15
E.1.1 note 3).
"""

from __future__ import annotations

import hashlib
import hmac
from os import PathLike
from pathlib import Path

from petcorpus.errors import PetcorpusError, Reason

__all__ = ["MIN_KEY_BYTES", "keyed_digest", "load_key", "new_uid", "pseudonym"]

#: shortest key accepted (128 bits)
MIN_KEY_BYTES = 16
#: DICOM's root of UUID-derived UIDs (PS3.5 B.2)
_UUID_ROOT = "2.25."
#: the standard's own UIDs (SOP classes, transfer syntaxes, coding schemes) are not remapped
_STANDARD_ROOT = "1.2.840.10008."


def load_key(path: str | PathLike[str]) -> bytes:
    """The secret key held in a file (its bytes, surrounding whitespace stripped).

    Raises
    ------
    PetcorpusError
        The file cannot be read or holds fewer than :data:`MIN_KEY_BYTES` bytes.
    """
    p = Path(path)
    try:
        key = p.read_bytes().strip()
    except OSError as exc:
        raise PetcorpusError(f"cannot read the key: {exc.strerror or exc}", path=p) from exc
    if len(key) < MIN_KEY_BYTES:
        raise PetcorpusError(
            f"the key holds {len(key)} bytes, at least {MIN_KEY_BYTES} are needed "
            "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))' > KEYFILE`)",
            path=p,
            reason=Reason.INVALID_VALUE,
        )
    return key


def keyed_digest(key: bytes, purpose: str, value: str) -> bytes:
    """HMAC-SHA256 of ``purpose`` and ``value`` under ``key`` (purposes never collide)."""
    return hmac.new(key, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()


def new_uid(key: bytes, uid: str) -> str:
    """The replacement of a UID: ``2.25.<128-bit integer>`` from the keyed hash of ``uid``.

    UIDs of the standard itself (``1.2.840.10008.*``) are returned unchanged.

    >>> a = new_uid(b"k" * 16, "1.2.3.4")
    >>> a.startswith("2.25.") and len(a) <= 64 and a == new_uid(b"k" * 16, "1.2.3.4")
    True
    >>> a != new_uid(b"j" * 16, "1.2.3.4")
    True
    """
    uid = uid.strip().rstrip("\0")
    if not uid or uid.startswith(_STANDARD_ROOT):
        return uid
    return _UUID_ROOT + str(int.from_bytes(keyed_digest(key, "uid", uid)[:16], "big"))


def pseudonym(key: bytes, patient_id: str) -> str:
    """A new PatientID: ``anon-<12 hex digits>`` of the keyed hash of the original.

    >>> pseudonym(b"k" * 16, "12345")[:5]
    'anon-'
    """
    return "anon-" + keyed_digest(key, "patient", patient_id.strip()).hex()[:12]
