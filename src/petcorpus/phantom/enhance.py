"""Write phantom studies as an ENHANCE.PET-style corpus (both releases' layouts, or the zips).

Each case is a :func:`~petcorpus.phantom.make_study` study; its CT (HU, int16) and PET
(SUVbw or Bq/ml, float32) are written with :meth:`Volume.to_nifti`, and label images for a
subset of the 130 regions are derived from the phantom's CT-grid tissue map
``truth.ct_labels``: organs, heart and aorta, lungs split into upper/lower lobes, kidneys,
hips, femurs and thigh muscles split left/right by the patient's left-right axis, the spine
cut into vertebrae C5..L5 + sacrum by height, and Body-Composition (skeletal muscle,
subcutaneous fat) only within the z-range of L3, as in the real corpus. Ribs stay empty.
Groups never overlap, so merged maps round-trip exactly.
"""

from __future__ import annotations

import dataclasses
import io
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from petcorpus.labels import GROUPS, LabelTable, moose_table
from petcorpus.phantom.anatomy import Tissue
from petcorpus.phantom.study import DIAGNOSES, PhantomStudy, make_study
from petcorpus.volume import Volume

__all__ = ["SITES", "EnhancePhantomCase", "enhance_masks", "write_enhance_corpus"]

#: Data-Source values cycled over the cases (the four sites of the current release).
SITES = (
    "AutoPET Challenge",
    "University Hospital Leipzig (DE)",
    "Azienda Ospedaliero Universitaria Careggi (IT)",
    "University of California Davis (US)",
)
_VERTEBRA_MM = 28.0
_T1_DEPTH = 330.0  # depth (mm below the top of the head) where T1 starts


@dataclasses.dataclass(frozen=True)
class EnhancePhantomCase:
    """One written case: its id, the phantom study, the group label images, the site."""

    case_id: str
    study: PhantomStudy
    masks: dict[str, np.ndarray]
    site: str


def _lps_axes(vol: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    aff = vol.affine
    if not np.allclose(aff[:3, :3], np.diag(np.diag(aff[:3, :3]))):
        raise ValueError("phantom grids are axis-aligned")
    i, j, k = (np.arange(n, dtype=np.float64) for n in vol.shape)
    x_ras = aff[0, 0] * i + aff[0, 3]
    y_ras = aff[1, 1] * j + aff[1, 3]
    z = aff[2, 2] * k + aff[2, 3]
    return -x_ras, -y_ras, z  # LPS: +x = patient's left, +y = posterior


def vertebra_depths() -> dict[int, tuple[float, float]]:
    """Vertebrae local id → (top, bottom) depth in mm below the top of the head."""
    out = {}
    for local in range(5, 25):  # C5 (5) .. L5 (24)
        top = _T1_DEPTH + (local - 8) * _VERTEBRA_MM
        out[local] = (max(top, 260.0), top + _VERTEBRA_MM)
    return out


def enhance_masks(study: PhantomStudy) -> dict[str, np.ndarray]:
    """The seven group label images (uint8, CT grid) of a phantom study."""
    labels = study.truth.ct_labels
    t = np.asarray(labels.array)
    x, y, z = _lps_axes(labels)
    z_top = float(z.max()) + 20.0  # make_study puts the top of the head 20 mm above the FOV
    depth = (z_top - z)[None, None, :]
    left = (x > 0)[:, None, None]
    spine_xy = (np.abs(x)[:, None] <= 22.0) & (y[None, :] >= 60.0)
    spine = spine_xy[:, :, None] & (t == Tissue.BONE) & (depth >= 255.0) & (depth <= 865.0)
    shape = t.shape
    out = {g: np.zeros(shape, np.uint8) for g in GROUPS}

    def paint(group: str, mask: np.ndarray, value: int) -> None:
        out[group][np.broadcast_to(mask, shape)] = value

    def lr(group: str, mask: np.ndarray, left_id: int, right_id: int) -> None:
        paint(group, mask & left, left_id)
        paint(group, mask & ~left, right_id)

    org = "Organs"
    paint(org, t == Tissue.LIVER, 8)
    paint(org, t == Tissue.SPLEEN, 15)
    paint(org, t == Tissue.BLADDER, 3)
    paint(org, t == Tissue.BRAIN, 4)
    lr(org, t == Tissue.KIDNEY, 6, 7)
    lung = t == Tissue.LUNG
    upper = depth < 410.0
    lr(org, lung & upper, 12, 13)
    lr(org, lung & ~upper, 9, 10)
    paint("Cardiac", t == Tissue.HEART, 1)
    paint("Cardiac", t == Tissue.AORTA, 6)
    lr("Muscles", (t == Tissue.MUSCLE) & (depth > 875.0), 3, 4)
    bone = (t == Tissue.BONE) & ~spine
    lr("Peripheral-Bones", bone & (depth > 868.0), 5, 6)
    paint("Peripheral-Bones", bone & (depth < 215.0), 23)
    lr("Vertebrae", bone & (depth >= 740.0) & (depth <= 860.0), 26, 27)
    for local, (top, bottom) in vertebra_depths().items():
        paint("Vertebrae", spine & (depth >= top) & (depth < bottom), local)
    paint("Vertebrae", spine & (depth >= _T1_DEPTH + 17 * _VERTEBRA_MM), 28)
    l3_top, l3_bottom = vertebra_depths()[22]
    l3 = (depth >= l3_top) & (depth < l3_bottom)
    paint("Body-Composition", l3 & (t == Tissue.MUSCLE), 1)
    paint("Body-Composition", l3 & (t == Tissue.FAT), 2)
    return out


def phantom_labels() -> LabelTable:
    """The labels.json of a phantom corpus: the MOOSE table without ``trachea`` (130)."""
    groups = {g: dict(r) for g, r in moose_table().groups.items()}
    del groups["Organs"][19]
    return LabelTable(groups, source="phantom")


def _nifti_gz(vol: Volume) -> bytes:
    from isal import igzip

    return igzip.compress(vol.to_nifti().to_bytes(), 1, mtime=0)


def _xlsx(rows: list[dict[str, object]]) -> bytes:
    import pandas as pd  # imported here: `import petcorpus.phantom` stays light

    df = pd.DataFrame(rows)
    buf = io.BytesIO()
    df.to_excel(buf, index=False)
    return buf.getvalue()


def write_enhance_corpus(
    out: str | Path,
    cases: int = 3,
    *,
    seed: int = 0,
    size: Literal["small", "full"] = "small",
    release: Literal["v1", "v2"] = "v2",
    zipped: bool = False,
    pet_unit: Literal["suv", "bqml"] = "suv",
    ct_split: int | None = None,
    labels: LabelTable | None = None,
    sites: Sequence[str] = SITES,
    studies: Sequence[PhantomStudy] | None = None,
) -> list[EnhancePhantomCase]:
    """Write ``cases`` phantom studies as an ENHANCE.PET corpus under ``out``.

    Parameters
    ----------
    release : {"v1", "v2"}
        ``v1``: ``imaging-data/images/{CT,PT}/``; ``v2``: ``CT_0001-....``, ``CT_....-....``
        (split after ``ct_split`` cases, default half the cases, as the real release splits
        after 1000) and ``PT_0001-....``.
    zipped : bool
        v2 only: write the 13 downloads instead of the tree: the three metadata files, one
        ``<Group>.zip`` per group (members ``<Group>/NNNN.nii.gz``) and ``images-1.zip``,
        ``images-2.zip`` (the two CT folders), ``images-3.zip`` (the PT folder).
    pet_unit : {"suv", "bqml"}
        Write PET as SUVbw (``truth.suv``) or activity concentration (``truth.pet_bqml``).
    labels : LabelTable, optional
        The ``labels.json`` to write (default: MOOSE without trachea).
    studies : sequence of PhantomStudy, optional
        Use these studies (then ``cases`` is their number) instead of building new ones.
    """
    if studies is not None:
        cases = len(studies)
    if release not in ("v1", "v2"):
        raise ValueError(f"release must be 'v1' or 'v2', got {release!r}")
    if zipped and release != "v2":
        raise ValueError("only the v2 release is distributed as zips")
    if pet_unit not in ("suv", "bqml"):
        raise ValueError(f"pet_unit must be 'suv' or 'bqml', got {pet_unit!r}")
    if cases < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = labels if labels is not None else phantom_labels()
    split = ct_split if ct_split is not None else max(1, math.ceil(cases / 2))
    files: dict[str, bytes] = {}  # relative path -> bytes
    written: list[EnhancePhantomCase] = []
    pt_rows: list[dict[str, object]] = []
    ct_rows: list[dict[str, object]] = []
    for n in range(1, cases + 1):
        cid = f"{n:04d}"
        if studies is not None:
            study = studies[n - 1]
        else:
            study = make_study(seed=seed * 10_000 + n, size=size, vendor="siemens",
                               diagnosis=DIAGNOSES[(n - 1) % len(DIAGNOSES)], index=n)  # fmt: skip
        tr = study.truth
        masks = enhance_masks(study)
        site = sites[(n - 1) % len(sites)]
        if release == "v1":
            ct_dir, pt_dir = "CT", "PT"
        else:
            ct_dir = f"CT_0001-{split:04d}" if n <= split else f"CT_{split + 1:04d}-{cases:04d}"
            pt_dir = f"PT_0001-{cases:04d}"
        files[f"imaging-data/images/{ct_dir}/{cid}.nii.gz"] = _nifti_gz(tr.ct_hu)
        pet = tr.suv if pet_unit == "suv" else tr.pet_bqml
        files[f"imaging-data/images/{pt_dir}/{cid}.nii.gz"] = _nifti_gz(
            pet.with_array(np.asarray(pet.array, dtype=np.float32))
        )
        for g, arr in masks.items():
            files[f"imaging-data/ground-truth/{g}/{cid}.nii.gz"] = _nifti_gz(
                tr.ct_labels.with_array(arr)
            )
        pt_rows.append({"Patient": n, "Age": tr.age, "Sex": tr.sex, "Weight [kg]": tr.weight_kg,
                        "Height [m]": tr.height_m, "Data-Source": site})  # fmt: skip
        ct_rows.append({"Patient": n, "Manufacturer": study.ct[0].Manufacturer,
                        "Slice Thickness [mm]": float(study.ct[0].SliceThickness),
                        "Pixel Spacing [mm]": float(study.ct[0].PixelSpacing[0]),
                        "Data-Source": site})  # fmt: skip
        written.append(EnhancePhantomCase(cid, study, masks, site))
    import json

    (out / "labels.json").write_text(json.dumps(table.to_json(), indent=2) + "\n")
    (out / "PT-details.xlsx").write_bytes(_xlsx(pt_rows))
    (out / "CT-details.xlsx").write_bytes(_xlsx(ct_rows))
    if not zipped:
        for rel, data in files.items():
            p = out / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return written
    archives: dict[str, dict[str, bytes]] = {}
    for rel, data in files.items():
        parts = rel.split("/")
        folder = parts[-2]
        if parts[1] == "ground-truth":
            name = f"{folder}.zip"
        elif folder.startswith("PT"):
            name = "images-3.zip"
        else:
            name = "images-1.zip" if folder.startswith("CT_0001-") else "images-2.zip"
        archives.setdefault(name, {})[f"{folder}/{parts[-1]}"] = data
    for name, members in sorted(archives.items()):
        with zipfile.ZipFile(out / name, "w", zipfile.ZIP_STORED) as zf:
            for member, data in sorted(members.items()):
                info = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
                zf.writestr(info, data)
    return written
