"""``petcorpus labels check|merge|split|export``: the 7-group / 130-region label map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from petcorpus.cli._app import app, console, handle_errors
from petcorpus.cli._help import _Group
from petcorpus.cli._outputs import check_output_dir, check_output_file
from petcorpus.cli._params import CASES, Zips, parse_cases
from petcorpus.cli.enhance import ZIPS

labels_app = typer.Typer(
    help="The 7-group / 130-region label map: check, merge, split, export.",
    no_args_is_help=True,
    cls=_Group,
)
app.add_typer(labels_app, name="labels")


@labels_app.command("check")
@handle_errors
def labels_check_cmd(
    corpus: Path = typer.Argument(..., help="ENHANCE.PET corpus folder."),
    cases: str | None = CASES,
    zips: Zips = ZIPS,
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when any group differs."),
    workers: int = typer.Option(
        1, "--workers", "-j", min=1, metavar="N", help="Files read in parallel."
    ),
) -> None:
    """Compare labels.json with the voxel values found, per group."""
    from petcorpus.layouts.enhance import check_corpus_labels, open_enhance

    c = open_enhance(corpus, zips=zips.value)  # type: ignore[arg-type]
    checks = check_corpus_labels(c, parse_cases(cases), workers=workers)
    console.print(f"read: {c.metadata_note()}", markup=False)
    console.print(f"labels: {c.labels.n_regions} regions declared", markup=False)
    differs = False
    for ch in checks:
        console.print(f"{ch.group}: {ch.declared} declared, {len(ch.found)} found")
        if ch.declared_absent:
            absent = ", ".join(f"{k} {n}" for k, n in ch.declared_absent.items())
            console.print(f"  declared but absent ({len(ch.declared_absent)}): {absent}")
        for v, where in ch.undeclared_present.items():
            shown = ", ".join(where[:5]) + (" ..." if len(where) > 5 else "")
            console.print(f"  present but undeclared: {v} in {len(where)} cases ({shown})")
        differs |= not ch.ok
    if strict and differs:
        raise typer.Exit(code=1)


def _merged_case(corpus: Path, case: str, zips: Zips) -> tuple[Any, dict[str, Any], Any]:
    """(corpus, group volumes, merged global-id array) of one case; no masks is an error."""
    from petcorpus.labels import merge_groups
    from petcorpus.layouts.enhance import open_enhance, read_case

    c = open_enhance(corpus, zips=zips.value)  # type: ignore[arg-type]
    groups = read_case(c, case, images=False).groups
    if not groups:
        raise typer.BadParameter(f"case {case} has no masks")
    return c, groups, merge_groups({g: v.array for g, v in groups.items()})


@labels_app.command("merge")
@handle_errors
def labels_merge_cmd(
    corpus: Path = typer.Argument(..., help="ENHANCE.PET corpus folder."),
    case: str = typer.Argument(..., help="Case number, e.g. 1 or 0001."),
    out: Path = typer.Option(
        ..., "--out", "-o", metavar="FILE", help="Merged label map (.nii.gz)."
    ),
    zips: Zips = ZIPS,
) -> None:
    """Merge a case's 7 group masks into one map of global ids (see docs/enhance.md)."""
    import nibabel as nib

    from petcorpus.labels import count_overlaps
    from petcorpus.volume import Volume

    check_output_file(out)
    _, groups, merged = _merged_case(corpus, case, zips)
    out.parent.mkdir(parents=True, exist_ok=True)
    nib.save(Volume(merged, next(iter(groups.values())).affine).to_nifti(), out)
    overlaps = count_overlaps({g: v.array for g, v in groups.items()})
    console.print(
        f"wrote {out} ({len(groups)} groups, {overlaps} overlapping voxels)", markup=False
    )


@labels_app.command("split")
@handle_errors
def labels_split_cmd(
    merged: Path = typer.Argument(..., help="Merged label map (.nii.gz) of global ids."),
    out: Path = typer.Argument(..., help="Folder for <Group>.nii.gz."),
) -> None:
    """Split a merged map back into the 7 group label images."""
    import nibabel as nib

    from petcorpus.labels import split_merged
    from petcorpus.volume import Volume

    check_output_dir(out)
    vol = Volume.from_nifti(merged)
    out.mkdir(parents=True, exist_ok=True)
    for g, arr in split_merged(vol.array).items():
        nib.save(vol.with_array(arr).to_nifti(), out / f"{g}.nii.gz")
    console.print(f"wrote 7 group images to {out}", markup=False)


@labels_app.command("export")
@handle_errors
def labels_export_cmd(
    corpus: Path = typer.Argument(..., help="ENHANCE.PET corpus folder."),
    case: str = typer.Argument(..., help="Case number."),
    out: Path = typer.Argument(..., help="Folder for <region>.nii.gz (0/1 uint8)."),
    region: list[str] | None = typer.Option(
        None, "--region", "-r", metavar="NAME", help="Only this region (repeatable)."
    ),
    zips: Zips = ZIPS,
) -> None:
    """Write one binary mask per region present in a case (or per --region)."""
    import nibabel as nib
    import numpy as np

    from petcorpus.labels import region_masks

    check_output_dir(out)
    c, groups, merged = _merged_case(corpus, case, zips)
    first = next(iter(groups.values()))
    masks = region_masks(merged, c.labels, names=region or None)
    out.mkdir(parents=True, exist_ok=True)
    for name, m in masks.items():
        nib.save(first.with_array(m.astype(np.uint8)).to_nifti(), out / f"{name}.nii.gz")
    console.print(f"wrote {len(masks)} region masks to {out}", markup=False)
