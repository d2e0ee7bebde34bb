"""Find patient identifiers in a corpus: DICOM headers, NIfTI headers, JSON, HDF5, the catalog,
any other file's bytes, and file and folder names.

The identifiers come from the source DICOM tree (:func:`identifiers_from_source`: names, IDs,
birth date, accession number, institution, physicians... of every file, see
:data:`IDENTIFYING_KEYWORDS`) or from a list (:func:`identifiers_from_list`). A person's name
is also searched component by component (``Doe^Jane`` → ``Doe``, ``Jane``), every search
ignores case, and bytes are searched as UTF-8, Latin-1 and UTF-16. Values shorter than
:data:`MIN_LENGTH` characters are not searched (they would match everywhere).

:class:`Matcher` is also what :mod:`petcorpus.deid.dataset` cleans descriptions with, so what
``deidentify`` cuts out is exactly what ``phi-check`` looks for.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from petcorpus.atomic import TEMP_PREFIX
from petcorpus.errors import PetcorpusError, printable

__all__ = [
    "IDENTIFYING_KEYWORDS",
    "MIN_LENGTH",
    "Hit",
    "Identifier",
    "Matcher",
    "identifiers_from_list",
    "identifiers_from_source",
    "identifiers_of",
    "phi_check",
]

#: attributes whose values identify the patient or the people and places of the study
IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "OtherPatientIDs",
    "OtherPatientNames",
    "IssuerOfPatientID",
    "MedicalRecordLocator",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "ReferringPhysicianAddress",
    "PhysiciansOfRecord",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician",
    "OperatorsName",
    "ResponsiblePerson",
    "StationName",
)
#: shortest identifier (or name component) searched
MIN_LENGTH = 3
_PN = frozenset({"PatientName", "PatientBirthName", "PatientMotherBirthName", "OtherPatientNames"})


@dataclasses.dataclass(frozen=True, order=True)
class Identifier:
    """A value to look for, and what it is (``PatientName``, ``listed``...)."""

    text: str
    kind: str


@dataclasses.dataclass(frozen=True, order=True)
class Hit:
    """An identifier found: the file (relative to the checked root), the place in it, the kind."""

    path: str
    place: str
    kind: str

    def __str__(self) -> str:
        return f"{self.path} {self.place}: {self.kind}"


def _components(value: str) -> list[str]:
    return [p for p in re.split(r"[\^=,\s]+", value) if p]


def identifiers_of(ds: Dataset) -> list[Identifier]:
    """The identifying values of a header (nested sequences included), names also split."""
    found: set[Identifier] = set()

    def visit(d: Dataset) -> None:
        for elem in d:
            if elem.VR == "SQ":
                for item in elem.value or []:
                    visit(item)
                continue
            kw = elem.keyword
            if kw not in IDENTIFYING_KEYWORDS or elem.value in (None, ""):
                continue
            values = elem.value if elem.VM > 1 else [elem.value]
            for v in values:
                text = v.decode("latin-1") if isinstance(v, bytes) else str(v)
                text = text.strip("\0 ")
                kind = kw
                if kw.endswith("Name") or kw in _PN or "Physician" in kw or kw == "OperatorsName":
                    for part in _components(text):
                        found.add(Identifier(part, f"{kind} component"))
                found.add(Identifier(text, kind))
                if kw == "PatientBirthDate" and re.fullmatch(r"\d{8}", text):
                    found.add(Identifier(f"{text[:4]}-{text[4:6]}-{text[6:]}", kind))

    visit(ds)
    return sorted(i for i in found if len(i.text) >= MIN_LENGTH)


class Matcher:
    """Finds any of a set of identifiers in texts and bytes, ignoring case."""

    def __init__(self, identifiers: Iterable[Identifier]) -> None:
        kinds: dict[str, str] = {}
        for ident in sorted(identifiers, key=lambda i: (-len(i.text), i.kind)):
            if len(ident.text) >= MIN_LENGTH:
                kinds.setdefault(ident.text.casefold(), ident.kind)
        self._kinds = kinds
        words = sorted(kinds, key=len, reverse=True)
        self._text = re.compile("|".join(map(re.escape, words)), re.IGNORECASE) if words else None
        raw: dict[bytes, str] = {}
        for word, kind in kinds.items():
            for variant in {word, word.upper(), word.title()}:
                for codec in ("utf-8", "latin-1", "utf-16-le", "utf-16-be"):
                    try:
                        raw.setdefault(variant.encode(codec).lower(), kind)
                    except UnicodeEncodeError:
                        continue
        self._bytes_kinds = raw
        patterns = sorted(raw, key=len, reverse=True)
        self._bytes = (
            re.compile(b"|".join(map(re.escape, patterns)), re.IGNORECASE) if raw else None
        )

    def __bool__(self) -> bool:
        return self._text is not None

    def find(self, text: str) -> list[str]:
        """The kinds of the identifiers in ``text``."""
        if self._text is None or not text:
            return []
        return [
            self._kinds.get(m.group(0).casefold(), "identifier") for m in self._text.finditer(text)
        ]

    def find_bytes(self, data: bytes) -> list[str]:
        """The kinds of the identifiers in ``data`` (any of the encodings)."""
        if self._bytes is None or not data:
            return []
        return [
            self._bytes_kinds.get(m.group(0).lower(), "identifier")
            for m in self._bytes.finditer(data)
        ]

    def clean(self, text: str, mark: str = "X") -> str:
        """``text`` with every identifier replaced by ``mark``."""
        if self._text is None or not text:
            return text
        return self._text.sub(mark, text)


# -- where the identifiers come from -------------------------------------------------------
def _files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(TEMP_PREFIX))
        for name in sorted(filenames):
            if not name.startswith(TEMP_PREFIX):
                yield Path(dirpath) / name


def identifiers_from_source(root: str | os.PathLike[str]) -> list[Identifier]:
    """Every identifying value (:data:`IDENTIFYING_KEYWORDS`) in the DICOM files under
    ``root``, plus the study, series and frame-of-reference UIDs (a UID carried over unchanged
    links a file to its source). Files that are not DICOM are passed over."""
    from petcorpus.dicom.io import read_dataset

    found: set[Identifier] = set()
    for path in _files(Path(root)):
        try:
            ds = read_dataset(path, stop_before_pixels=True)
        except PetcorpusError:
            continue
        found.update(identifiers_of(ds))
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            uid = ds.get(kw)
            if uid:
                found.add(Identifier(str(uid), kw))
    return sorted(found)


def identifiers_from_list(path: str | os.PathLike[str]) -> list[Identifier]:
    """Identifiers listed in a text file, one per line (``#`` comments and blank lines
    skipped; a DICOM name ``Doe^Jane`` is also searched by component)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PetcorpusError(f"cannot read the identifier list: {exc}", path=p) from exc
    out: set[Identifier] = set()
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        out.add(Identifier(text, "listed"))
        if "^" in text:
            out.update(Identifier(c, "listed name component") for c in _components(text))
    return sorted(i for i in out if len(i.text) >= MIN_LENGTH)


# -- where they are looked for -------------------------------------------------------------
def _dicom_places(ds: Dataset, prefix: str = "") -> Iterator[tuple[str, str]]:
    for elem in ds:
        place = f"{prefix}({elem.tag.group:04X},{elem.tag.element:04X})"
        name = elem.keyword or ("private" if elem.tag.is_private else "")
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or []):
                yield from _dicom_places(item, f"{place}[{i}]>")
            continue
        if elem.tag == 0x7FE00010:
            continue
        value = elem.value
        if value is None:
            continue
        if isinstance(value, bytes):
            text = value.decode("latin-1")
        elif isinstance(value, str) or not isinstance(value, Iterable):
            text = str(value)
        else:
            text = "\\".join(str(v) for v in value)
        yield f"{place} {name}".rstrip(), text


def _check_dicom(path: Path, m: Matcher) -> list[tuple[str, str]] | None:
    from petcorpus.dicom.io import read_dataset

    try:
        ds = read_dataset(path, stop_before_pixels=True)
    except PetcorpusError:
        return None
    out = [(place, kind) for place, text in _dicom_places(ds) for kind in m.find(text)]
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        out += [(f"meta {p}", k) for p, text in _dicom_places(meta) for k in m.find(text)]
    data = path.read_bytes()
    pixels = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010), little endian: not searched
    out += [("bytes", k) for k in m.find_bytes(data[: pixels if pixels > 0 else len(data)])]
    return out


def _check_nifti(path: Path, m: Matcher) -> list[tuple[str, str]]:
    import nibabel as nib

    img: Any = nib.load(path)
    header = img.header
    out = []
    for field in ("descrip", "aux_file", "intent_name", "db_name"):
        if field in header:
            raw = header[field].tobytes() if hasattr(header[field], "tobytes") else b""
            out += [(f"header {field}", k) for k in m.find_bytes(raw)]
    for i, ext in enumerate(getattr(header, "extensions", []) or []):
        content = ext.get_content()
        raw = content if isinstance(content, bytes) else str(content).encode("utf-8", "replace")
        out += [(f"extension {i} (code {ext.get_code()})", k) for k in m.find_bytes(raw)]
    return out


def _check_json(path: Path, m: Matcher) -> list[tuple[str, str]] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    out: list[tuple[str, str]] = []

    def visit(o: Any, where: str) -> None:
        if isinstance(o, dict):
            for k, v in o.items():
                out.extend((f"key {where}/{k}", kind) for kind in m.find(str(k)))
                visit(v, f"{where}/{k}")
        elif isinstance(o, list):
            for i, v in enumerate(o):
                visit(v, f"{where}[{i}]")
        elif o is not None:
            out.extend((where or "/", kind) for kind in m.find(str(o)))

    visit(obj, "")
    return out


def _check_hdf5(path: Path, m: Matcher) -> list[tuple[str, str]]:
    import h5py

    out: list[tuple[str, str]] = []

    def attrs(name: str, obj: Any) -> None:
        out.extend((f"name /{name}", k) for k in m.find(name))
        for key, value in obj.attrs.items():
            text = _attr_text(value)
            out.extend((f"attribute /{name}@{key}", k) for k in m.find(f"{key} {text}"))

    with h5py.File(path, "r") as f:
        attrs("", f)
        f.visititems(attrs)
    return out


def _attr_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return " ".join(_attr_text(v) for v in value)
    return str(value)


def _check_sqlite(path: Path, m: Matcher) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            # No rowid: tables WITHOUT ROWID have none; rows are numbered as read.
            cur = con.execute(f'SELECT * FROM "{table}"')
            columns = [d[0] for d in cur.description]
            for number, row in enumerate(cur, start=1):
                for col, value in zip(columns, row, strict=True):
                    if isinstance(value, str | bytes):
                        text = value if isinstance(value, str) else value.decode("latin-1")
                        out.extend((f"{table}.{col} row {number}", k) for k in m.find(text))
    finally:
        con.close()
    return out


def _check_file(path: Path, m: Matcher) -> list[tuple[str, str]]:
    name = path.name.lower()
    with open(path, "rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM" or name.endswith(".dcm"):
        found = _check_dicom(path, m)
        if found is not None:
            return found
    if name.endswith((".nii", ".nii.gz")):
        return _check_nifti(path, m)
    if name.endswith(".json"):
        found = _check_json(path, m)
        if found is not None:
            return found
    if name.endswith((".h5", ".hdf5")) or head.startswith(b"\x89HDF"):
        return _check_hdf5(path, m)
    if head.startswith(b"SQLite format 3\0"):
        return _check_sqlite(path, m)
    return [("bytes", k) for k in m.find_bytes(path.read_bytes())]


def phi_check(
    root: str | os.PathLike[str], identifiers: Iterable[Identifier]
) -> tuple[list[Hit], list[str]]:
    """Look for ``identifiers`` everywhere under ``root`` (rules in the module docstring).

    Returns
    -------
    hits : list of Hit
        Each identifier found, with its file (relative to ``root``) and place; one entry per
        place and kind.
    errors : list of str
        Files that could not be read (one line each: the file and the reason).
    """
    base = Path(root)
    m = Matcher(identifiers)
    hits: set[Hit] = set()
    errors: list[str] = []
    if not m:
        return [], errors
    for path in _files(base):
        rel = path.relative_to(base) if path != base else Path(path.name)
        shown = printable(str(rel))
        parts = rel.parts
        for i, part in enumerate(parts):
            raw = os.fsencode(part)
            for kind in {*m.find(part), *m.find_bytes(raw)}:
                hits.add(Hit(printable(str(Path(*parts[: i + 1]))), "name", kind))
        try:
            found = _check_file(path, m)
        except Exception as exc:  # a damaged file: named, the rest goes on
            errors.append(f"{printable(str(path))}: cannot read ({type(exc).__name__}: {exc})")
            continue
        hits.update(Hit(shown, place, kind) for place, kind in found)
    return sorted(hits), errors
