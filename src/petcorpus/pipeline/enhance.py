"""Catalogue an ENHANCE.PET corpus in place (``petcorpus build --from enhance``)."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

from petcorpus.catalog import Catalog
from petcorpus.errors import PetcorpusError, Reason

__all__ = ["ImportReport", "import_enhance"]


@dataclasses.dataclass
class ImportReport:
    """The result of cataloguing an ENHANCE.PET corpus in place."""

    run_id: int
    cases: int
    incomplete: list[str]
    release: str


def import_enhance(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    command: Sequence[str] | str | None = None,
) -> ImportReport:
    """Catalogue an ENHANCE.PET corpus (either release, folders or zips) without copying it.

    Each case becomes a subject ``ENHANCE_<case>`` (sex, age, site and the licence that the
    site's Data-Source implies: a user can filter by licence) with one study
    ``enhance:<case>`` whose CT and PT "series" carry the CT-/PT-details.xlsx fields as
    parameters and the image/mask locations (CT and PET stay where they are). A case
    missing a file is recorded as a failure with the missing files, not fatal.
    """
    from petcorpus.layouts.enhance import enhance_cases_table, open_enhance

    corpus = open_enhance(root)
    table = enhance_cases_table(corpus)
    incomplete: list[str] = []
    with Catalog.open(out) as catalog:
        run_id = catalog.start_run(command, {"from": "enhance", "root": str(root)})
        with catalog.transaction():
            for row in table.to_dict("records"):
                case = str(row["case_id"])
                subject, study_uid = f"ENHANCE_{case}", f"enhance:{case}"
                catalog.record_subject(
                    subject,
                    sex=_clean(row.get("pt_sex")),
                    age=_int(row.get("pt_age")),
                    site=_clean(row.get("site")),
                    licence=_clean(row.get("licence")),
                )
                catalog.record_study(study_uid, subject_id=subject, source=row.get("ct_path"))
                series = []
                for modality, prefix, path_key in (
                    ("CT", "ct_", "ct_path"),
                    ("PT", "pt_", "pt_path"),
                ):
                    params = {
                        k[len(prefix) :]: _clean(v)
                        for k, v in row.items()
                        if k.startswith(prefix) and k != path_key
                    }
                    params["path"] = row.get(path_key)
                    if modality == "CT":
                        params.update({k: v for k, v in row.items() if k.startswith("mask_")})
                    series.append(
                        {
                            "series_uid": f"{study_uid}:{modality}",
                            "study_uid": study_uid,
                            "modality": modality,
                            "manufacturer": _clean(row.get(f"{prefix}manufacturer")),
                            "model": None,
                            "files": 1 if row.get(path_key) else 0,
                            "frame_of_reference_uid": None,
                            "description": f"ENHANCE.PET {corpus.release}",
                            "params": params,
                        }
                    )
                catalog.record_series(series)
                missing = _clean(row.get("missing"))
                if missing:
                    incomplete.append(case)
                    exc = PetcorpusError(
                        f"case {case} is missing: {missing}",
                        path=row.get("ct_path") or root,
                        reason=Reason.NO_SERIES,
                    )
                    catalog.record_failure(run_id, study_uid, "import", exc)
                else:
                    catalog.set_status(study_uid, "done")
        catalog.finish_run(
            run_id, {"done": len(table) - len(incomplete), "failed": len(incomplete)}
        )
    return ImportReport(
        run_id=run_id, cases=len(table), incomplete=incomplete, release=str(corpus.release)
    )


def _clean(value: Any) -> Any:
    """None for NaN/empty cells; plain Python scalars otherwise."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _int(value: Any) -> int | None:
    v = _clean(value)
    try:
        return None if v is None else int(float(str(v).rstrip("Yy")))
    except ValueError:
        return None
