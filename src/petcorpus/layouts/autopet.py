"""The autoPET NIfTI layout: ``<out>/<subject>/<study>/{CT,PET,SUV,CTres,SEG}.nii.gz``.

One folder per study holds five NIfTI files and a JSON sidecar (see docs/formats.md):

=========  ==========================================  ========  ========
file       content                                     dtype     grid
=========  ==========================================  ========  ========
CT         CT in HU                                    int16     CT
PET        PET in Bq/ml (per-slice rescale applied)    float32   PET
SUV        PET x SUV factor                            float32   PET
CTres      CT resampled to the PET grid, fill -1024    float32   PET
SEG        lesion mask 0/1                             uint8     PET
=========  ==========================================  ========  ========

plus ``petcorpus.json`` (SUV inputs and factor, time reference, source series UIDs,
petcorpus version; never a patient name, ID or birth date). A study is written into a
temporary sibling folder and renamed into place (:func:`petcorpus.atomic.atomic_dir`), the
five files compressed in parallel threads (ISA-L releases the GIL).

The dtypes of compat mode (:data:`COMPAT_DTYPES`, two flavours) are stored here; the
recipe's re-implementation that produces such volumes is :mod:`petcorpus.compat_autopet`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from petcorpus.atomic import TEMP_PREFIX, atomic_dir
from petcorpus.errors import CorruptFileError, GeometryMismatchError, PetcorpusError, Reason
from petcorpus.layouts._nifti import header_voxel_ml, load_nifti
from petcorpus.layouts.base import Case, Corpus
from petcorpus.nifti import write_nifti
from petcorpus.volume import Volume

__all__ = [
    "COMPAT_DTYPES",
    "DTYPES",
    "FILES",
    "FORBIDDEN_SIDECAR_KEYS",
    "NAMES",
    "SIDECAR",
    "AutopetCase",
    "AutopetCorpus",
    "AutopetStudy",
    "CompatFlavor",
    "file_name",
    "iter_autopet_studies",
    "read_autopet_study",
    "sidecar_bytes",
    "write_autopet_study",
]

#: The five image files of a study, in writing order.
FILES: tuple[str, ...] = ("CT", "PET", "SUV", "CTres", "SEG")
#: Every volume name a study folder may hold: the five files, and ``PRED`` (a predicted
#: lesion mask, in a prediction folder laid out like the corpus).
NAMES: tuple[str, ...] = (*FILES, "PRED")
#: Name of the per-study JSON sidecar.
SIDECAR = "petcorpus.json"


def file_name(name: str) -> str:
    """The file holding the volume ``name`` in a study folder: ``"SUV"`` → ``SUV.nii.gz``."""
    return f"{name}.nii.gz"


#: Stored dtype per file (petcorpus default).
DTYPES: Mapping[str, np.dtype[Any]] = {
    "CT": np.dtype(np.int16),
    "PET": np.dtype(np.float32),
    "SUV": np.dtype(np.float32),
    "CTres": np.dtype(np.float32),
    "SEG": np.dtype(np.uint8),
}
CompatFlavor = Literal["published", "current"]
#: Stored dtype per file in compat mode, per flavour (see the module docstring).
COMPAT_DTYPES: Mapping[str, Mapping[str, np.dtype[Any]]] = {
    "published": DTYPES,
    "current": {
        "CT": np.dtype(np.float64),
        "PET": np.dtype(np.float64),
        "SUV": np.dtype(np.float32),
        "CTres": np.dtype(np.float64),
        "SEG": np.dtype(np.uint8),
    },
}
#: Sidecar keys that would identify a patient; :func:`write_autopet_study` refuses them.
FORBIDDEN_SIDECAR_KEYS = frozenset(
    k.lower()
    for k in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "patient_name",
        "patient_id",
        "birth_date",
        "PatientAddress",
        "OtherPatientIDs",
        "OtherPatientNames",
        "PatientTelephoneNumbers",
        "AccessionNumber",
        "InstitutionName",
        "ReferringPhysicianName",
    )
)
SIDECAR_SCHEMA_VERSION = 1


@dataclasses.dataclass
class AutopetStudy:
    """The five volumes of one study and its sidecar.

    ``seg`` may be None (a study without a SEG); it is then not written.
    """

    ct: Volume
    pet: Volume
    suv: Volume
    ctres: Volume
    seg: Volume | None
    sidecar: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_volumes(
        cls, volumes: Mapping[str, Volume], sidecar: dict[str, Any] | None = None
    ) -> AutopetStudy:
        """Build from volumes keyed by file name (``CT``, ``PET``, ``SUV``, ``CTres``,
        optional ``SEG``)."""
        return cls(
            ct=volumes["CT"],
            pet=volumes["PET"],
            suv=volumes["SUV"],
            ctres=volumes["CTres"],
            seg=volumes.get("SEG"),
            sidecar=sidecar if sidecar is not None else {},
        )

    def volumes(self) -> dict[str, Volume]:
        """The volumes by file name (``CT``, ``PET``, ...), without missing ones."""
        vols = {"CT": self.ct, "PET": self.pet, "SUV": self.suv, "CTres": self.ctres}
        if self.seg is not None:
            vols["SEG"] = self.seg
        return vols


# -- writing / reading --------------------------------------------------------------------------


def _check_sidecar(obj: Any, where: str = "") -> None:
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if str(key).lower() in FORBIDDEN_SIDECAR_KEYS:
                raise ValueError(
                    f"sidecar key {where}{key!r} would identify the patient; remove it"
                )
            _check_sidecar(value, f"{where}{key}.")
    elif isinstance(obj, list | tuple):
        for item in obj:
            _check_sidecar(item, where)


def sidecar_bytes(sidecar: Mapping[str, Any]) -> bytes:
    """The sidecar as written: sorted keys, 2-space indent, UTF-8, trailing newline."""
    from petcorpus import __version__

    data = dict(sidecar)
    data.setdefault("petcorpus_version", __version__)
    data.setdefault("schema_version", SIDECAR_SCHEMA_VERSION)
    _check_sidecar(data)
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def _dtypes_for(study: AutopetStudy, dtypes: Mapping[str, npt.DTypeLike] | str | None):
    if isinstance(dtypes, str):
        if dtypes == "keep":
            return {name: vol.dtype for name, vol in study.volumes().items()}
        if dtypes in COMPAT_DTYPES:
            return dict(COMPAT_DTYPES[dtypes])
        raise ValueError(f"dtypes must be a mapping, 'keep' or a compat flavour, got {dtypes!r}")
    if dtypes is not None:
        return {**DTYPES, **{k: np.dtype(v) for k, v in dtypes.items()}}
    options = study.sidecar.get("options") or {}
    if study.sidecar.get("compat") == "autopet" or options.get("compat") == "autopet":
        flavor = study.sidecar.get("compat_flavor") or options.get("compat_flavor") or "published"
        return dict(COMPAT_DTYPES[flavor])
    return dict(DTYPES)


def write_autopet_study(
    study_dir: str | os.PathLike[str],
    study: AutopetStudy,
    *,
    workers: int | None = None,
    dtypes: Mapping[str, npt.DTypeLike] | str | None = None,
    level: int = 1,
) -> dict[str, Path]:
    """Write one study folder atomically: the NIfTI files plus ``petcorpus.json``.

    Parameters
    ----------
    study_dir : path-like
        ``<out>/<subject>/<study>``; replaced as a whole if it exists.
    study : AutopetStudy
    workers : int, optional
        Threads compressing files in parallel (default: min(5, CPU count)).
    dtypes : mapping, "keep", "published" or "current", optional
        Stored dtypes. Default :data:`DTYPES`, or the compat flavour's
        (:data:`COMPAT_DTYPES`) when the sidecar says ``compat: autopet`` (top level or under
        ``options``; flavour from ``compat_flavor``, default ``published``). ``"keep"`` writes
        each array in its own dtype.
    level : int
        ISA-L compression level (0-3).

    Returns
    -------
    dict
        File name (``CT``, ..., ``sidecar``) → final path.
    """
    final = Path(study_dir)
    vols = study.volumes()
    types = _dtypes_for(study, dtypes)
    sidecar = sidecar_bytes(study.sidecar)
    for grid_name in ("SUV", "CTres", "SEG"):
        if grid_name in vols and not vols[grid_name].same_grid(study.pet):
            raise GeometryMismatchError(
                f"{grid_name} is not on the PET grid ({vols[grid_name]!r} vs {study.pet!r})",
                path=final,
            )
    n = workers or min(len(vols), os.cpu_count() or 1)
    with atomic_dir(final) as tmp:

        def one(name: str) -> None:
            write_nifti(vols[name], tmp / file_name(name), dtype=types[name], level=level)

        if n > 1:
            with ThreadPoolExecutor(max_workers=n) as pool:
                list(pool.map(one, vols))
        else:
            for name in vols:
                one(name)
        (tmp / SIDECAR).write_bytes(sidecar)
    paths = {name: final / file_name(name) for name in vols}
    paths["sidecar"] = final / SIDECAR
    return paths


def read_autopet_study(study_dir: str | os.PathLike[str]) -> AutopetStudy:
    """Read a study folder back (SEG None when absent; sidecar {} when absent)."""
    case = AutopetCase(study_dir)
    missing = [n for n in FILES[:4] if not case.has(n)]
    if missing:
        raise PetcorpusError(
            f"not an autoPET study folder: missing {', '.join(map(file_name, missing))}",
            path=case.folder,
            reason=Reason.NO_SERIES,
        )
    vols = {n: case.volume(n) for n in FILES if case.has(n)}
    return AutopetStudy.from_volumes(vols, case.metadata)


def iter_autopet_studies(root: str | os.PathLike[str]) -> Iterator[tuple[str, str, Path]]:
    """Yield ``(subject, study, folder)`` for every ``<root>/<subject>/<study>/`` holding a
    ``PET.nii.gz``, sorted; temporary folders of unfinished writes are skipped."""
    if not Path(root).is_dir():
        return
    for case in AutopetCorpus(root).cases():
        if case.has("PET"):
            yield case.subject, case.study, case.folder


# -- the common corpus shape ----------------------------------------------------------------


class AutopetCase(Case):
    """One study folder ``<subject>/<study>/`` (:class:`~petcorpus.layouts.base.Case`).

    Volumes are the files :data:`NAMES` present (``volume("SUV")`` reads ``SUV.nii.gz``);
    ``metadata`` is the sidecar ``petcorpus.json`` ({} when absent, read once).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.subject = self.folder.parent.name
        self.study = self.folder.name
        self.key = f"{self.subject}/{self.study}"
        self._metadata: dict[str, Any] | None = None

    def path(self, name: str) -> Path:
        """The file of the volume ``name`` (whether or not it exists)."""
        return self.folder / file_name(name)

    @property
    def sidecar_path(self) -> Path:
        return self.folder / SIDECAR

    @property
    def metadata(self) -> dict[str, Any]:
        """The sidecar as a dict ({} when absent or not a JSON object).

        Raises
        ------
        CorruptFileError
            The sidecar is not valid JSON.
        """
        if self._metadata is None:
            p = self.sidecar_path
            data: Any = {}
            if p.is_file():
                try:
                    data = json.loads(p.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise CorruptFileError(f"invalid JSON: {exc}", path=p) from exc
            self._metadata = data if isinstance(data, dict) else {}
        return self._metadata

    def names(self) -> tuple[str, ...]:
        return tuple(n for n in NAMES if self.path(n).is_file())

    def has(self, name: str) -> bool:
        return name in NAMES and self.path(name).is_file()

    def volume(self, name: str) -> Volume:
        if not self.has(name):
            raise self._missing(name)
        return load_nifti(self.path(name))

    def source(self, name: str) -> str:
        return str(self.path(name))

    def voxel_ml(self, name: str) -> float:
        if not self.has(name):
            raise self._missing(name)
        return header_voxel_ml(self.path(name))

    def suv(self) -> tuple[Volume, Volume | None]:
        """The SUV: ``SUV.nii.gz``, else ``PET.nii.gz`` x the sidecar's ``suv.factor``
        (in float32). Returns (SUV, the PET when it was read, else None).

        Raises
        ------
        PetcorpusError
            Neither is there.
        """
        if self.has("SUV"):
            return self.volume("SUV"), None
        pet = self.volume("PET") if self.has("PET") else None
        factor = (self.metadata.get("suv") or {}).get("factor") if self.metadata else None
        if pet is None or not isinstance(factor, int | float):
            raise PetcorpusError(
                f"no {file_name('SUV')} (and no {file_name('PET')} with an SUV factor in "
                f"{SIDECAR})",
                path=self.folder,
            )
        suv = pet.with_array(np.asarray(pet.array, dtype=np.float32) * np.float32(factor))
        return suv, pet


class AutopetCorpus(Corpus):
    """A corpus in the autoPET layout: ``<root>/<subject>/<study>/`` folders
    (:class:`~petcorpus.layouts.base.Corpus`).

    A case is every study folder holding any file of :data:`NAMES` or the sidecar, sorted by
    subject then study; hidden folders and the temporary folders of unfinished writes
    (``.tmp-*``) are skipped.

    Raises
    ------
    PetcorpusError
        ``root`` is not a folder.
    """

    layout = "autopet"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise PetcorpusError("not a folder", path=self.root, reason=Reason.NO_SERIES)

    @classmethod
    def sniff(cls, path: Path) -> bool:
        return path.is_dir() and next(_study_folders(path), None) is not None

    def cases(self) -> Iterator[AutopetCase]:
        for folder in _study_folders(self.root):
            yield AutopetCase(folder)

    def case(self, key: str) -> AutopetCase:
        subject, _, study = key.partition("/")
        folder = self.root / subject / study
        if not (subject and study and _is_study(folder)):
            raise PetcorpusError(f"no case {key} in the corpus", path=self.root,
                                 reason=Reason.NO_SERIES)  # fmt: skip
        return AutopetCase(folder)


def _visible(p: Path) -> bool:
    return p.is_dir() and not p.name.startswith((TEMP_PREFIX, "."))


def _is_study(folder: Path) -> bool:
    return folder.is_dir() and any(
        (folder / f).is_file() for f in (*map(file_name, NAMES), SIDECAR)
    )


def _study_folders(root: Path) -> Iterator[Path]:
    for subject in sorted(p for p in root.iterdir() if _visible(p)):
        for study in sorted(p for p in subject.iterdir() if _visible(p)):
            if _is_study(study):
                yield study
