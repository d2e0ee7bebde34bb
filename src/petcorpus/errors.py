"""Exceptions raised by petcorpus.

Every error carries the file (or study) it concerns and a machine-readable
:class:`Reason`, so a batch run can record failures per study and count them by
cause. Messages are one line and say what to do where that is known.
"""

from __future__ import annotations

import enum
from os import PathLike

__all__ = [
    "ChecksumError",
    "CorruptFileError",
    "DownloadError",
    "GeometryMismatchError",
    "MissingDependencyError",
    "MissingTagError",
    "OutputPathError",
    "PetcorpusError",
    "Reason",
    "SegReferenceError",
    "SliceGapError",
    "UnsafeArchiveError",
    "UnsupportedError",
    "printable",
]


def printable(text: str) -> str:
    """``text`` with the undecodable bytes of file names shown as ``\\xNN``.

    Python decodes a file name that is not UTF-8 with surrogate escapes, which cannot be
    printed to a UTF-8 terminal, stored in SQLite or written as JSON; errors, the catalog and
    sidecars name such a file this way instead (``caf\\xe9.dcm`` for Latin-1 ``café.dcm``).
    """
    if text.isascii():
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no file name decoded to
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


class Reason(enum.StrEnum):
    """Stable reason codes, stored in the catalog's failures table."""

    MISSING_TAG = "MISSING_TAG"
    INVALID_VALUE = "INVALID_VALUE"
    SLICE_GAP = "SLICE_GAP"
    DUPLICATE_SLICE = "DUPLICATE_SLICE"
    GEOMETRY_MISMATCH = "GEOMETRY_MISMATCH"
    SEG_REFERENCE = "SEG_REFERENCE"
    CORRUPT_FILE = "CORRUPT_FILE"
    NO_SERIES = "NO_SERIES"
    DOWNLOAD = "DOWNLOAD"
    CHECKSUM = "CHECKSUM"
    UNSUPPORTED = "UNSUPPORTED"
    UNSAFE_ARCHIVE = "UNSAFE_ARCHIVE"
    #: slice positions step sideways, not along the image normal (a tilted CT gantry)
    GANTRY_TILT = "GANTRY_TILT"
    #: two studies would be written to one output folder (see petcorpus.naming)
    OUTPUT_COLLISION = "OUTPUT_COLLISION"
    #: a file under the input root that was not read as a DICOM image (listed, not fatal)
    SKIPPED_FILE = "SKIPPED_FILE"
    MISSING_DEPENDENCY = "MISSING_DEPENDENCY"
    OUTPUT_PATH = "OUTPUT_PATH"
    SCHEDULER = "SCHEDULER"


class PetcorpusError(Exception):
    """Root of all petcorpus errors.

    Parameters
    ----------
    message : str
        What is wrong, as a sentence.
    path : str or PathLike, optional
        The file or folder the error is about; prefixed to the message.
    reason : Reason, optional
        Machine-readable cause; subclasses set a default.
    """

    default_reason: Reason = Reason.INVALID_VALUE

    def __init__(
        self,
        message: str,
        path: str | PathLike[str] | None = None,
        reason: Reason | None = None,
    ) -> None:
        self.message = printable(message)
        self.path = None if path is None else printable(str(path))
        self.reason = Reason(reason) if reason is not None else self.default_reason
        super().__init__(f"{self.path}: {self.message}" if self.path else self.message)

    def __reduce__(self) -> tuple[type[PetcorpusError], tuple[str, str | None, Reason]]:
        # Exception pickles ``args`` (the joined text): rebuild from the parts instead, so
        # an error returned by a worker process keeps its path and reason.
        return (type(self), (self.message, self.path, self.reason))


class MissingTagError(PetcorpusError, KeyError):
    """A DICOM attribute needed for the result is absent or empty."""

    default_reason = Reason.MISSING_TAG

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


class SliceGapError(PetcorpusError, ValueError):
    """Slices of a series are not uniformly spaced (a gap or a duplicate position)."""

    default_reason = Reason.SLICE_GAP


class GeometryMismatchError(PetcorpusError, ValueError):
    """Images that must share a grid or an orientation do not."""

    default_reason = Reason.GEOMETRY_MISMATCH


class SegReferenceError(PetcorpusError, ValueError):
    """A DICOM SEG references another series or frame of reference than the image."""

    default_reason = Reason.SEG_REFERENCE


class CorruptFileError(PetcorpusError, ValueError):
    """A file cannot be parsed (truncated, zero bytes, not DICOM, ...)."""

    default_reason = Reason.CORRUPT_FILE


class UnsupportedError(PetcorpusError, ValueError):
    """Input that petcorpus recognises but does not handle (say, Units it cannot convert)."""

    default_reason = Reason.UNSUPPORTED


class DownloadError(PetcorpusError, OSError):
    """A transfer failed after its retries."""

    default_reason = Reason.DOWNLOAD


class UnsafeArchiveError(DownloadError):
    """An archive refused before or while unpacking (link, escape, special file, bomb)."""

    default_reason = Reason.UNSAFE_ARCHIVE


class ChecksumError(PetcorpusError, ValueError):
    """A file's size or checksum differs from the expected one."""

    default_reason = Reason.CHECKSUM


class MissingDependencyError(PetcorpusError, ImportError):
    """An optional dependency is not installed (or too old); the message names the extra."""

    default_reason = Reason.MISSING_DEPENDENCY


class OutputPathError(PetcorpusError, OSError):
    """An output file or folder cannot be written: a file where a folder must be, no write
    permission, a read-only or full disk."""

    default_reason = Reason.OUTPUT_PATH
