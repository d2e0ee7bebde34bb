"""Where a study's outputs go: ``<OUT>/<subject>/<study>/``, derived from DICOM identity.

A study is its StudyInstanceUID, whatever the shape of the tree that holds its files (any
depth, a flat dump of several studies, one study's series in sibling folders, DICOMDIR
names such as ``DICOM/PAT00001/STU00001/SER00001``). Its output folder is named by the rule
:data:`Naming.DICOM` (the default):

subject
    The study's PatientID, with every character outside ``A-Z a-z 0-9 . _ -`` replaced by
    ``_`` (TCIA's pseudonyms such as ``PETCT_0117d7f11f`` are kept as they are); a study
    without PatientID gets ``sub-<10 hex of the SHA-256 of its StudyInstanceUID>``.
    De-identify a hospital's studies first: a PatientID is an identifier.
study
    The TCIA study-folder name (``MM-DD-YYYY-NA-<description>-<number>``) when the study's
    files sit below such a folder and its date is the study's StudyDate — so the published
    autoPET layout is reproduced from a TCIA download at any depth; otherwise
    ``<StudyDate as YYYY-MM-DD, or "nodate">-<8 hex of the SHA-256 of the UID>``.

Two studies never share a folder: names that would clash (also case-insensitively, as on
macOS or Windows file systems) get the UID hash appended, and :func:`name_studies` checks the
final mapping before anything is written. A name already recorded in a corpus's catalog is
kept, so corpora built with an earlier rule stay as they are.

:data:`Naming.FOLDERS` (``--names-from-folders``) takes the two folder names above each
series folder instead (``<subject>/<study>/<series>/<file>``), for trees whose folder names
are the user's own pseudonyms. Folder names may hold patient names, so this is never the
default; a clash is an error under this rule.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from petcorpus.errors import PetcorpusError, Reason, printable

if TYPE_CHECKING:
    from petcorpus.dicom.scan import StudyInfo

__all__ = ["Naming", "OutputName", "name_studies"]

#: TCIA/NBIA study folders: ``<StudyDate MM-DD-YYYY>-<StudyID or NA>-<description>-<n>``.
_TCIA_STUDY = re.compile(r"^(\d{2})-(\d{2})-(\d{4})-.+-\d+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class Naming(enum.StrEnum):
    """How output folders are named (see the module docstring)."""

    DICOM = "dicom"
    FOLDERS = "folders"


@dataclasses.dataclass(frozen=True, order=True)
class OutputName:
    """A study's output folder, relative to the corpus root: ``<subject>/<study>``."""

    subject: str
    study: str

    def __post_init__(self) -> None:
        for part in (self.subject, self.study):
            if not part or part in (".", "..") or "/" in part or "\\" in part or "\0" in part:
                raise ValueError(f"not a single folder name: {part!r}")

    def __str__(self) -> str:
        return f"{self.subject}/{self.study}"

    @classmethod
    def parse(cls, source: str) -> OutputName:
        """``"<subject>/<study>"`` (as the catalog stores it) → OutputName."""
        subject, sep, study = source.partition("/")
        if not sep:
            raise ValueError(f"not <subject>/<study>: {source!r}")
        return cls(subject, study)

    def key(self) -> str:
        """The name as a case-insensitive file system compares it."""
        return str(self).casefold()


def _uid_hash(study_uid: str) -> str:
    return hashlib.sha256(study_uid.encode()).hexdigest()


def _iso(study_date: str | None) -> str | None:
    if study_date and len(study_date) == 8 and study_date.isdigit():
        return f"{study_date[:4]}-{study_date[4:6]}-{study_date[6:]}"
    return None


def _series_folders(study: StudyInfo) -> set[Path]:
    return {Path(f).parent for series in study.series for f in series.files}


def _tcia_study_folder(study: StudyInfo) -> str | None:
    """The TCIA study-folder name shared by all the study's files, if its date matches."""
    iso = _iso(study.study_date)
    if iso is None:
        return None
    names = set()
    for folder in _series_folders(study):
        found = None
        for ancestor in (folder, *folder.parents):
            m = _TCIA_STUDY.match(ancestor.name)
            # (a name that is not UTF-8 cannot be a catalog entry: the DICOM rule names it)
            if m and f"{m[3]}-{m[1]}-{m[2]}" == iso and printable(ancestor.name) == ancestor.name:
                found = ancestor.name
                break
        if found is None:
            return None
        names.add(found)
    return names.pop() if len(names) == 1 else None


def _dicom_name(study: StudyInfo) -> OutputName:
    digest = _uid_hash(str(study.study_uid))
    pid = (study.patient_id or "").strip()
    subject = _UNSAFE.sub("_", pid)[:64].strip(".") if pid else ""
    if not subject:
        subject = f"sub-{digest[:10]}"
    folder = _tcia_study_folder(study)
    return OutputName(subject, folder or f"{_iso(study.study_date) or 'nodate'}-{digest[:8]}")


def _folder_name(study: StudyInfo) -> OutputName:
    names = set()
    for folder in _series_folders(study):
        parents = folder.resolve().parents
        if len(parents) < 2 or not parents[1].name:
            raise PetcorpusError(
                "--names-from-folders needs <subject>/<study>/<series>/<file> folders",
                path=folder,
                reason=Reason.OUTPUT_COLLISION,
            )
        names.add(OutputName(printable(parents[1].name), printable(parents[0].name)))
    if len(names) != 1:
        listed = ", ".join(sorted(map(str, names)))
        raise PetcorpusError(
            f"study {study.study_uid} sits in several <subject>/<study> folders ({listed}); "
            "use the default naming",
            path=min(_series_folders(study)),
            reason=Reason.OUTPUT_COLLISION,
        )
    return names.pop()


def name_studies(
    studies: Iterable[StudyInfo],
    *,
    naming: Naming | str = Naming.DICOM,
    recorded: Mapping[str, str] | None = None,
) -> dict[str, OutputName]:
    """Output folder of each study (rule in the module docstring), unique by construction.

    Parameters
    ----------
    studies : iterable of StudyInfo
        What :func:`petcorpus.dicom.scan.scan` found (read once, one study at a time).
    naming : Naming or str
        ``"dicom"`` (default) or ``"folders"``.
    recorded : mapping, optional
        StudyInstanceUID → ``"<subject>/<study>"`` already in the corpus's catalog; these
        names are kept (a name recorded for two UIDs is kept by neither).

    Returns
    -------
    dict
        StudyInstanceUID → :class:`OutputName`, injective (also case-insensitively).

    Raises
    ------
    PetcorpusError
        Reason ``OUTPUT_COLLISION`` when two studies would share a folder under
        ``naming="folders"`` (nothing has been written).
    """
    naming = Naming(naming)
    recorded = recorded or {}
    owners: dict[str, list[str]] = {}
    for uid, source in recorded.items():
        try:
            owners.setdefault(OutputName.parse(source).key(), []).append(uid)
        except ValueError:
            continue
    kept: dict[str, OutputName] = {}
    for uid, source in recorded.items():
        try:
            name = OutputName.parse(source)
        except ValueError:
            continue
        if len(owners[name.key()]) == 1:
            kept[uid] = name

    names: dict[str, OutputName] = {}
    fresh: dict[str, OutputName] = {}
    for study in studies:
        uid = str(study.study_uid)
        if uid in kept:
            names[uid] = kept[uid]
        else:
            fresh[uid] = _folder_name(study) if naming is Naming.FOLDERS else _dicom_name(study)

    taken = {n.key(): uid for uid, n in kept.items()}
    clashes = _clashes(fresh.items(), taken)
    if clashes and naming is Naming.FOLDERS:
        key, uids = next(iter(clashes.items()))
        raise PetcorpusError(
            f"studies {', '.join(sorted(uids))} would share the output folder {key}; "
            "drop --names-from-folders (the default names are unique)",
            reason=Reason.OUTPUT_COLLISION,
        )
    for uids in clashes.values():
        for uid in uids:
            if uid in fresh:
                name = fresh[uid]
                fresh[uid] = OutputName(name.subject, f"{name.study}-{_uid_hash(uid)[:8]}")
    names.update(fresh)
    left = _clashes(names.items(), {})
    if left:  # a SHA-256 prefix clash, or a recorded name taken by a fresh one
        key, uids = next(iter(left.items()))
        raise PetcorpusError(
            f"studies {', '.join(sorted(uids))} would share the output folder {key}",
            reason=Reason.OUTPUT_COLLISION,
        )
    return names


def _clashes(
    items: Iterable[tuple[str, OutputName]], taken: Mapping[str, str]
) -> dict[str, set[str]]:
    """Folder key → the UIDs (two or more) that would write there."""
    by_key: dict[str, set[str]] = {}
    for uid, name in items:
        by_key.setdefault(name.key(), set()).add(uid)
    for key, uid in taken.items():
        if key in by_key:
            by_key[key].add(uid)
    return {k: v for k, v in by_key.items() if len(v) > 1}
