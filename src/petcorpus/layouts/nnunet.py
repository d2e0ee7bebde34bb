"""The nnU-Net v2 raw layout, read and written here: the autoPET challenge releases and our
own exports.

An nnU-Net v2 raw dataset (nnU-Net's ``documentation/dataset_format.md``) is a folder::

    DatasetNNN_Name/
      dataset.json              channel_names, labels, numTraining, file_ending
      imagesTr/<case>_0000.nii.gz, <case>_0001.nii.gz   one file per channel
      labelsTr/<case>.nii.gz
      imagesTs/<case>_0000.nii.gz ...                    (optional: the test set)
      splits_final.json         (read by nnU-Net from nnUNet_preprocessed/DatasetNNN_Name/)

The autoPET challenge releases (autoPET II-IV; FDG and, since 2024, PSMA) are such folders,
with ``_0000`` = CT resampled to the PET grid, ``_0001`` = PET in SUV, and beside them
``fdg_metadata.csv`` (TCIA's clinical CSV: several rows per study, one per series) and
``psma_metadata.csv`` (one row per study). Their case ids carry tracer, subject and study:
``fdg_<hex10>_<TCIA study folder>`` and ``psma_<hex16>_<YYYY-MM-DD>``.

:class:`NnunetDataset` reads such a folder as a :class:`~petcorpus.layouts.base.Corpus`:
each case holds ``CTres`` (the CT channel), ``SUV`` (the PET channel) and ``SEG`` (the
label). Which channel is which is read from ``channel_names`` where the names tell CT from
PET (the first edition's baseline had PET at ``_0000``), checked against the values of the
first case (CT has air near -1000 HU, SUV is never below 0); when they disagree, or neither
tells, the dataset is refused with one line (:func:`channel_roles`).

:func:`write_nnunet_dataset` is the one writer of these file names (``petcorpus
export-nnunet``, :mod:`petcorpus.pipeline.release` links the other way).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from petcorpus.atomic import atomic_dir, atomic_write
from petcorpus.errors import CorruptFileError, PetcorpusError, Reason
from petcorpus.layouts._nifti import header_voxel_ml, load_nifti
from petcorpus.layouts._release import (
    METADATA_CSVS,
    ReleaseId,
    match_rows,
    parse_case_id,
    release_case_ids,
)
from petcorpus.layouts.base import Case, Corpus
from petcorpus.volume import Volume

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CASE_MAP",
    "DATASET_JSON",
    "IMAGES_TR",
    "IMAGES_TS",
    "LABELS_TR",
    "LABELS_TS",
    "METADATA_CSVS",
    "SPLITS_FINAL",
    "VOLUMES",
    "ExportCase",
    "NnunetCase",
    "NnunetDataset",
    "ReleaseId",
    "channel_roles",
    "dataset_folder_name",
    "image_file",
    "label_file",
    "link_or_copy",
    "parse_case_id",
    "release_case_ids",
    "write_nnunet_dataset",
]

IMAGES_TR, IMAGES_TS, LABELS_TR, LABELS_TS = "imagesTr", "imagesTs", "labelsTr", "labelsTs"
DATASET_JSON = "dataset.json"
SPLITS_FINAL = "splits_final.json"
#: Written by :func:`write_nnunet_dataset`: case id → corpus key (nnU-Net ignores it).
CASE_MAP = "petcorpus_cases.json"
#: The volumes of a case (named as in the autoPET layout): CT channel, PET channel, label.
VOLUMES = ("CTres", "SUV", "SEG")
_DEFAULT_ENDING = ".nii.gz"
# Channel names that say what a channel holds (case-insensitive). nnU-Net itself only
# reads them to choose the normalisation: "CT" → CT clipping, "noNorm" → none, else z-score.
_CT_NAMES = frozenset({"ct", "ctres"})
_PET_NAMES = frozenset({"pet", "suv", "pt", "fdg", "psma"})


def image_file(case_id: str, channel: int, file_ending: str = _DEFAULT_ENDING) -> str:
    """``<case>_0001.nii.gz``: the file of channel ``channel`` (nnU-Net's ``_%04d``)."""
    return f"{case_id}_{channel:04d}{file_ending}"


def label_file(case_id: str, file_ending: str = _DEFAULT_ENDING) -> str:
    """``<case>.nii.gz``: the label of a case."""
    return f"{case_id}{file_ending}"


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset221_autoPET``: nnU-Net's folder name (``Dataset%03d_<name>``)."""
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"the nnU-Net dataset id must be 1-999, got {dataset_id}")
    if not name or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"the dataset name must be letters, digits, _ or -, got {name!r}")
    return f"Dataset{dataset_id:03d}_{name}"


# -- which channel is which -------------------------------------------------------------------
def _role_by_name(name: str) -> str | None:
    key = str(name).strip().lower()
    return "CTres" if key in _CT_NAMES else "SUV" if key in _PET_NAMES else None


def _role_by_values(array: np.ndarray) -> str | None:
    """``CTres`` when a percent of the voxels is air-like (< -500), ``SUV`` when no voxel is
    below -0.5 (SUV is non-negative; reconstruction noise rounds to a few hundredths)."""
    a = np.asarray(array)
    if a.size == 0:
        return None
    if float(np.percentile(a, 1)) < -500.0:
        return "CTres"
    if float(a.min()) >= -0.5:
        return "SUV"
    return None


def channel_roles(
    channel_names: Mapping[str, Any],
    samples: Mapping[int, np.ndarray] | None = None,
    *,
    where: str | os.PathLike[str] | None = None,
) -> dict[str, int]:
    """``{"CTres": i, "SUV": j}``: which channel is the CT and which the PET.

    Parameters
    ----------
    channel_names : mapping
        ``dataset.json``'s ``channel_names`` (``{"0": "CT", "1": "PET"}``).
    samples : mapping, optional
        Channel → the voxels of one case, to check the names against (CT has air near -1000
        HU, SUV is never negative).
    where : path, optional
        Named in errors (the dataset folder).

    Raises
    ------
    PetcorpusError
        Not two channels; the names and the values disagree; or neither tells CT from PET
        (the autoPET II baseline named both channels ``CT``) — reason ``INVALID_VALUE``.
    """
    try:
        names = {int(k): str(v) for k, v in channel_names.items()}
    except (TypeError, ValueError, AttributeError):
        raise PetcorpusError(
            f"channel_names must map channel numbers to names, got {channel_names!r}",
            path=where,
            reason=Reason.INVALID_VALUE,
        ) from None
    if sorted(names) != [0, 1]:
        raise PetcorpusError(
            f"expected two channels (CT and PET), channel_names is {channel_names!r}",
            path=where,
            reason=Reason.INVALID_VALUE,
        )
    by_name = {c: _role_by_name(n) for c, n in names.items()}
    by_value = {c: _role_by_values(a) for c, a in (samples or {}).items()}
    named = set(by_name.values()) == {"CTres", "SUV"}
    valued = len(by_value) == 2 and set(by_value.values()) == {"CTres", "SUV"}
    shown = ", ".join(f"_{c:04d} is named {names[c]!r}" for c in sorted(names))
    if (
        named
        and by_value
        and any(by_value.get(c) is not None and by_value[c] != by_name[c] for c in names)
    ):
        seen = ", ".join(
            f"_{c:04d} looks like {'CT' if by_value.get(c) == 'CTres' else 'SUV'}"
            for c in sorted(by_value)
            if by_value.get(c)
        )
        raise PetcorpusError(
            f"the channel order disagrees with dataset.json: {shown}, but {seen} "
            "(CT has air near -1000 HU, SUV is never negative); fix channel_names",
            path=where,
            reason=Reason.INVALID_VALUE,
        )
    roles = by_name if named else by_value if valued else None
    if roles is None:
        raise PetcorpusError(
            f"cannot tell the CT channel from the PET channel: {shown}, and the values of "
            "the first case do not tell either (CT has air near -1000 HU, SUV is never "
            "negative)",
            path=where,
            reason=Reason.INVALID_VALUE,
        )
    return {role: c for c, role in roles.items() if role is not None}


# -- reading ----------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PetcorpusError("no such file", path=path, reason=Reason.NO_SERIES) from None
    except (OSError, ValueError) as exc:
        raise CorruptFileError(f"invalid JSON: {exc}", path=path) from exc


class NnunetCase(Case):
    """One case of an nnU-Net raw dataset: ``CTres``, ``SUV`` and (training cases) ``SEG``.

    ``metadata``: ``case_id``, ``tracer``, ``subject``, ``study`` (from the case id; the full
    one when the id was truncated), ``set`` (``train``/``test``), ``folds`` (the folds of
    ``splits_final.json`` whose ``val`` holds it), ``channels`` (volume → channel) and
    ``metadata_rows`` (its rows of the release's metadata CSV), ``notes``.
    """

    def __init__(self, dataset: NnunetDataset, case_id: str, *, test: bool = False) -> None:
        self.dataset = dataset
        self.key = case_id
        self.test = test
        self._metadata: dict[str, Any] | None = None

    def path(self, name: str) -> Path:
        """The file of the volume ``name`` (whether or not it exists)."""
        ds = self.dataset
        if name == "SEG":
            return (
                ds.root
                / (LABELS_TS if self.test else LABELS_TR)
                / label_file(self.key, ds.file_ending)
            )
        if name not in ("CTres", "SUV"):
            raise self._missing(name)
        folder = IMAGES_TS if self.test else IMAGES_TR
        return ds.root / folder / image_file(self.key, ds.roles[name], ds.file_ending)

    @property
    def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            self._metadata = self.dataset._case_metadata(self)
        return self._metadata

    def names(self) -> tuple[str, ...]:
        return tuple(n for n in VOLUMES if self.path(n).is_file())

    def has(self, name: str) -> bool:
        return name in VOLUMES and self.path(name).is_file()

    def volume(self, name: str) -> Volume:
        if not self.has(name):
            raise self._missing(name)
        return load_nifti(self.path(name))

    def source(self, name: str) -> str:
        return str(self.path(name)) if name in VOLUMES else super().source(name)

    def voxel_ml(self, name: str) -> float:
        if not self.has(name):
            raise self._missing(name)
        return header_voxel_ml(self.path(name))


class NnunetDataset(Corpus):
    """An nnU-Net v2 raw dataset folder, e.g. an autoPET challenge release
    (:class:`~petcorpus.layouts.base.Corpus`; see the module docstring).

    Cases are the training cases (``imagesTr``) then the test cases (``imagesTs``), each
    sorted by case id; keys are nnU-Net's case ids. The channel roles are decided on first
    use (:attr:`roles`), which reads the first training case's two images.

    Raises
    ------
    PetcorpusError
        ``root`` has no ``dataset.json`` or it lacks ``channel_names``/``file_ending``.
    """

    layout = "nnunet"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        spec = _read_json(self.root / DATASET_JSON)
        if not isinstance(spec, dict) or "channel_names" not in spec:
            raise PetcorpusError(
                "dataset.json has no channel_names (not an nnU-Net v2 dataset)",
                path=self.root / DATASET_JSON,
                reason=Reason.INVALID_VALUE,
            )
        self.spec: dict[str, Any] = spec
        self.file_ending = str(spec.get("file_ending") or _DEFAULT_ENDING)
        self._roles: dict[str, int] | None = None
        self._tables: dict[str, pd.DataFrame] | None = None
        self._folds: dict[str, list[int]] | None = None

    @classmethod
    def sniff(cls, path: Path) -> bool:
        return path.is_dir() and (path / DATASET_JSON).is_file() and (path / IMAGES_TR).is_dir()

    # -- cases ---------------------------------------------------------------------------------
    def _ids(self, folder: str) -> list[str]:
        d = self.root / folder
        if not d.is_dir():
            return []
        tail = len("_0000") + len(self.file_ending)
        ids = {
            p.name[:-tail]
            for p in d.iterdir()
            if p.name.endswith(self.file_ending) and re.fullmatch(r"_\d{4}", p.name[-tail:][:5])
        }
        return sorted(ids)

    def cases(self) -> Iterator[NnunetCase]:
        for case_id in self._ids(IMAGES_TR):
            yield NnunetCase(self, case_id)
        for case_id in self._ids(IMAGES_TS):
            yield NnunetCase(self, case_id, test=True)

    def case(self, key: str) -> NnunetCase:
        for test, folder in ((False, IMAGES_TR), (True, IMAGES_TS)):
            if (self.root / folder / image_file(key, 0, self.file_ending)).is_file():
                return NnunetCase(self, key, test=test)
        raise PetcorpusError(f"no case {key} in the dataset", path=self.root,
                             reason=Reason.NO_SERIES)  # fmt: skip

    @property
    def roles(self) -> dict[str, int]:
        """``{"CTres": channel, "SUV": channel}`` (:func:`channel_roles`, checked on the
        first training case)."""
        if self._roles is None:
            first = next(iter(self._ids(IMAGES_TR) or self._ids(IMAGES_TS)), None)
            samples: dict[int, np.ndarray] = {}
            if first is not None:
                folder = IMAGES_TR if self._ids(IMAGES_TR) else IMAGES_TS
                for c in range(len(self.spec["channel_names"])):
                    p = self.root / folder / image_file(first, c, self.file_ending)
                    if p.is_file():
                        samples[c] = np.asarray(load_nifti(p).array)
            self._roles = channel_roles(
                self.spec["channel_names"], samples, where=self.root / DATASET_JSON
            )
        return self._roles

    # -- metadata ------------------------------------------------------------------------------
    def tables(self) -> dict[str, pd.DataFrame]:
        """The release's metadata CSVs by tracer (``FDG``, ``PSMA``), as text columns."""
        if self._tables is None:
            import pandas as pd

            self._tables = {}
            for tracer, name in METADATA_CSVS.items():
                p = self.root / name
                if not p.is_file():
                    continue
                try:
                    df = pd.read_csv(p, dtype=str, keep_default_na=False, encoding="utf-8-sig")
                except (OSError, ValueError, UnicodeDecodeError) as exc:
                    raise CorruptFileError(f"cannot read the metadata CSV: {exc}", path=p) from exc
                if "Subject ID" not in df.columns:
                    raise PetcorpusError(
                        f"no 'Subject ID' column (columns: {', '.join(df.columns)})",
                        path=p,
                        reason=Reason.MISSING_TAG,
                    )
                self._tables[tracer] = df
        return self._tables

    def folds(self) -> dict[str, list[int]]:
        """Case id → the folds of ``splits_final.json`` that validate on it ({} without)."""
        if self._folds is None:
            self._folds = {}
            p = self.root / SPLITS_FINAL
            if p.is_file():
                splits = _read_json(p)
                if not isinstance(splits, list):
                    raise CorruptFileError("expected a list of {train, val} folds", path=p)
                for k, fold in enumerate(splits):
                    for case_id in (fold or {}).get("val", []):
                        self._folds.setdefault(str(case_id), []).append(k)
        return self._folds

    def _case_metadata(self, case: NnunetCase) -> dict[str, Any]:
        rid = parse_case_id(case.key)
        rows, full, notes = match_rows(rid, case.key, self.tables())
        if full != case.key:
            rid = parse_case_id(full)
        meta: dict[str, Any] = {
            "case_id": case.key,
            "tracer": rid.tracer,
            "subject": rid.subject,
            "study": rid.study,
            "set": "test" if case.test else "train",
            "folds": self.folds().get(case.key, []),
            "channels": {n: int(c) for n, c in self.roles.items()},
            "channel_names": dict(self.spec["channel_names"]),
            "metadata_rows": rows,
            "notes": notes,
        }
        if full != case.key:
            meta["full_case_id"] = full
        return meta


# -- writing ----------------------------------------------------------------------------------
LinkMode = Literal["hardlink", "symlink", "copy"]


def link_or_copy(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, copy: bool = False
) -> LinkMode:
    """Put ``src`` at ``dst``: a hard link, else (another file system, no permission) a
    symbolic link to its absolute path; a copy with ``copy``. Returns what was made."""
    src, dst = Path(src), Path(dst)
    if copy:
        shutil.copyfile(src, dst)
        return "copy"
    try:
        os.link(src, dst)
        return "hardlink"
    except OSError:
        os.symlink(src.resolve(), dst)
        return "symlink"


@dataclasses.dataclass(frozen=True)
class ExportCase:
    """One case to write: its channel images in channel order and its label, each a file
    (linked or copied) or a :class:`Volume` (written)."""

    case_id: str
    images: Sequence[Path | Volume]
    label: Path | Volume | None = None
    key: str | None = None  # the corpus key, recorded in CASE_MAP


def _put(item: Path | Volume, dst: Path, copy: bool) -> LinkMode:
    if isinstance(item, Volume):
        from petcorpus.nifti import write_nifti

        write_nifti(item, dst)
        return "copy"
    return link_or_copy(item, dst, copy=copy)


def write_nnunet_dataset(
    folder: str | os.PathLike[str],
    train: Sequence[ExportCase],
    *,
    channel_names: Mapping[int, str],
    labels: Mapping[str, int],
    test: Sequence[ExportCase] = (),
    splits: Sequence[Mapping[str, Sequence[str]]] | None = None,
    extra: Mapping[str, Any] | None = None,
    copy: bool = False,
) -> dict[str, Any]:
    """Write an nnU-Net v2 raw dataset folder atomically (built beside it, renamed in).

    Parameters
    ----------
    folder : path
        ``<nnUNet_raw>/DatasetNNN_Name``; replaced as a whole if it exists.
    train, test : sequence of ExportCase
        ``imagesTr`` + ``labelsTr``; ``imagesTs`` (+ ``labelsTs`` where a label is given:
        nnU-Net ignores it, ``petcorpus evaluate`` scores test predictions against it).
    channel_names, labels : mapping
        ``dataset.json``'s entries (``{0: "CT", 1: "PET"}``, ``{"background": 0, ...}``).
    splits : sequence of {"train": [...], "val": [...]}, optional
        Written as ``splits_final.json`` in the folder (nnU-Net reads it from
        ``nnUNet_preprocessed``; the caller copies it there).
    extra : mapping, optional
        More ``dataset.json`` keys (name, description, reference, licence, ...).
    copy : bool
        Copy files instead of hard-linking them (symbolic links where hard links fail).

    Returns
    -------
    dict
        ``links``: how many files were hard-linked / symlinked / copied.
    """
    final = Path(folder)
    ids = [c.case_id for c in (*train, *test)]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise PetcorpusError(f"case ids used twice: {', '.join(dupes[:5])}", path=final,
                             reason=Reason.OUTPUT_COLLISION)  # fmt: skip
    n_channels = len(channel_names)
    made: dict[str, int] = {"hardlink": 0, "symlink": 0, "copy": 0}
    with atomic_dir(final) as tmp:
        for sub, cases in ((IMAGES_TR, train), (IMAGES_TS, test)):
            if not cases:
                continue
            (tmp / sub).mkdir()
            labels_dir = tmp / (LABELS_TR if sub == IMAGES_TR else LABELS_TS)
            for c in cases:
                if len(c.images) != n_channels:
                    raise ValueError(
                        f"{c.case_id}: {len(c.images)} images for {n_channels} channels"
                    )
                for ch, item in enumerate(c.images):
                    made[_put(item, tmp / sub / image_file(c.case_id, ch), copy)] += 1
                if c.label is not None:
                    labels_dir.mkdir(exist_ok=True)
                    made[_put(c.label, labels_dir / label_file(c.case_id), copy)] += 1
                elif sub == IMAGES_TR:
                    raise PetcorpusError(f"training case {c.case_id} has no label", path=final,
                                         reason=Reason.NO_SERIES)  # fmt: skip
        (tmp / LABELS_TR).mkdir(exist_ok=True)
        spec = {
            "channel_names": {str(k): v for k, v in sorted(channel_names.items())},
            "labels": dict(labels),
            "numTraining": len(train),
            "file_ending": _DEFAULT_ENDING,
            **dict(extra or {}),
        }
        _write_json(tmp / DATASET_JSON, spec)
        if splits is not None:
            _write_json(tmp / SPLITS_FINAL, [{"train": list(f["train"]), "val": list(f["val"])}
                                             for f in splits])  # fmt: skip
        mapping = {
            c.case_id: {"key": c.key, "set": "test" if i >= len(train) else "train"}
            for i, c in enumerate((*train, *test))
        }
        _write_json(tmp / CASE_MAP, mapping)
    return {"links": made}


def _write_json(path: Path, data: Any) -> None:
    with atomic_write(path) as fh:
        fh.write((json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())
