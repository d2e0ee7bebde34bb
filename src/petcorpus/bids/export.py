"""Write a corpus as a BIDS-PET dataset (``petcorpus export-bids``); see docs/bids.md.

Raw data (validated by the BIDS validator)::

    dataset_description.json  README  participants.tsv/.json  .bidsignore
    sub-<s>/sub-<s>_sessions.tsv/.json               weight, height, age per session
    sub-<s>/ses-<n>/pet/sub-<s>_ses-<n>_trc-<t>_pet.nii.gz/.json   PET in Bq/mL
    sub-<s>/ses-<n>/ct/sub-<s>_ses-<n>_ct.nii.gz/.json             CT in HU (BEP024 naming;
                                                        BIDS has no CT yet: .bidsignore'd)

Derivatives (``derivatives/petcorpus/``, their own ``dataset_description.json``)::

    labels.tsv                                     BIDS labels ↔ corpus subject and study
    sub-<s>/ses-<n>/pet/..._trc-<t>_desc-suv<kind>_pet.nii.gz/.json   SUV and its inputs
    sub-<s>/ses-<n>/pet/..._trc-<t>_label-lesion_mask.nii.gz/.json    lesion mask 0/1
    sub-<s>/ses-<n>/ct/..._desc-petgrid_ct.nii.gz/.json               CT on the PET grid

Images are hard links to the corpus files (``copy=True`` copies); the JSON and TSV files
are written atomically, so a re-run rewrites the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from petcorpus.atomic import atomic_write
from petcorpus.bids.schema import FileContext, bids_version, sidecar_fields
from petcorpus.bids.sidecars import (
    NOT_KNOWN,
    PetFacts,
    pet_facts,
    pet_sidecar_values,
    suv_sidecar,
    tracer_label,
)
from petcorpus.errors import PetcorpusError, Reason

__all__ = ["DERIVATIVE", "BidsExport", "export_bids"]

log = logging.getLogger(__name__)

#: The derivative pipeline folder: ``derivatives/petcorpus``.
DERIVATIVE = "petcorpus"
#: Files BIDS does not define yet (CT), for the validator to skip.
BIDSIGNORE = "ct/\n"


@dataclasses.dataclass
class BidsExport:
    """What :func:`export_bids` wrote."""

    root: Path
    sessions: list[str]  # "sub-X/ses-Y"
    failed: dict[str, str]  # corpus key → "[REASON] message"
    not_filled: dict[str, str]  # recommended _pet.json field → why it is absent
    links: dict[str, int]


@dataclasses.dataclass
class _Session:
    key: str
    subject: str
    study: str
    sub: str
    ses: str
    trc: str
    facts: PetFacts
    series: dict[str, Any]
    age: float | None
    files: dict[str, Path]


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` atomically, leaving an identical file untouched."""
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        fh.write(data)


def _tsv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> bytes:
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return "n/a"
        return f"{v:g}" if isinstance(v, float) else str(v)

    lines = ["\t".join(columns)] + ["\t".join(cell(r.get(c)) for c in columns) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def _place(src: Path, dst: Path, copy: bool) -> str:
    """Link (or copy) ``src`` to ``dst`` atomically; an existing link to it stays."""
    from petcorpus.layouts.nnunet import link_or_copy

    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and not copy and os.path.samefile(src, dst):
        return "hardlink" if not dst.is_symlink() else "symlink"
    tmp = dst.with_name(f".tmp-{dst.name}")
    tmp.unlink(missing_ok=True)
    mode = link_or_copy(src, tmp, copy=copy)
    os.replace(tmp, dst)
    return mode


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text)


def _subject_labels(subjects: Sequence[str]) -> dict[str, str]:
    """Corpus subject → BIDS label (its letters and digits; a number appended on a clash)."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for s in sorted(set(subjects)):
        base = _label(s) or "subject"
        label, n = base, 1
        while label.lower() in used:  # labels must differ on case-insensitive file systems
            n += 1
            label = f"{base}{n}"
        used.add(label.lower())
        out[s] = label
    return out


def _age_years(text: Any) -> float | None:
    """DICOM PatientAge (``082Y``, ``030M``, ``010W``, ``005D``) in years."""
    if isinstance(text, int | float):
        return float(text)
    m = re.fullmatch(r"\s*(\d+)\s*([YMWD]?)\s*", str(text or ""))
    if not m:
        return None
    per_year = {"": 1.0, "Y": 1.0, "M": 12.0, "W": 365.25 / 7, "D": 365.25}[m.group(2)]
    return round(int(m.group(1)) / per_year, 2)


def _sex(value: Any) -> str | None:
    v = str(value or "").strip().upper()
    return {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F", "O": "O"}.get(v)


def _gather(corpus: Path, failed: dict[str, str]) -> tuple[list[_Session], dict[str, Any]]:
    from petcorpus.catalog import Catalog
    from petcorpus.layouts.autopet import SIDECAR, AutopetCorpus

    cases = [c for c in AutopetCorpus(corpus).cases() if c.has("PET")]
    if not cases:
        raise PetcorpusError(
            "no study with PET.nii.gz in the corpus", path=corpus, reason=Reason.NO_SERIES
        )
    with Catalog.open(corpus, readonly=True) as catalog:
        subjects = {r["subject_id"]: r for r in catalog.subjects_table()}
        licences = catalog.licences()
        found = []
        for case in cases:
            try:
                facts = pet_facts(case.metadata, case.sidecar_path)
                uid = case.metadata.get("pet_series_instance_uid")
                series = catalog.series_record(str(uid)) if uid else None
                if series is None:
                    raise PetcorpusError(
                        f"the PET series {uid} is not in the catalog (rebuild the corpus)",
                        path=case.folder / SIDECAR,
                        reason=Reason.NO_SERIES,
                    )
                found.append((case, facts, series))
            except PetcorpusError as exc:
                failed[case.key] = f"[{exc.reason}] {exc}"
    labels = _subject_labels([c.subject for c, _, _ in found])
    sessions: list[_Session] = []
    by_subject: dict[str, list[tuple[Any, PetFacts, dict[str, Any]]]] = {}
    for item in found:
        by_subject.setdefault(item[0].subject, []).append(item)
    for subject, items in sorted(by_subject.items()):
        items.sort(key=lambda t: (t[1].time_zero, t[0].study))
        width = max(2, len(str(len(items))))
        for n, (case, facts, series) in enumerate(items, 1):
            params = series.get("params") or {}
            files = {n_: case.path(n_) for n_ in ("PET", "SUV", "SEG", "CT", "CTres")}
            sessions.append(
                _Session(
                    key=case.key,
                    subject=subject,
                    study=case.study,
                    sub=labels[subject],
                    ses=f"{n:0{width}d}",
                    trc=tracer_label(params.get("Radiopharmaceutical")),
                    facts=facts,
                    series=series,
                    age=_age_years(params.get("PatientAge")),
                    files={k: v for k, v in files.items() if v.is_file()},
                )
            )
    return sessions, {"subjects": subjects, "licences": licences}


def _pet_json(s: _Session, not_filled: dict[str, str]) -> dict[str, Any]:
    values = pet_sidecar_values(s.facts, s.series)
    ctx = FileContext(
        datatype="pet",
        suffix="pet",
        extension=".nii.gz",
        entities={"subject": s.sub, "session": s.ses, "tracer": s.trc},
        sidecar=values,
        dataset_modalities=["pet"],
    )
    fields = sidecar_fields(ctx)
    out: dict[str, Any] = {}
    for field, level in fields.items():
        if field in values:
            out[field] = values[field]
        elif level == "required":
            raise PetcorpusError(
                f"BIDS requires {field} in the PET sidecar and the corpus does not know it",
                reason=Reason.MISSING_TAG,
            )
        else:
            not_filled[field] = NOT_KNOWN.get(field, "not known to the corpus")
    # Known values the schema names at a weaker level (optional) stay out: one source.
    return out


def _stem(s: _Session) -> str:
    return f"sub-{s.sub}_ses-{s.ses}"


def _readme(name: str, n_sub: int, n_ses: int) -> str:
    return (
        f"# {name}\n\n"
        f"PET/CT studies exported from a petcorpus corpus by `petcorpus export-bids`: "
        f"{n_sub} subjects, {n_ses} sessions.\n\n"
        "- `sub-*/ses-*/pet/*_pet.nii.gz`: PET in Bq/mL, decay corrected to the scan start "
        "(TimeZero); the sidecar holds the BIDS-PET fields.\n"
        "- `sub-*/ses-*/ct/*_ct.nii.gz`: the CT in HU, named as BEP024 proposes; BIDS has no "
        "CT datatype yet, so `.bidsignore` lists `ct/`.\n"
        "- `sub-*/sub-*_sessions.tsv`: body weight and height at each session.\n"
        "- `derivatives/petcorpus/`: SUV images with every input needed to recompute them, "
        "lesion masks, the CT resampled to the PET grid, and `labels.tsv` (BIDS labels and "
        "the corpus's subject and study).\n"
    )


def export_bids(
    corpus: str | os.PathLike[str],
    bids_root: str | os.PathLike[str],
    *,
    copy: bool = False,
    name: str | None = None,
) -> BidsExport:
    """Write the corpus ``corpus`` (autoPET layout, with its catalog) as BIDS-PET.

    Parameters
    ----------
    corpus : path-like
        A corpus built by ``petcorpus build`` (its ``catalog.sqlite`` is read).
    bids_root : path-like
        The BIDS dataset folder (created; re-running rewrites the same files).
    copy : bool
        Copy the images instead of hard-linking them.
    name : str, optional
        ``Name`` in ``dataset_description.json`` (default: the corpus folder's name).

    Returns
    -------
    BidsExport
        The sessions written, the studies that could not be (with the reason) and the
        recommended ``_pet.json`` fields left out.

    Raises
    ------
    PetcorpusError
        No study with a PET; no study could be exported.
    MissingDependencyError
        ``bidsschematools`` is not installed.
    """
    src, root = Path(corpus), Path(bids_root)
    failed: dict[str, str] = {}
    sessions, info = _gather(src, failed)
    not_filled: dict[str, str] = {}
    links: dict[str, int] = {}
    deriv = root / "derivatives" / DERIVATIVE
    done: list[_Session] = []
    for s in sessions:
        try:
            pet_json = _pet_json(s, not_filled)
            stem = _stem(s)
            raw_dir = root / f"sub-{s.sub}" / f"ses-{s.ses}"
            der_dir = deriv / f"sub-{s.sub}" / f"ses-{s.ses}"
            pet_name = f"{stem}_trc-{s.trc}_pet"
            pet_rel = f"sub-{s.sub}/ses-{s.ses}/pet/{pet_name}.nii.gz"
            sessions_rel = f"sub-{s.sub}/sub-{s.sub}_sessions.tsv"
            suv_json = suv_sidecar(s.facts, pet_file=pet_rel, sessions_file=sessions_rel)
            puts: list[tuple[Path, Path, dict[str, Any]]] = [
                (s.files["PET"], raw_dir / "pet" / f"{pet_name}.nii.gz", pet_json)
            ]
            if "CT" in s.files:
                ct_json = {
                    "Modality": "CT",
                    "Units": "HU",
                    "Description": "CT of the PET/CT (BIDS has no CT datatype yet; named as "
                    "BEP024 proposes)",
                }
                puts.append((s.files["CT"], raw_dir / "ct" / f"{stem}_ct.nii.gz", ct_json))
            if "SUV" in s.files:
                puts.append(
                    (
                        s.files["SUV"],
                        der_dir / "pet" / f"{stem}_trc-{s.trc}_desc-suv{s.facts.suv_kind}"
                        "_pet.nii.gz",
                        suv_json,
                    )
                )
            if "SEG" in s.files:
                seg_json = {
                    "Description": "lesion mask (1: lesion, 0: background) on the PET grid",
                    "Sources": [f"bids::{pet_rel}"],
                    "Type": "Lesion",
                }
                puts.append(
                    (
                        s.files["SEG"],
                        der_dir / "pet" / f"{stem}_trc-{s.trc}_label-lesion_mask.nii.gz",
                        seg_json,
                    )
                )
            if "CTres" in s.files:
                ctres_json = {
                    "Description": "the CT resampled to the PET grid (linear, fill -1024 HU)",
                    "Units": "HU",
                    "Sources": [
                        f"bids::sub-{s.sub}/ses-{s.ses}/ct/{stem}_ct.nii.gz",
                        f"bids::{pet_rel}",
                    ],
                }
                puts.append(
                    (
                        s.files["CTres"],
                        der_dir / "ct" / f"{stem}_desc-petgrid_ct.nii.gz",
                        ctres_json,
                    )
                )
            for file, dst, sidecar in puts:
                mode = _place(file, dst, copy)
                links[mode] = links.get(mode, 0) + 1
                _write(
                    dst.with_name(dst.name.removesuffix(".nii.gz") + ".json"), _json_bytes(sidecar)
                )
            done.append(s)
        except PetcorpusError as exc:
            failed[s.key] = f"[{exc.reason}] {exc}"
        except OSError as exc:
            failed[s.key] = f"[{Reason.OUTPUT_PATH}] {exc}"
    if not done:
        raise PetcorpusError(
            f"no study could be exported ({len(failed)} failed: "
            f"{next(iter(failed.values()), '')})",
            path=src,
            reason=Reason.NO_SERIES,
        )
    _write_tables(root, deriv, done, info, name or src.resolve().name)
    return BidsExport(
        root=root,
        sessions=[f"sub-{s.sub}/ses-{s.ses}" for s in done],
        failed=failed,
        not_filled=dict(sorted(not_filled.items())),
        links=links,
    )


def _write_tables(
    root: Path, deriv: Path, done: Sequence[_Session], info: Mapping[str, Any], name: str
) -> None:
    from petcorpus import __version__

    version = bids_version()
    description: dict[str, Any] = {
        "Name": name,
        "BIDSVersion": version,
        "DatasetType": "raw",
        "GeneratedBy": [{"Name": "petcorpus", "Version": __version__}],
    }
    licences = info["licences"]
    if len(licences) == 1:
        description["License"] = licences[0]
    _write(root / "dataset_description.json", _json_bytes(description))
    _write(root / ".bidsignore", BIDSIGNORE.encode())
    subjects = sorted({s.sub for s in done})
    _write(root / "README", _readme(name, len(subjects), len(done)).encode())

    participants = []
    for sub in subjects:
        first = next(s for s in done if s.sub == sub)
        row = info["subjects"].get(first.subject) or {}
        participants.append(
            {
                "participant_id": f"sub-{sub}",
                "age": row.get("age") if row.get("age") is not None else first.age,
                "sex": _sex(row.get("sex")) or _sex(first.facts.sex),
            }
        )
    _write(root / "participants.tsv", _tsv(participants, ["participant_id", "age", "sex"]))
    _write(
        root / "participants.json",
        _json_bytes(
            {
                "age": {"Description": "age at the first session", "Units": "year"},
                "sex": {
                    "Description": "sex of the participant (DICOM PatientSex)",
                    "Levels": {"M": "male", "F": "female", "O": "other"},
                },
            }
        ),
    )
    sessions_json = _json_bytes(
        {
            "age": {"Description": "age at the session (DICOM PatientAge)", "Units": "year"},
            "weight": {
                "Description": "body weight at the session, the SUV's (DICOM PatientWeight)",
                "Units": "kg",
            },
            "height": {"Description": "body height (DICOM PatientSize)", "Units": "m"},
        }
    )
    for sub in subjects:
        rows = [
            {
                "session_id": f"ses-{s.ses}",
                "age": s.age,
                "weight": s.facts.weight_kg,
                "height": s.facts.height_m,
            }
            for s in done
            if s.sub == sub
        ]
        folder = root / f"sub-{sub}"
        _write(
            folder / f"sub-{sub}_sessions.tsv",
            _tsv(rows, ["session_id", "age", "weight", "height"]),
        )
        _write(folder / f"sub-{sub}_sessions.json", sessions_json)

    _write(
        deriv / "dataset_description.json",
        _json_bytes(
            {
                "Name": f"{name}: SUV, lesion masks and CT on the PET grid",
                "BIDSVersion": version,
                "DatasetType": "derivative",
                "GeneratedBy": [
                    {
                        "Name": "petcorpus",
                        "Version": __version__,
                        "Description": "petcorpus build (DICOM to NIfTI, SUV, SEG) and "
                        "petcorpus export-bids",
                    }
                ],
                "SourceDatasets": [{"URL": "bids::"}],
            }
        ),
    )
    labels = [
        {
            "participant_id": f"sub-{s.sub}",
            "session_id": f"ses-{s.ses}",
            "corpus_subject": s.subject,
            "corpus_study": s.study,
        }
        for s in done
    ]
    _write(
        deriv / "labels.tsv",
        _tsv(labels, ["participant_id", "session_id", "corpus_subject", "corpus_study"]),
    )
