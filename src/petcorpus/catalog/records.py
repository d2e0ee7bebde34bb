"""Plain, picklable records a worker returns and the catalog stores: artifacts, failures,
verification issues; and the file hash they carry."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import sqlite3
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from petcorpus.errors import CorruptFileError, PetcorpusError, printable

__all__ = [
    "ArtifactRecord",
    "FailureRecord",
    "VerifyIssue",
    "VerifyReport",
    "artifact_record",
    "hash_file",
]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _version() -> str:
    from petcorpus import __version__

    return __version__


def hash_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (:func:`hashlib.file_digest`).

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = pathlib.Path(d, "x"); _ = p.write_bytes(b"abc")
    ...     hash_file(p)[:16]
    'ba7816bf8f01cfea'
    """
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@dataclasses.dataclass(frozen=True)
class ArtifactRecord:
    """One file a build wrote: what the catalog stores about it.

    Picklable, so a worker can compute it (hashing in the worker's process) and return it.

    Attributes
    ----------
    kind : str
        ``CT``, ``PET``, ``SUV``, ``CTres``, ``SEG``, ``HDF5``, ``sidecar`` ...
    path : str
        POSIX path relative to the output folder.
    sha256 : str
        Hex digest of the file's bytes.
    bytes : int
        File size.
    dtype : str or None
        Voxel dtype (numpy name) for images.
    shape, spacing : tuple or None
        Voxel grid (I, J, K) and voxel size in mm, for images.
    mtime_ns : int or None
        The file's modification time when it was recorded (None in older catalogs).
    """

    kind: str
    path: str
    sha256: str
    bytes: int
    dtype: str | None = None
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    mtime_ns: int | None = None


def artifact_record(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    kind: str,
    *,
    dtype: str | None = None,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    sha256: str | None = None,
) -> ArtifactRecord:
    """Hash ``path`` and describe it relative to ``out_dir``.

    A ``sha256`` computed while the file was written (see
    :func:`petcorpus.nifti.write_nifti_sha256`) spares reading it back.

    For NIfTI files the dtype, shape and spacing are read from the header (no voxel data)
    unless given.

    Raises
    ------
    PetcorpusError
        If ``path`` is not inside ``out_dir`` (reason ``INVALID_VALUE``).
    """
    p = Path(path).resolve()
    root = Path(out_dir).resolve()
    try:
        rel = p.relative_to(root).as_posix()
    except ValueError:
        raise PetcorpusError(f"artifact is not inside the output folder {root}", path=p) from None
    if dtype is None and p.name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        try:
            img = cast("nib.Nifti1Image", nib.load(p))
        except (OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
            raise CorruptFileError(f"not a readable NIfTI file: {exc}", path=p) from exc
        hdr = img.header
        dtype = str(hdr.get_data_dtype().newbyteorder("="))
        shape = tuple(int(s) for s in img.shape) if shape is None else shape
        spacing = tuple(float(z) for z in hdr.get_zooms()[:3]) if spacing is None else spacing
    stat = p.stat()
    return ArtifactRecord(
        kind=kind,
        path=rel,
        sha256=sha256 or hash_file(p),
        bytes=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        dtype=None if dtype is None else str(dtype),
        shape=None if shape is None else tuple(int(s) for s in shape),
        spacing=None if spacing is None else tuple(float(s) for s in spacing),
    )


@dataclasses.dataclass(frozen=True)
class FailureRecord:
    """A failed stage of one study, as plain data a worker can return instead of raising."""

    study_uid: str | None
    stage: str
    error_class: str
    reason: str
    message: str
    path: str | None = None

    @classmethod
    def from_exception(
        cls, study_uid: str | None, stage: str, exc: BaseException
    ) -> FailureRecord:
        """Summarise ``exc``; reason is the PetcorpusError's code, else ``UNEXPECTED``.

        A wrapped error is judged by its innermost cause: the deepest PetcorpusError along
        ``__cause__`` (and ``__context__``, unless suppressed with ``from None``) gives the
        reason, the path and the message, whatever wraps it.
        """
        inner: PetcorpusError | None = None
        seen: set[int] = set()
        cur: BaseException | None = exc
        while cur is not None and id(cur) not in seen:
            seen.add(id(cur))
            if isinstance(cur, PetcorpusError):
                inner = cur
            cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
        if inner is not None:
            exc = inner
            reason, path, msg = str(inner.reason), inner.path, inner.message
        else:
            reason, path = "UNEXPECTED", None
            msg = printable("".join(traceback.format_exception_only(type(exc), exc)).strip())
        return cls(
            study_uid=study_uid,
            stage=stage,
            error_class=type(exc).__name__,
            reason=reason,
            message=str(msg).splitlines()[0] if msg else type(exc).__name__,
            path=path,
        )


@dataclasses.dataclass(frozen=True)
class VerifyIssue:
    """One artifact that failed verification."""

    study_uid: str | None
    kind: str
    path: str
    problem: str  # "missing", "size", "sha256"
    expected: str
    actual: str


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    """Result of re-hashing every catalogued artifact."""

    checked: int
    issues: tuple[VerifyIssue, ...]

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def missing(self) -> tuple[VerifyIssue, ...]:
        return tuple(i for i in self.issues if i.problem == "missing")

    @property
    def mismatched(self) -> tuple[VerifyIssue, ...]:
        return tuple(i for i in self.issues if i.problem != "missing")


def _row_to_record(row: sqlite3.Row) -> ArtifactRecord:
    return ArtifactRecord(
        kind=row["kind"],
        path=row["path"],
        sha256=row["sha256"],
        bytes=int(row["bytes"]),
        dtype=row["dtype"],
        shape=None if row["shape"] is None else tuple(json.loads(row["shape"])),
        spacing=None if row["spacing"] is None else tuple(json.loads(row["spacing"])),
        # (a read-only catalog of schema < 5 has no such column)
        mtime_ns=row["mtime_ns"] if "mtime_ns" in row.keys() else None,  # noqa: SIM118 (a Row iterates its values)
    )


def _check(
    out_dir: Path, rec: ArtifactRecord, rehash: bool, trust_mtime: bool = False
) -> VerifyIssue | None:
    """What is wrong with one artifact: missing, another size, or (``rehash``) another
    SHA-256. ``trust_mtime``: a file with its recorded size and mtime is not re-hashed."""
    p = out_dir / rec.path
    try:
        st = p.stat()
    except FileNotFoundError:
        return VerifyIssue(None, rec.kind, rec.path, "missing", rec.sha256, "")
    if st.st_size != rec.bytes:
        return VerifyIssue(None, rec.kind, rec.path, "size", str(rec.bytes), str(st.st_size))
    if trust_mtime and rec.mtime_ns is not None and st.st_mtime_ns == rec.mtime_ns:
        return None
    if rehash:
        digest = hash_file(p)
        if digest != rec.sha256:
            return VerifyIssue(None, rec.kind, rec.path, "sha256", rec.sha256, digest)
    return None
