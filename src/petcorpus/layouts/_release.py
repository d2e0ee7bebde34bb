"""The autoPET challenge releases' case ids and metadata CSVs (for
:mod:`petcorpus.layouts.nnunet`).

Case ids carry tracer, subject and study: ``fdg_<hex10>_<TCIA study folder>`` (its last
digits are the Study UID's) and ``psma_<hex16>_<YYYY-MM-DD>``; nnU-Net's own autoPET
conversion names FDG cases ``PETCT_<hex10>_<study folder>``. ``fdg_metadata.csv`` is TCIA's
clinical CSV (``Subject ID`` = ``PETCT_<hex>``, ``Study UID``, ``File Location``, one row per
series); ``psma_metadata.csv`` has one row per study (``Subject ID`` = ``PSMA_<hex>``,
``Study Date``, ``age``, ``manufacturer_model_name``, ``pet_radionuclide``,
``ct_contrast_agent``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["METADATA_CSVS", "ReleaseId", "match_rows", "parse_case_id", "release_case_ids"]

#: The release's metadata CSV of each tracer.
METADATA_CSVS: Mapping[str, str] = {"FDG": "fdg_metadata.csv", "PSMA": "psma_metadata.csv"}


@dataclasses.dataclass(frozen=True)
class ReleaseId:
    """What a case id says: tracer (``FDG``, ``PSMA`` or None), subject and study folder."""

    tracer: str | None
    subject: str
    study: str


_FDG_ID = re.compile(r"^fdg_([0-9a-fA-F]+)_(.+)$")
_PSMA_ID = re.compile(r"^psma_([0-9a-fA-F]+)_(.+)$")
_PETCT_ID = re.compile(r"^(PETCT_[0-9a-fA-F]+)_(.+)$")


def parse_case_id(case_id: str) -> ReleaseId:
    """Tracer, subject and study of a case id.

    >>> parse_case_id("fdg_0011f3deaf_03-23-2003-NA-PET-CT Ganzkoerper  primaer mit KM-10445")
    ReleaseId(tracer='FDG', subject='PETCT_0011f3deaf', study='03-23-2003-NA-PET-CT Ganzkoerper  primaer mit KM-10445')
    >>> parse_case_id("psma_0a1b2c3d4e5f6a7b_2019-04-01")
    ReleaseId(tracer='PSMA', subject='PSMA_0a1b2c3d4e5f6a7b', study='2019-04-01')
    >>> parse_case_id("PETCT_0011f3deaf_03-23-2003-NA-PET-CT-10445").subject
    'PETCT_0011f3deaf'

    Other ids (nnU-Net's own ``<subject>_<study>`` of other datasets) are one subject with
    one study named after the case.
    """  # noqa: E501 - a doctest line
    if m := _FDG_ID.match(case_id):
        return ReleaseId("FDG", f"PETCT_{m[1]}", m[2])
    if m := _PSMA_ID.match(case_id):
        return ReleaseId("PSMA", f"PSMA_{m[1]}", m[2])
    if m := _PETCT_ID.match(case_id):
        return ReleaseId("FDG", m[1], m[2])
    return ReleaseId(None, case_id, case_id)


def release_case_ids(metadata: Mapping[str, Any]) -> tuple[str, ...]:
    """The nnU-Net case ids a study of the autoPET layout was imported from (its sidecar's
    ``source``), for finding its predictions (:func:`petcorpus.layouts.flat.find_prediction`)."""
    source = metadata.get("source")
    if not isinstance(source, Mapping):
        return ()
    ids = [source.get("case_id"), source.get("full_case_id")]
    return tuple(dict.fromkeys(str(i) for i in ids if i))


def _file_location_id(location: str) -> str | None:
    """``fdg_<hex>_<study folder>`` from a TCIA ``File Location``
    (``./FDG-PET-CT-Lesions/PETCT_<hex>/<study folder>/<series folder>``)."""
    parts = [p for p in re.split(r"[\\/]", location) if p and p != "."]
    for i, part in enumerate(parts[:-1]):
        if m := re.fullmatch(r"PETCT_([0-9a-fA-F]+)", part):
            return f"fdg_{m[1]}_{parts[i + 1]}"
    return None


def match_rows(
    rid: ReleaseId, case_id: str, tables: Mapping[str, pd.DataFrame]
) -> tuple[list[dict[str, str]], str, list[str]]:
    """The CSV rows of a case, its full case id and notes (a truncated id matched by prefix,
    no rows found)."""
    notes: list[str] = []
    tracer = rid.tracer
    if tracer is None or tracer not in tables:
        if tracer is not None:
            notes.append(f"no {METADATA_CSVS[tracer]} beside the release")
        return [], case_id, notes
    df = tables[tracer]
    ids: list[str | None]
    if tracer == "FDG":
        if "File Location" in df.columns:
            ids = [_file_location_id(v) for v in df["File Location"]]
        else:  # no locations: the study folder ends with the Study UID's last 5 digits
            suffix = rid.study.rsplit("-", 1)[-1]
            ids = [
                case_id
                if f"PETCT_{s.removeprefix('PETCT_')}" == rid.subject and str(u).endswith(suffix)
                else None
                for s, u in zip(df["Subject ID"], df.get("Study UID", [""] * len(df)), strict=True)
            ]
    else:
        ids = [
            f"psma_{s.removeprefix('PSMA_')}_{d.strip()}"
            for s, d in zip(df["Subject ID"], df.get("Study Date", [""] * len(df)), strict=True)
        ]
    full = case_id
    if tracer == "FDG" and not case_id.startswith("fdg_"):  # nnU-Net's PETCT_<hex>_<study>
        canonical = f"fdg_{rid.subject.removeprefix('PETCT_')}_{rid.study}"
        rows = [_row(df, i) for i, x in enumerate(ids) if x == canonical]
        return rows, case_id, notes if rows else [*notes, f"not in {METADATA_CSVS[tracer]}"]
    hits = [i for i, x in enumerate(ids) if x == case_id]
    if not hits:
        prefixed = sorted({x for x in ids if x and x.startswith(case_id)})
        if len(prefixed) == 1:
            full = prefixed[0]
            hits = [i for i, x in enumerate(ids) if x == full]
            notes.append(f"truncated case id matched by prefix to {full!r}")
        elif prefixed:
            notes.append(
                f"truncated case id matches {len(prefixed)} studies of "
                f"{METADATA_CSVS[tracer]}; no metadata taken"
            )
    if not hits and not notes:
        notes.append(f"not in {METADATA_CSVS[tracer]}")
    return [_row(df, i) for i in hits], full, notes


def _row(df: pd.DataFrame, i: int) -> dict[str, str]:
    return {str(k): str(v) for k, v in df.iloc[i].items()}
