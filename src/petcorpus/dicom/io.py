"""Reading one DICOM file: the whole dataset, or the header elements an index needs.

Every reader in :mod:`petcorpus.dicom` opens files through here, so that a damaged file
(zero bytes, unreadable, not a regular file, not DICOM, truncated) is reported the same
way everywhere: a :class:`~petcorpus.errors.CorruptFileError` naming the file and the reason.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from petcorpus.errors import CorruptFileError

__all__ = [
    "DICOMDIR_SOP_CLASS",
    "cannot_parse",
    "check_file",
    "get_value",
    "os_error",
    "read_dataset",
    "read_header",
]

_NOT_DICOM = "not a DICOM file (no DICM marker and no DICOM header)"
#: Media Storage Directory Storage: a DICOMDIR (an index of the files, not an image)
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian


def cannot_parse(exc: Exception) -> str:
    """The skip/failure reason of a file pydicom cannot parse (one line)."""
    return f"cannot parse as DICOM ({type(exc).__name__}: {' '.join(str(exc).split())})"


def get_value(ds: Dataset | None, keyword: str) -> Any:
    """``ds.get(keyword)``, or None when pydicom cannot convert the element (a damaged
    header: an index leaves the value out; loading the series names the file)."""
    if ds is None:
        return None
    try:
        return ds.get(keyword)
    except Exception:
        return None


def read_dataset(path: str | PathLike[str], *, stop_before_pixels: bool = False) -> Dataset:
    """Read one DICOM file, also without preamble/file meta (implicit or explicit VR).

    Raises
    ------
    CorruptFileError
        Zero bytes, unreadable (with the OS error), not DICOM, or truncated before the
        header ends.
    """
    p = Path(path)
    check_file(p)
    try:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError:
            # No 128-byte preamble / 'DICM' / file meta: a "headerless" dataset. It must start
            # with a little-endian element of group 0002..0008 (checked before forcing pydicom,
            # which would otherwise "parse" any file).
            with open(p, "rb") as fh:
                head = fh.read(136)
            if head[132:134] == b"\x02\x00" and head[128:132] != b"DICM":
                # a file meta element right after the preamble: a DICOM file whose marker
                # is damaged (not some other file, which the scan would pass over)
                marker = head[128:132]
                raise CorruptFileError(
                    f"cannot parse as DICOM (its DICM marker at byte 128 reads {marker!r})",
                    path=p,
                ) from None
            group = int.from_bytes(head[:2], "little") if len(head) >= 8 else -1
            if not 0x0002 <= group <= 0x0008:
                raise CorruptFileError(_NOT_DICOM, path=p) from None
            ds = pydicom.dcmread(p, stop_before_pixels=stop_before_pixels, force=True)
            if "SOPClassUID" not in ds and "SeriesInstanceUID" not in ds:
                raise CorruptFileError(_NOT_DICOM, path=p) from None
    except CorruptFileError:
        raise
    except OSError as exc:
        raise CorruptFileError(f"unreadable: {os_error(exc)}", path=p) from exc
    except Exception as exc:  # pydicom raises many types on truncated/garbled input
        raise CorruptFileError(cannot_parse(exc), path=p) from exc
    _ensure_transfer_syntax(ds)
    return ds


def os_error(exc: OSError) -> str:
    """An OS error as ``[Errno 13] Permission denied`` (the path is named separately)."""
    if exc.errno is not None and exc.strerror:
        return f"[Errno {exc.errno}] {exc.strerror}"
    return str(exc) or type(exc).__name__


def check_file(path: Path) -> int:
    """The size of a file that can be opened as DICOM, or the reason it cannot.

    Checked before any read: a FIFO or a device would block ``open`` or never end.

    Raises
    ------
    CorruptFileError
        Unreadable (the OS error: missing, dangling link, permission), not a regular file,
        or zero bytes.
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise CorruptFileError(f"unreadable: {os_error(exc)}", path=path) from exc
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO, socket or device"
        raise CorruptFileError(f"not a regular file ({kind})", path=path)
    if st.st_size == 0:
        raise CorruptFileError("zero bytes (an empty file)", path=path)
    return st.st_size


def _ensure_transfer_syntax(ds: Dataset) -> None:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    if implicit is None:
        implicit, little = True, True
    if meta is None:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian
        if implicit
        else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    )


def read_header(path: Path, specific_tags: Sequence[int]) -> Dataset:
    """The header elements ``specific_tags`` of one file (pixel data not read).

    A file without preamble/file meta is read whole by :func:`read_dataset` (header only).

    Raises
    ------
    CorruptFileError
        Zero bytes, unreadable (with the OS error), not a regular file, not DICOM, or
        truncated: the file ends inside its header (before the pixel data of an image, or
        before the UIDs).
    """
    size = check_file(path)
    tags = list(specific_tags)
    try:
        with open(path, "rb") as fh:
            try:
                ds = pydicom.dcmread(fh, stop_before_pixels=True, specific_tags=tags)
            except InvalidDicomError:
                return read_dataset(path, stop_before_pixels=True)
            # pydicom stops silently at the end of the file; reading stops before the
            # pixel data of an intact image, so an image header that reaches the end (or
            # a header without its UIDs) was cut short.
            end = fh.tell()
    except CorruptFileError:
        raise
    except OSError as exc:
        raise CorruptFileError(f"unreadable: {os_error(exc)}", path=path) from exc
    except Exception as exc:
        raise CorruptFileError(cannot_parse(exc), path=path) from exc
    meta = getattr(ds, "file_meta", None)
    # A deflated dataset is inflated whole before it is parsed: the file is read to its end
    # (a deflated file cut short fails to inflate instead).
    deflated = meta is not None and meta.get("TransferSyntaxUID") == _DEFLATED
    if end >= size and not deflated:
        dicomdir = meta is not None and meta.get("MediaStorageSOPClassUID") == DICOMDIR_SOP_CLASS
        no_uids = not get_value(ds, "SeriesInstanceUID") or not get_value(ds, "StudyInstanceUID")
        if not dicomdir and ("Rows" in ds or no_uids):
            what = "the pixel data" if not no_uids else "its StudyInstanceUID/SeriesInstanceUID"
            raise CorruptFileError(
                f"truncated: the file ends after {size} bytes, inside its DICOM header, "
                f"before {what}",
                path=path,
            )
    return ds
