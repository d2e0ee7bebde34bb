"""Read an ENHANCE.PET corpus: both on-disk releases, or straight from the downloaded zips.

Layouts (see docs/enhance.md)::

    v1  imaging-data/images/CT/NNNN.nii.gz, imaging-data/images/PT/NNNN.nii.gz
    v2  imaging-data/images/CT_0001-1000/NNNN.nii.gz, CT_1001-1683/..., PT_0001-1683/...
        imaging-data/ground-truth/<Group>/NNNN.nii.gz   (both releases, 7 groups)
        CT-details.xlsx, PT-details.xlsx, labels.json    (at the top)

Files are classified by their *parent folder name* and case number, not by depth, so the
same code reads an unpacked tree (with or without the ``imaging-data`` prefix) and the
members of the 13 downloaded zips (a label zip may hold ``Organs/0001.nii.gz`` or the full
path). Cases are keyed by their number, written with four digits (``"0001"``). A case that
lacks a file is kept and the gap reported (:attr:`EnhanceCase.missing`), never fatal.

As a :class:`~petcorpus.layouts.base.Corpus`, :class:`EnhanceCorpus` yields
:class:`EnhanceCase` objects: key ``"0001"``, volumes ``CT``, ``PET`` (the ``PT`` image) and
one per label group (``Organs``, ``Body-Composition`` ...), metadata the case's rows of
PT-details and CT-details (``pt_<column>``, ``ct_<column>``, read once per corpus).

A file inside a zip is a :class:`FileRef` with ``member`` set; its text form is
``archive.zip!member``. Reading one streams that member only (no unpacking).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import os
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from petcorpus.errors import CorruptFileError, PetcorpusError, Reason
from petcorpus.labels import (
    GROUPS,
    GroupCheck,
    LabelTable,
    check_group_values,
    moose_table,
    normalise_group,
    parse_labels,
)
from petcorpus.layouts.base import Case, Corpus
from petcorpus.nifti import read_nifti
from petcorpus.volume import Volume

__all__ = [
    "EnhanceCase",
    "EnhanceCaseData",
    "EnhanceCorpus",
    "FileRef",
    "check_corpus_labels",
    "enhance_cases_table",
    "licence_for_site",
    "open_enhance",
    "read_case",
    "read_details",
]

log = logging.getLogger(__name__)

_NIFTI = re.compile(r"^(\d+)\.nii(\.gz)?$", re.IGNORECASE)
_IMAGE_DIR = re.compile(r"^(CT|PT)(_.*)?$", re.IGNORECASE)
_METADATA = {
    "labels.json": "labels",
    "ct-details.xlsx": "ct_details",
    "pt-details.xlsx": "pt_details",
}

#: Data-Source → licence (from the ENHANCE.PET data card). Matched case-insensitively on a
#: key word so "University Hospital Leipzig (DE)." and "Leipzig" both resolve.
LICENCES: Mapping[str, str] = {
    "autopet": "CC BY-NC 4.0",
    "leipzig": "CC BY 4.0",
    "careggi": "CC BY 4.0",
    "davis": "CC BY 4.0",
}


def licence_for_site(site: str | None) -> str | None:
    """The licence of a Data-Source value, or None when the site is unknown.

    >>> licence_for_site("AutoPET Challenge"), licence_for_site("UC Davis (US)")
    ('CC BY-NC 4.0', 'CC BY 4.0')
    """
    if not site or not isinstance(site, str):
        return None
    s = site.lower()
    hits = {lic for key, lic in LICENCES.items() if key in s}
    return hits.pop() if len(hits) == 1 else None


@dataclasses.dataclass(frozen=True)
class FileRef:
    """A file on disk (``member is None``) or a member of a zip archive at ``path``."""

    path: Path
    member: str | None = None

    def __str__(self) -> str:
        return str(self.path) if self.member is None else f"{self.path}!{self.member}"

    @classmethod
    def parse(cls, text: str) -> FileRef:
        """Inverse of ``str()``: ``"a.zip!x/0001.nii.gz"`` or a plain path."""
        if "!" in text:
            archive, member = text.split("!", 1)
            return cls(Path(archive), member)
        return cls(Path(text))

    def read_bytes(self) -> bytes:
        """The file's bytes; a zip member is streamed out of its archive."""
        try:
            if self.member is None:
                return self.path.read_bytes()
            with zipfile.ZipFile(self.path) as zf, zf.open(self.member) as fh:
                return fh.read()
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise CorruptFileError(f"cannot read ({exc})", path=str(self)) from exc

    def load_volume(self) -> Volume:
        """Read a NIfTI file (``.nii`` or ``.nii.gz``) as a :class:`Volume`; a zip member
        is streamed out of its archive (:func:`petcorpus.nifti.read_nifti`)."""
        try:
            return read_nifti(self.path, member=self.member)
        except Exception as exc:
            raise CorruptFileError(f"cannot read NIfTI ({exc})", path=str(self)) from exc


@dataclasses.dataclass
class EnhanceCase(Case):
    """The files of one case. ``masks`` maps group name to its label image; ``details`` are
    the corpus' (PT-details, CT-details) spreadsheets, for :attr:`metadata`."""

    case_id: str
    ct: FileRef | None = None
    pt: FileRef | None = None
    masks: dict[str, FileRef] = dataclasses.field(default_factory=dict)
    details: tuple[FileRef | None, FileRef | None] = (None, None)
    key: str = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.key = self.case_id

    @property
    def number(self) -> int:
        return int(self.case_id)

    def _ref(self, name: str) -> FileRef | None:
        if name == "CT":
            return self.ct
        if name == "PET":
            return self.pt
        return self.masks.get(name)

    def names(self) -> tuple[str, ...]:
        """``CT``, ``PET`` and the label groups present, in that order."""
        images = tuple(n for n in ("CT", "PET") if self._ref(n) is not None)
        return images + tuple(g for g in GROUPS if g in self.masks)

    def has(self, name: str) -> bool:
        return self._ref(name) is not None

    def volume(self, name: str) -> Volume:
        ref = self._ref(name)
        if ref is None:
            raise self._missing(name)
        return ref.load_volume()

    def source(self, name: str) -> str:
        ref = self._ref(name)
        return f"case {self.case_id}: {name}" if ref is None else str(ref)

    @property
    def metadata(self) -> dict[str, Any]:
        """The case's PT-details and CT-details rows (``pt_<snake column>``,
        ``ct_<snake column>``; empty cells None), {} without spreadsheets."""
        if self.details == (None, None):
            return {}
        return dict(_details_rows(*self.details).get(self.case_id, {}))

    @property
    def missing(self) -> list[str]:
        """Which of CT, PT and the seven groups this case lacks."""
        out = [m for m in ("CT", "PT") if getattr(self, m.lower()) is None]
        return out + [g for g in GROUPS if g not in self.masks]


@dataclasses.dataclass
class EnhanceCorpus(Corpus):
    """An ENHANCE.PET corpus found under ``root`` (:func:`open_enhance`).

    ``release`` is ``"v1"`` (flat ``CT``/``PT`` folders), ``"v2"`` (``CT_0001-1000`` ...) or
    ``"unknown"``. ``by_id`` maps case id to case (also :meth:`cases`, :meth:`case`).
    ``problems`` lists what was odd (duplicates, unreadable zips), one line each.
    :meth:`metadata_note` says which ``labels.json`` and details spreadsheets were read.
    """

    layout: ClassVar[str] = "enhance"

    root: Path
    release: str
    by_id: dict[str, EnhanceCase]
    labels: LabelTable
    labels_ref: FileRef | None = None
    ct_details: FileRef | None = None
    pt_details: FileRef | None = None
    problems: list[str] = dataclasses.field(default_factory=list)

    def metadata_note(self) -> str:
        """One line naming the metadata files read (or the built-in table used instead)."""
        parts = [
            f"labels from {self.labels_ref}" if self.labels_ref is not None
            else "labels from the built-in MOOSE table (no labels.json)",
        ]  # fmt: skip
        for what, ref in (("PT-details", self.pt_details), ("CT-details", self.ct_details)):
            parts.append(f"{what} from {ref}" if ref is not None else f"no {what}.xlsx")
        return "; ".join(parts)

    def incomplete(self) -> dict[str, list[str]]:
        """Case id → missing files, for cases that lack any."""
        return {c: case.missing for c, case in self.by_id.items() if case.missing}

    @classmethod
    def sniff(cls, path: Path) -> bool:
        """A folder holding ``imaging-data/``, ``images/``, a metadata file or zips."""
        if not path.is_dir():
            return False
        if (path / "imaging-data").is_dir() or (path / "images").is_dir():
            return True
        return any(
            p.name.lower() in _METADATA or p.suffix.lower() == ".zip" for p in path.iterdir()
        )

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> EnhanceCorpus:
        return open_enhance(path)

    def cases(self) -> Iterator[EnhanceCase]:
        yield from self.by_id.values()

    def keys(self) -> list[str]:
        return list(self.by_id)

    def case(self, key: str | int) -> EnhanceCase:
        """The case ``key`` (``"0001"``, ``"1"`` or ``1``)."""
        try:
            cid = f"{int(key):04d}"
        except ValueError:
            cid = str(key)
        if cid not in self.by_id:
            raise PetcorpusError(f"no case {cid} in the corpus", path=self.root,
                                 reason=Reason.NO_SERIES)  # fmt: skip
        return self.by_id[cid]


def _walk(root: Path) -> Iterable[tuple[str, FileRef]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            full = Path(dirpath) / f
            yield full.relative_to(root).as_posix(), FileRef(full)


def _plain_metadata(root: Path) -> Iterable[tuple[str, FileRef]]:
    """The plain metadata files (``labels.json``, ``*-details.xlsx``) at the top of ``root``:
    downloads in their own right, beside the zips."""
    for p in sorted(root.iterdir()):
        if p.is_file() and p.name.lower() in _METADATA:
            yield p.name, FileRef(p)


def _zip_members(root: Path, problems: list[str]) -> Iterable[tuple[str, FileRef]]:
    for archive in sorted(root.glob("*.zip")):
        try:
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist()
        except (OSError, zipfile.BadZipFile) as exc:
            problems.append(f"{archive}: unreadable zip ({exc})")
            continue
        for name in names:
            if not name.endswith("/"):
                yield name, FileRef(archive, name)


def open_enhance(
    root: str | os.PathLike[str], *, zips: Literal["auto", "never", "only"] = "auto"
) -> EnhanceCorpus:
    """Find every case of an ENHANCE.PET corpus.

    Parameters
    ----------
    root : path
        The corpus folder (holding ``imaging-data/`` and/or the downloaded ``*.zip``).
    zips : {"auto", "never", "only"}
        ``auto``: unpacked files first, zip members for whatever is not unpacked;
        ``never``: only unpacked files; ``only``: images and masks only from the zips (read
        without unpacking). The metadata files the release distributes as plain downloads
        (``labels.json``, ``CT-details.xlsx``, ``PT-details.xlsx`` at the top of ``root``)
        are read in every mode, before any copy inside a zip.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorruptFileError("not a folder", path=root, reason=Reason.NO_SERIES)
    problems: list[str] = []
    cases: dict[str, EnhanceCase] = {}
    meta: dict[str, FileRef] = {}
    image_dirs: set[str] = set()
    sources: list[Iterable[tuple[str, FileRef]]] = []
    if zips != "only":
        sources.append(_walk(root))
    else:
        sources.append(_plain_metadata(root))
    if zips != "never":
        sources.append(_zip_members(root, problems))
    for source in sources:
        for rel, ref in source:
            parts = rel.split("/")
            name = parts[-1]
            kind = _METADATA.get(name.lower())
            if kind is not None:
                meta.setdefault(kind, ref)
                continue
            m = _NIFTI.match(name)
            if m is None or len(parts) < 2:
                continue
            cid = f"{int(m.group(1)):04d}"
            parent = parts[-2]
            case = cases.setdefault(cid, EnhanceCase(cid))
            im = _IMAGE_DIR.match(parent)
            if im is not None:
                image_dirs.add(parent)
                attr = im.group(1).lower()
                if getattr(case, attr) is None:
                    setattr(case, attr, ref)
                elif getattr(case, attr).member is None and ref.member is None:
                    kept = getattr(case, attr)
                    problems.append(f"case {cid}: two {attr.upper()} files, kept {kept}")
                continue
            group = normalise_group(parent)
            if group is None:
                continue
            if group not in case.masks:
                case.masks[group] = ref
            elif case.masks[group].member is None and ref.member is None:
                problems.append(f"case {cid}: two {group} files, kept {case.masks[group]}")
    if any("_" in d for d in image_dirs):
        release = "v2"
    elif image_dirs:
        release = "v1"
    else:
        release = "unknown"
    labels_ref = meta.get("labels")
    if labels_ref is not None:
        labels = parse_labels(labels_ref.read_bytes(), source=str(labels_ref))
    else:
        labels = moose_table()
        where = {"never": "unpacked files", "only": "top-level files or zips"}.get(
            zips, "unpacked files or zips"
        )
        problems.append(f"no labels.json among the {where}: using the built-in MOOSE table")
    details = (meta.get("pt_details"), meta.get("ct_details"))
    for cid, case in sorted(cases.items()):
        case.details = details
        if case.missing:
            log.info("case %s lacks %s", cid, ", ".join(case.missing))
    return EnhanceCorpus(
        root=root,
        release=release,
        by_id=dict(sorted(cases.items())),
        labels=labels,
        labels_ref=labels_ref,
        ct_details=meta.get("ct_details"),
        pt_details=meta.get("pt_details"),
        problems=problems,
    )


# -- reading one case ----------------------------------------------------------------------
@dataclasses.dataclass
class EnhanceCaseData:
    """The volumes of one case: CT (HU), PET (as stored), and group label images (CT grid)."""

    case_id: str
    ct: Volume | None
    pet: Volume | None
    groups: dict[str, Volume]


def read_case(
    corpus: EnhanceCorpus,
    case_id: str | int,
    *,
    images: bool = True,
    groups: Sequence[str] | None = None,
) -> EnhanceCaseData:
    """Read one case's volumes (files that are missing come back as None / absent)."""
    case = corpus.case(f"{int(case_id):04d}")
    wanted = GROUPS if groups is None else tuple(groups)
    return EnhanceCaseData(
        case_id=case.case_id,
        ct=case.volume("CT") if images and case.has("CT") else None,
        pet=case.volume("PET") if images and case.has("PET") else None,
        groups={g: case.volume(g) for g in wanted if g in case.masks},
    )


# -- metadata ------------------------------------------------------------------------------
def _snake(name: str) -> str:
    s = re.sub(r"[^0-9a-zA-Z]+", "_", str(name)).strip("_").lower()
    return s or "column"


def _read_xlsx(ref: FileRef | None) -> pd.DataFrame | None:
    if ref is None:
        return None
    try:
        df = pd.read_excel(io.BytesIO(ref.read_bytes()))
    except PetcorpusError:
        raise
    except Exception as exc:
        raise CorruptFileError(f"cannot read spreadsheet ({exc})", path=str(ref)) from exc
    key = next((c for c in df.columns if _snake(c) in ("patient", "patient_id", "case")), None)
    if key is None:
        raise CorruptFileError("spreadsheet has no Patient column", path=str(ref))
    ids = []
    for v in df[key]:
        digits = re.sub(r"\D", "", str(v).split(".")[0]) if pd.notna(v) else ""
        ids.append(f"{int(digits):04d}" if digits else None)
    df = df.drop(columns=[key])
    df.insert(0, "case_id", ids)
    return df[df["case_id"].notna()]


def read_details(corpus: EnhanceCorpus) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(PT-details, CT-details) as DataFrames with a ``case_id`` column ("0001"), or None."""
    return _read_xlsx(corpus.pt_details), _read_xlsx(corpus.ct_details)


def _prefixed(df: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """One row per case id, columns renamed ``<prefix>_<snake name>``."""
    return df.drop_duplicates("case_id").rename(
        columns={c: f"{prefix}_{_snake(c)}" for c in df.columns if c != "case_id"}
    )


@functools.lru_cache(maxsize=4)
def _details_rows(pt_ref: FileRef | None, ct_ref: FileRef | None) -> dict[str, dict[str, Any]]:
    """Case id → its PT- and CT-details fields (read once per process and pair of files)."""
    rows: dict[str, dict[str, Any]] = {}
    for prefix, ref in (("pt", pt_ref), ("ct", ct_ref)):
        df = _read_xlsx(ref)
        if df is None:
            continue
        for rec in _prefixed(df, prefix).to_dict("records"):
            cid = str(rec.pop("case_id"))
            clean = {str(k): (None if pd.isna(v) else v) for k, v in rec.items()}
            rows.setdefault(cid, {}).update(clean)
    return rows


def _site_column(df: pd.DataFrame) -> str | None:
    names = ("data_source", "datasource", "site")
    return next((c for c in df.columns if _snake(c) in names), None)


def enhance_cases_table(
    root: str | os.PathLike[str] | EnhanceCorpus,
    *,
    zips: Literal["auto", "never", "only"] = "auto",
) -> pd.DataFrame:
    """One row per case: files, site, licence and the xlsx fields (for the catalog).

    Columns: ``case_id`` ("0001"), ``number``, ``release``, ``ct_path``, ``pt_path``,
    ``mask_<group>`` (``mask_body_composition`` ...; a zip member is ``archive!member``),
    ``missing`` (``;``-joined, empty when complete), ``site`` (Data-Source of PT-details, else
    CT-details), ``licence`` (from the site; None when unknown), ``problems``, then every
    PT-details column as ``pt_<snake name>`` (``pt_age``, ``pt_sex``, ``pt_weight_kg``,
    ``pt_height_m`` ...) and every CT-details column as ``ct_<snake name>``. Cases named in a
    spreadsheet but without files are rows too (``missing`` lists everything).
    """
    corpus = root if isinstance(root, EnhanceCorpus) else open_enhance(root, zips=zips)
    pt, ct = read_details(corpus)
    ids = set(corpus.by_id)
    for df in (pt, ct):
        if df is not None:
            ids |= set(df["case_id"])
    rows = []
    for cid in sorted(ids):
        case = corpus.by_id.get(cid, EnhanceCase(cid))
        row: dict[str, object] = {
            "case_id": cid,
            "number": int(cid),
            "release": corpus.release,
            "ct_path": None if case.ct is None else str(case.ct),
            "pt_path": None if case.pt is None else str(case.pt),
        }
        for g in GROUPS:
            ref = case.masks.get(g)
            row[f"mask_{_snake(g)}"] = None if ref is None else str(ref)
        row["missing"] = ";".join(case.missing)
        rows.append(row)
    table = pd.DataFrame(rows)
    sites: dict[str, list[str]] = {}
    for prefix, df in (("pt", pt), ("ct", ct)):
        if df is None or table.empty:
            continue
        sc = _site_column(df)
        if sc is not None:
            for cid, s in zip(df["case_id"], df[sc], strict=True):
                if pd.notna(s):
                    sites.setdefault(cid, []).append(str(s).strip())
        table = table.merge(_prefixed(df, prefix), on="case_id", how="left")
    if table.empty:
        return table.assign(site=[], licence=[], problems=[])
    site_col, lic_col, prob_col = [], [], []
    for cid in table["case_id"]:
        found = sites.get(cid, [])
        site = found[0] if found else None
        problems = []
        if len({s.lower() for s in found}) > 1:
            problems.append(f"PT and CT Data-Source differ: {found}")
        lic = licence_for_site(site)
        if site is not None and lic is None:
            problems.append(f"unknown Data-Source {site!r}: licence not known")
        site_col.append(site)
        lic_col.append(lic)
        prob_col.append("; ".join(problems))
    pos = table.columns.get_loc("missing") + 1
    table.insert(pos, "site", site_col)
    table.insert(pos + 1, "licence", lic_col)
    table.insert(pos + 2, "problems", prob_col)
    return table


# -- labels check over a corpus -------------------------------------------------------------
def _values_in(ref: FileRef) -> np.ndarray:
    """Distinct voxel values of one label image (rounded when stored as float)."""
    arr = np.asarray(ref.load_volume().array)
    if arr.dtype.kind == "f":
        arr = np.rint(arr)
    flat = arr.astype(np.int64, copy=False).ravel(order="K")
    if flat.size and flat.min() >= 0:
        return np.flatnonzero(np.bincount(flat))
    return np.unique(flat)


def check_corpus_labels(
    corpus: EnhanceCorpus, cases: Sequence[str] | None = None, *, workers: int = 1
) -> list[GroupCheck]:
    """Per group: declared-but-absent and present-but-undeclared values over the cases.

    Reads every group image of the cases (``workers`` processes when > 1).
    """
    wanted = corpus.keys() if cases is None else [f"{int(c):04d}" for c in cases]
    jobs = [(cid, g, ref) for cid in wanted for g, ref in corpus.case(cid).masks.items()]
    refs = [ref for _, _, ref in jobs]
    if workers > 1 and len(refs) > 1:
        from petcorpus._procs import process_pool

        with process_pool(workers, preload=(__name__,)) as pool:
            found = list(pool.map(_values_in, refs, chunksize=4))
    else:
        found = [_values_in(r) for r in refs]
    values: dict[str, dict[str, np.ndarray]] = {g: {} for g in GROUPS}
    for (cid, g, _), v in zip(jobs, found, strict=True):
        values[g][cid] = v
    return [check_group_values(g, values[g], corpus.labels) for g in GROUPS]
