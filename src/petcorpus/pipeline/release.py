"""The nnU-Net v2 raw format both ways: import an autoPET challenge release as a corpus in the
autoPET layout (``petcorpus build --from nnunet RELEASE OUT``, :func:`import_release`),
and export a corpus as an nnU-Net v2 dataset (``petcorpus export-nnunet``,
:func:`export_nnunet`). File names are :mod:`petcorpus.layouts.nnunet`'s.

Each case of the release (:class:`~petcorpus.layouts.nnunet.NnunetDataset`) becomes a study
folder ``OUT/<subject>/<study>/`` holding ``CTres.nii.gz``, ``SUV.nii.gz`` and ``SEG.nii.gz``
— hard links to the release's files (symbolic links where the file system refuses hard
links; copies with ``copy=True``) — and a ``petcorpus.json`` sidecar (the release, the case
id, tracer, radionuclide, which channel was which, the lesion voxel count). Subjects and
studies are named as a conversion of the TCIA DICOM names them: ``PETCT_<hex>/<TCIA study
folder>`` for FDG, ``PSMA_<hex>/<YYYY-MM-DD>`` for PSMA. The catalog gets

- subjects: age and sex from the metadata CSV; diagnosis (FDG: the patient's, from
  ``fdg_metadata.csv``); site (:data:`RELEASE_SITES`, the cohorts of the release: FDG from
  Tübingen, PSMA from LMU Munich; ``site=`` overrides);
- studies: date, and a per-study diagnosis from the label (``NEGATIVE`` when the mask is
  empty, else the patient's diagnosis, or ``POSITIVE`` where the CSV has none);
- series CT and PT: manufacturer and model, ``Radiopharmaceutical`` (FDG, PSMA) and
  ``Radionuclide`` (18F, 68Ga) as parameters; a SEG series with ``lesion_voxels``;
- the linked files as artifacts (so ``petcorpus verify`` checks them).

The release holds no native CT (HU on the CT grid) nor PET in Bq/ml: readers that need
them (organ statistics over a PET in Bq/ml, ``--compat``) say so for these studies.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from petcorpus.atomic import atomic_dir
from petcorpus.catalog import Catalog
from petcorpus.errors import GeometryMismatchError, PetcorpusError, Reason
from petcorpus.layouts.autopet import SIDECAR, file_name, sidecar_bytes
from petcorpus.layouts.nnunet import NnunetCase, NnunetDataset, link_or_copy
from petcorpus.naming import OutputName

__all__ = [
    "LABELS",
    "PET_CHANNEL_NAMES",
    "RELEASE_SITES",
    "NnunetExport",
    "ReleaseImportReport",
    "export_nnunet",
    "import_release",
]

#: Where each tracer's training cohort of the challenge releases was scanned.
RELEASE_SITES: Mapping[str, str] = {"FDG": "UKT", "PSMA": "LMU"}
#: Radionuclide of a tracer when the metadata CSV does not say.
_RADIONUCLIDE = {"FDG": "18F"}
#: Manufacturer of the PSMA cohort's scanner models (psma_metadata.csv names the model only).
_MAKERS = {"biograph": "SIEMENS", "discovery": "GE MEDICAL SYSTEMS"}
#: What the release does not hold, said in each sidecar.
NO_NATIVE = "no native CT (HU) and no PET in Bq/ml: the release holds CTres and SUV only"


@dataclasses.dataclass
class ReleaseImportReport:
    """What :func:`import_release` did."""

    run_id: int
    done: list[str]  # "<subject>/<study>"
    failed: dict[str, str]  # case id → "[REASON] message"
    notes: dict[str, list[str]]  # case id → notes (truncated ids, missing metadata)
    tracers: dict[str, int]
    links: dict[str, int]


def _first(rows: Sequence[Mapping[str, str]], *columns: str) -> str | None:
    for col in columns:
        for row in rows:
            v = str(row.get(col) or "").strip()
            if v:
                return v
    return None


def _of_modality(rows: Sequence[Mapping[str, str]], modality: str) -> list[Mapping[str, str]]:
    own = [r for r in rows if str(r.get("Modality", "")).upper() == modality]
    return own or list(rows)


def _facts(case: NnunetCase, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Subject, study and acquisition facts of a case from its CSV rows."""
    from petcorpus.tables import _parse_age, _parse_date

    rows = meta["metadata_rows"]
    tracer = meta["tracer"]
    csv = Path(case.dataset.root, "metadata.csv")
    age_text = _first(rows, "age", "Age", "Patient Age")
    diags = {str(r.get("diagnosis", "")).strip().upper() for r in rows} - {""}
    date_text = _first(rows, "Study Date")
    try:
        date = _parse_date(date_text, csv) if date_text else None
    except PetcorpusError:
        date = None
    if date is None and tracer == "PSMA":
        date = meta["study"] if len(meta["study"]) == 10 else None
    elif date is None and meta["study"][:10].count("-") == 2:  # TCIA folder MM-DD-YYYY-...
        m, d, y = meta["study"][:10].split("-")
        date = f"{y}-{m}-{d}" if (y + m + d).isdigit() else None
    model = _first(rows, "manufacturer_model_name", "Manufacturer Model Name")
    maker = _first(_of_modality(rows, "PT"), "Manufacturer")
    if maker is None and model:
        maker = _MAKERS.get(model.split()[0].lower())
    try:
        age = _parse_age(age_text, csv) if age_text else None
    except PetcorpusError:
        age = None
    return {
        "age": age,
        "sex": (_first(rows, "sex", "Sex", "Patient Sex") or "").upper() or None,
        "diagnosis": diags.pop() if len(diags) == 1 else None,
        "date": date,
        "study_uid": _first(rows, "Study UID"),
        "radionuclide": _first(rows, "pet_radionuclide") or _RADIONUCLIDE.get(tracer or ""),
        "pt_maker": maker,
        "ct_maker": _first(_of_modality(rows, "CT"), "Manufacturer") or maker,
        "model": model,
        "contrast": _first(rows, "ct_contrast_agent"),
    }


def _check_grids(case: NnunetCase) -> None:
    import nibabel as nib

    ref = cast("nib.Nifti1Image", nib.load(case.path("SUV")))
    for name in ("CTres", "SEG"):
        img = cast("nib.Nifti1Image", nib.load(case.path(name)))
        if img.shape != ref.shape or not np.allclose(img.affine, ref.affine, atol=1e-3):
            raise GeometryMismatchError(
                f"{name} is not on the SUV's grid ({img.shape} vs {ref.shape})",
                path=case.path(name),
            )


def import_release(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    copy: bool = False,
    site: str | None = None,
    licence: str | None = None,
    command: Sequence[str] | str | None = None,
) -> ReleaseImportReport:
    """Catalogue an autoPET challenge release into ``out`` in the autoPET layout (see the
    module docstring). A case that cannot be imported (a missing label, grids that differ,
    two cases naming one study) is recorded as a failure; the rest goes on.

    Raises
    ------
    PetcorpusError
        ``root`` is not an nnU-Net raw dataset, or its channel order cannot be trusted
        (:func:`~petcorpus.layouts.nnunet.channel_roles`): nothing is written then.
    """
    release = NnunetDataset(root)
    roles = release.roles  # refuses a wrong or unknowable channel order before any write
    out = Path(out)
    report = ReleaseImportReport(0, [], {}, {}, {}, {"hardlink": 0, "symlink": 0, "copy": 0})
    taken: dict[str, str] = {}
    with Catalog.open(out) as catalog:
        report.run_id = catalog.start_run(
            command, {"from": "nnunet", "root": str(root), "copy": copy}
        )
        for case in release.cases():
            uid = None
            try:
                meta = case.metadata
                if meta["notes"]:
                    report.notes[case.key] = list(meta["notes"])
                name = OutputName(meta["subject"], meta["study"])
                if name.key() in taken:
                    raise PetcorpusError(
                        f"cases {taken[name.key()]} and {case.key} both name study {name}",
                        path=case.path("SUV"),
                        reason=Reason.OUTPUT_COLLISION,
                    )
                taken[name.key()] = case.key
                facts = _facts(case, meta)
                uid = facts["study_uid"] or f"nnunet:{meta.get('full_case_id', case.key)}"
                catalog.record_subject(
                    name.subject,
                    sex=facts["sex"],
                    age=facts["age"],
                    diagnosis=facts["diagnosis"],
                    site=site or RELEASE_SITES.get(meta["tracer"] or ""),
                    licence=licence,
                )
                catalog.record_study(uid, subject_id=name.subject, study_date=facts["date"],
                                     source=str(name))  # fmt: skip
                missing = [n for n in ("CTres", "SUV", "SEG") if not case.has(n)]
                if missing:
                    raise PetcorpusError(
                        f"case {case.key} has no {', '.join(missing)}",
                        path=case.path(missing[0]),
                        reason=Reason.NO_SERIES,
                    )
                _check_grids(case)
                voxels = int(np.count_nonzero(np.asarray(case.volume("SEG").array)))
                paths = _write_study(case, out / name.subject / name.study, meta, facts,
                                     uid, voxels, copy, report.links)  # fmt: skip
                diagnosis = "NEGATIVE" if voxels == 0 else (
                    facts["diagnosis"] if facts["diagnosis"] not in (None, "NEGATIVE")
                    else "POSITIVE"
                )  # fmt: skip
                if voxels and facts["diagnosis"] == "NEGATIVE":
                    report.notes.setdefault(case.key, []).append(
                        f"the patient's diagnosis is NEGATIVE but the label has {voxels} "
                        "lesion voxels"
                    )
                with catalog.transaction():
                    catalog.record_study(uid, subject_id=name.subject, diagnosis=diagnosis)
                    catalog.record_series(_series(uid, meta, facts, roles, voxels))
                    catalog.record_artifacts(uid, paths)
                    catalog.set_status(uid, "done")
                report.done.append(str(name))
                tracer = meta["tracer"] or "unknown"
                report.tracers[tracer] = report.tracers.get(tracer, 0) + 1
            except (PetcorpusError, OSError) as exc:
                if isinstance(exc, PetcorpusError):
                    report.failed[case.key] = f"[{exc.reason}] {exc}"
                else:
                    report.failed[case.key] = f"[{Reason.CORRUPT_FILE}] {exc}"
                if uid is not None:
                    catalog.record_failure(report.run_id, uid, "import", exc)
                    catalog.set_status(uid, "failed")
        catalog.finish_run(report.run_id, {"done": len(report.done), "failed": len(report.failed)})
    return report


def _write_study(
    case: NnunetCase,
    folder: Path,
    meta: Mapping[str, Any],
    facts: Mapping[str, Any],
    uid: str,
    voxels: int,
    copy: bool,
    links: dict[str, int],
) -> dict[str, Path]:
    root = case.dataset.root
    sidecar: dict[str, Any] = {
        "source": {
            "format": "nnunet",
            "release": root.resolve().name,
            "case_id": case.key,
            "files": {
                n: case.path(n).relative_to(root).as_posix() for n in ("CTres", "SUV", "SEG")
            },
            "channels": dict(meta["channels"]),
            "channel_names": dict(meta["channel_names"]),
            "set": meta["set"],
            "folds": list(meta["folds"]),
        },
        "study_instance_uid": uid,
        "tracer": meta["tracer"],
        "radionuclide": facts["radionuclide"],
        "lesion_voxels": voxels,
        "notes": [*meta["notes"], NO_NATIVE],
    }
    if "full_case_id" in meta:
        sidecar["source"]["full_case_id"] = meta["full_case_id"]
    made = []
    with atomic_dir(folder) as tmp:
        for name in ("CTres", "SUV", "SEG"):
            made.append(link_or_copy(case.path(name), tmp / file_name(name), copy=copy))
        sidecar["source"]["linked"] = sorted(set(made))
        (tmp / SIDECAR).write_bytes(sidecar_bytes(sidecar))
    for m in made:
        links[m] += 1
    paths = {n: folder / file_name(n) for n in ("CTres", "SUV", "SEG")}
    paths["sidecar"] = folder / SIDECAR
    return paths


def _series(
    uid: str, meta: Mapping[str, Any], facts: Mapping[str, Any], roles: Mapping[str, int],
    voxels: int,
) -> list[dict[str, Any]]:  # fmt: skip
    tracer = meta["tracer"]
    files = {"CTres": roles["CTres"], "SUV": roles["SUV"]}
    common = {
        "study_uid": uid,
        "files": 1,
        "frame_of_reference_uid": None,
        "model": facts["model"],
    }
    return [
        {
            **common,
            "series_uid": f"{uid}:CT",
            "modality": "CT",
            "manufacturer": facts["ct_maker"],
            "description": f"CT resampled to the PET grid (channel {files['CTres']})",
            "params": {"ContrastAgent": facts["contrast"], "channel": files["CTres"]},
        },
        {
            **common,
            "series_uid": f"{uid}:PT",
            "modality": "PT",
            "manufacturer": facts["pt_maker"],
            "description": f"PET in SUV (channel {files['SUV']})",
            "params": {
                "Radiopharmaceutical": tracer,
                "Radionuclide": facts["radionuclide"],
                "channel": files["SUV"],
            },
        },
        {
            **common,
            "series_uid": f"{uid}:SEG",
            "modality": "SEG",
            "manufacturer": None,
            "model": None,
            "description": "lesion label",
            "params": {"lesion_voxels": voxels, "positive": bool(voxels)},
        },
    ]


# -- the other way: a corpus as an nnU-Net v2 dataset ----------------------------------------
#: Names of the PET channel in ``dataset.json`` and the normalisation nnU-Net then applies
#: (nnU-Net's ``map_channel_name_to_normalization.py``; any unknown name means z-score).
PET_CHANNEL_NAMES: Mapping[str, str] = {
    "PET": "z-score per case (nnU-Net's default for any name it does not know)",
    "CT": "CT-style: clip to the dataset's 0.5-99.5 percentiles, then global z-score",
    "noNorm": "none (SUV as stored)",
}
#: The label of ``dataset.json`` (as nnU-Net's Dataset221 conversion names it).
LABELS: Mapping[str, int] = {"background": 0, "tumor": 1}
DEFAULT_FOLDS = 5
#: nnU-Net's environment variable naming its preprocessed folder (nnunetv2/paths.py).
NNUNET_PREPROCESSED = "nnUNet_preprocessed"


@dataclasses.dataclass
class NnunetExport:
    """What :func:`export_nnunet` wrote."""

    folder: Path
    train: int
    test: int
    splits: list[Path]
    split_source: str  # "catalog", "default" (patient-level, 5 folds, seed 0) or "none"
    links: dict[str, int]
    notes: list[str]


def _case_id(subject: str, study: str) -> str:
    """``<subject>_<study>``, as nnU-Net's Dataset221 conversion names a study (spaces and
    all: nnU-Net reads any file name)."""
    return f"{subject}_{study}"


def _split_of(
    out: Path, subjects: Sequence[str], notes: list[str]
) -> tuple[dict[str, int | None], str]:
    """Subject → fold (None: test) from the catalog's split, else a default one."""
    from petcorpus.catalog import CATALOG_NAME
    from petcorpus.splits import make_split

    if (out / CATALOG_NAME).is_file():
        with Catalog.open(out, readonly=True) as catalog:
            rows = catalog.splits()
        if len(rows):
            folds = {
                str(s): None if int(t) else int(f)
                for s, f, t in zip(rows["subject_id"], rows["fold"], rows["is_test"], strict=True)
            }
            return folds, "catalog"
    if len(set(subjects)) >= DEFAULT_FOLDS:
        split = make_split(dict.fromkeys(subjects, "all"), folds=DEFAULT_FOLDS, seed=0)
        notes.append(
            "the corpus has no split (`petcorpus split`): wrote a patient-level 5-fold split "
            "(seed 0, not stratified, no test set)"
        )
        return dict(split.fold_of()), "default"
    notes.append(
        f"the corpus has no split and fewer than {DEFAULT_FOLDS} subjects: no splits_final.json "
        "(nnU-Net will split by case, not by patient)"
    )
    return {}, "none"


def export_nnunet(
    corpus: str | os.PathLike[str],
    nnunet_raw: str | os.PathLike[str],
    *,
    dataset_id: int = 221,
    name: str = "autoPET",
    pet_channel_name: str = "PET",
    copy: bool = False,
    preprocessed: str | os.PathLike[str] | None = None,
) -> NnunetExport:
    """Write a corpus in the autoPET layout as the nnU-Net v2 raw dataset
    ``<nnunet_raw>/Dataset<id>_<name>``.

    Channel ``_0000`` is ``CTres.nii.gz`` (named ``CT``), ``_0001`` is ``SUV.nii.gz`` (named
    ``pet_channel_name``, which chooses nnU-Net's normalisation: :data:`PET_CHANNEL_NAMES`),
    the label ``SEG.nii.gz``; files are hard links (symbolic links across file systems,
    copies with ``copy``). Case ids are ``<subject>_<study>``; ``petcorpus_cases.json`` maps
    them back. The corpus's split (``petcorpus split``) decides ``imagesTr`` / ``imagesTs``
    and ``splits_final.json`` (fold k validates on fold k's subjects); without one, a
    patient-level 5-fold split (seed 0) is written, and none for fewer than 5 subjects.
    ``splits_final.json`` is written in the dataset folder and, when ``preprocessed`` (default
    ``$nnUNet_preprocessed``) is known, in ``<preprocessed>/Dataset<id>_<name>/``, where
    nnU-Net reads it.

    Raises
    ------
    PetcorpusError
        A dataset with this id already exists in ``nnunet_raw``; the corpus has no study
        with CTres, SUV and SEG.
    """
    from petcorpus.atomic import atomic_write
    from petcorpus.layouts.autopet import AutopetCorpus
    from petcorpus.layouts.nnunet import SPLITS_FINAL, ExportCase, dataset_folder_name
    from petcorpus.layouts.nnunet import write_nnunet_dataset as write

    if pet_channel_name not in PET_CHANNEL_NAMES:
        raise ValueError(
            f"pet_channel_name must be one of {', '.join(PET_CHANNEL_NAMES)}, "
            f"got {pet_channel_name!r}"
        )
    out, raw = Path(corpus), Path(nnunet_raw)
    folder_name = dataset_folder_name(dataset_id, name)
    clash = sorted(raw.glob(f"Dataset{dataset_id:03d}_*")) if raw.is_dir() else []
    if clash:
        raise PetcorpusError(
            f"nnU-Net dataset {dataset_id} exists already ({clash[0].name}); remove it or "
            "choose another --id",
            path=clash[0],
            reason=Reason.OUTPUT_COLLISION,
        )
    notes: list[str] = []
    studies = []
    for case in AutopetCorpus(out).cases():
        lacking = [n for n in ("CTres", "SUV") if not case.has(n)]
        if lacking:
            notes.append(f"{case.key}: skipped, no {', '.join(map(file_name, lacking))}")
            continue
        studies.append(case)
    if not studies:
        raise PetcorpusError("no study with CTres and SUV in the corpus", path=out,
                             reason=Reason.NO_SERIES)  # fmt: skip
    fold_of, source = _split_of(out, [c.subject for c in studies], notes)
    train: list[ExportCase] = []
    test: list[ExportCase] = []
    val: dict[int, list[str]] = {}
    for case in studies:
        cid = _case_id(case.subject, case.study)
        seg = case.path("SEG") if case.has("SEG") else None
        item = ExportCase(cid, (case.path("CTres"), case.path("SUV")), seg, key=case.key)
        if source != "none" and case.subject in fold_of and fold_of[case.subject] is None:
            test.append(item)
        elif seg is None:
            notes.append(f"{case.key}: not a training case, no {file_name('SEG')}")
        else:
            train.append(item)
            fold = fold_of.get(case.subject)
            if fold is not None:
                val.setdefault(fold, []).append(cid)
    splits = None
    if source != "none":
        all_train = [c.case_id for c in train]
        splits = [
            {
                "train": [c for c in all_train if c not in set(val.get(k, []))],
                "val": val.get(k, []),
            }
            for k in range(max(val, default=-1) + 1)
        ]
    folder = raw / folder_name
    written = write(
        folder,
        train,
        test=test,
        channel_names={0: "CT", 1: pet_channel_name},
        labels=LABELS,
        splits=splits,
        copy=copy,
        extra={
            "name": name,
            "description": "exported by petcorpus: _0000 CT resampled to the PET grid (HU), "
            "_0001 PET in SUV, label 1 = lesion",
            "split_source": source,
        },
    )
    split_paths = []
    if splits is not None:
        split_paths.append(folder / SPLITS_FINAL)
        env = os.environ.get(NNUNET_PREPROCESSED)
        pp = preprocessed if preprocessed is not None else env
        if pp:
            target = Path(pp) / folder_name / SPLITS_FINAL
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(target) as fh:
                fh.write((folder / SPLITS_FINAL).read_bytes())
            split_paths.append(target)
    return NnunetExport(
        folder, len(train), len(test), split_paths, source, written["links"], notes
    )
