"""``petcorpus enhance|labels|organs``: ENHANCE.PET corpora, the region map, organ PET stats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from petcorpus.cli._app import app, console, err_console, handle_errors
from petcorpus.cli._outputs import check_output_dir, check_output_file

enhance_app = typer.Typer(help="ENHANCE.PET corpora: list cases, write a phantom corpus.",
                          no_args_is_help=True)  # fmt: skip
labels_app = typer.Typer(help="The 7-group / 130-region label map: check, merge, split, export.",
                         no_args_is_help=True)  # fmt: skip
organs_app = typer.Typer(help="Organ PET statistics, PERCIST references, lesions by organ.",
                         no_args_is_help=True)  # fmt: skip
app.add_typer(enhance_app, name="enhance")
app.add_typer(labels_app, name="labels")
app.add_typer(organs_app, name="organs")

_ZIPS_HELP = "auto (unpacked files, else zip members), never, or only (read the zips only)."


def _zips(value: str) -> str:
    if value not in ("auto", "never", "only"):
        raise typer.BadParameter("must be auto, never or only", param_hint="--zips")
    return value


def _check_table_file(out: Path) -> None:
    """Up front: ``out`` can be written, and a ``.parquet`` name has pyarrow to write it."""
    from petcorpus._optional import import_optional

    check_output_file(out)
    if out.suffix == ".parquet":
        import_optional("pyarrow", extra="parquet", purpose="a .parquet table")


def _write_table(table: Any, out: Path) -> None:
    """Write a DataFrame as CSV (or Parquet, by suffix), atomically."""
    from petcorpus.atomic import atomic_write

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        with atomic_write(out) as fh:
            table.to_parquet(fh, index=False)
    else:
        with atomic_write(out, "w") as fh:
            table.to_csv(fh, index=False)


def _cases(value: str | None) -> list[str] | None:
    if not value:
        return None
    out: list[str] = []
    for part in value.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            out += [f"{i:04d}" for i in range(int(a), int(b) + 1)]
        elif part.strip():
            out.append(f"{int(part):04d}")
    return out


# -- enhance ----------------------------------------------------------------------------------
@enhance_app.command("phantom")
@handle_errors
def enhance_phantom_cmd(
    out: Path = typer.Argument(..., help="Folder for the ENHANCE-style corpus."),
    cases: int = typer.Option(3, "--cases", "-n", min=1, help="Number of cases."),
    release: str = typer.Option("v2", "--release", help="v1 (flat CT/PT) or v2 (CT_*/PT_*)."),
    zipped: bool = typer.Option(False, "--zipped", help="v2: write the 13 downloads (zips)."),
    pet_unit: str = typer.Option("suv", "--pet-unit", help="suv or bqml."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    size: str = typer.Option("small", "--size", help="small or full."),
) -> None:
    """Write phantom studies as an ENHANCE.PET corpus (images, masks, labels.json, xlsx)."""
    from petcorpus.phantom.enhance import write_enhance_corpus

    check_output_dir(out)
    written = write_enhance_corpus(
        out, cases, seed=seed, size=size, release=release, zipped=zipped,  # type: ignore[arg-type]
        pet_unit=pet_unit,  # type: ignore[arg-type]
    )  # fmt: skip
    console.print(
        f"wrote {len(written)} {release} cases to {out}" + (" (zips)" if zipped else ""),
        markup=False,
    )


@enhance_app.command("cases")
@handle_errors
def enhance_cases_cmd(
    corpus: Path = typer.Argument(..., help="ENHANCE.PET corpus folder."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the table (.csv/.parquet)."),
    zips: str = typer.Option("auto", "--zips", help=_ZIPS_HELP),
) -> None:
    """List the cases: files found, what is missing, site and licence."""
    from petcorpus.layouts.enhance import enhance_cases_table, open_enhance

    if out is not None:
        _check_table_file(out)
    c = open_enhance(corpus, zips=_zips(zips))  # type: ignore[arg-type]
    table = enhance_cases_table(c)
    incomplete = table[table["missing"] != ""]
    console.print(f"{len(table)} cases, release {c.release}, {len(incomplete)} incomplete")
    for lic, n in table["licence"].fillna("unknown").value_counts().sort_index().items():
        console.print(f"  {lic}: {n}")
    for _, row in incomplete.iterrows():
        console.print(f"  case {row['case_id']} lacks {row['missing'].replace(';', ', ')}")
    for p in c.problems:
        err_console.print(f"[yellow]note[/yellow] {escape(str(p))}")
    if out is not None:
        _write_table(table, out)
        console.print(f"wrote {out}", markup=False)


# -- labels -----------------------------------------------------------------------------------
@labels_app.command("check")
@handle_errors
def labels_check_cmd(
    corpus: Path = typer.Argument(..., help="ENHANCE.PET corpus folder."),
    cases: str | None = typer.Option(None, "--cases", help="e.g. 1-20,35 (default: all)."),
    zips: str = typer.Option("auto", "--zips", help=_ZIPS_HELP),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when any group differs."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Files read in parallel."),
) -> None:
    """Compare labels.json with the voxel values found, per group."""
    from petcorpus.layouts.enhance import check_corpus_labels, open_enhance

    c = open_enhance(corpus, zips=_zips(zips))  # type: ignore[arg-type]
    checks = check_corpus_labels(c, _cases(cases), workers=workers)
    src = c.labels_ref or "built-in MOOSE table"
    console.print(f"labels: {src} ({c.labels.n_regions} regions declared)", markup=False)
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


def _merged_case(corpus: Path, case: str, zips: str) -> tuple[Any, dict[str, Any], Any]:
    """(corpus, group volumes, merged global-id array) of one case; no masks is an error."""
    from petcorpus.labels import merge_groups
    from petcorpus.layouts.enhance import open_enhance, read_case

    c = open_enhance(corpus, zips=_zips(zips))  # type: ignore[arg-type]
    groups = read_case(c, case, images=False).groups
    if not groups:
        raise typer.BadParameter(f"case {case} has no masks")
    return c, groups, merge_groups({g: v.array for g, v in groups.items()})


@labels_app.command("merge")
@handle_errors
def labels_merge_cmd(
    corpus: Path = typer.Argument(..., help="ENHANCE.PET corpus folder."),
    case: str = typer.Argument(..., help="Case number, e.g. 1 or 0001."),
    out: Path = typer.Option(..., "--out", "-o", help="Merged label map (.nii.gz)."),
    zips: str = typer.Option("auto", "--zips", help=_ZIPS_HELP),
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
    region: list[str] | None = typer.Option(None, "--region", "-r", help="Only these regions."),
    zips: str = typer.Option("auto", "--zips", help=_ZIPS_HELP),
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


# -- organs -----------------------------------------------------------------------------------
@organs_app.command("stats")
@handle_errors
def organs_stats_cmd(
    corpus: Path = typer.Argument(..., help="ENHANCE.PET corpus folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Per-region table (.csv/.parquet)."),
    percist: Path | None = typer.Option(None, "--percist", help="PERCIST table (.csv)."),
    cases: str | None = typer.Option(None, "--cases", help="e.g. 1-20,35 (default: all)."),
    pet_unit: str = typer.Option("auto", "--pet-unit", help="auto, SUV or Bq/ml."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Cases in parallel."),
    zips: str = typer.Option("auto", "--zips", help=_ZIPS_HELP),
) -> None:
    """Volume, SUVmean/median/max/p95/sd of every region of every case, plus PERCIST."""
    from petcorpus.layouts.enhance import open_enhance
    from petcorpus.organs import corpus_organ_stats

    if pet_unit not in ("auto", "SUV", "Bq/ml"):
        raise typer.BadParameter("must be auto, SUV or Bq/ml", param_hint="--pet-unit")
    _check_table_file(out)
    if percist is not None:
        check_output_file(percist, what="PERCIST table")
    c = open_enhance(corpus, zips=_zips(zips))  # type: ignore[arg-type]
    table, refs, failed = corpus_organ_stats(
        c,
        _cases(cases),
        pet_unit=pet_unit,  # type: ignore[arg-type]
        workers=workers,
    )
    if len(table):
        _write_table(table, out)
        console.print(f"wrote {out}: {len(table)} rows from {len(refs)} cases", markup=False)
        if percist is not None:
            _write_table(refs, percist)
            console.print(f"wrote {percist}", markup=False)
    for cid, why in failed.items():
        err_console.print(f"[red]failed[/red] case {cid}: {escape(str(why))}")
    if failed:
        raise typer.Exit(code=1)


@organs_app.command("lesions")
@handle_errors
def organs_lesions_cmd(
    lesions: Path = typer.Option(..., "--lesions", help="Lesion mask (.nii.gz), e.g. SEG."),
    organs: Path = typer.Option(..., "--organs", help="Organ label map (.nii.gz, any grid)."),
    out: Path = typer.Option(..., "--out", "-o", help="Table (.csv)."),
    pet: Path | None = typer.Option(None, "--pet", help="PET/SUV on the lesion grid."),
    group: str | None = typer.Option(
        None, "--group", help="The organ map holds one group's local ids (default: global ids)."
    ),
    labels_json: Path | None = typer.Option(None, "--labels", help="labels.json for names."),
) -> None:
    """Assign each lesion (18-connected component) to the regions it overlaps, with fractions."""
    from petcorpus.labels import GROUPS, load_labels, normalise_group
    from petcorpus.organs import labels_to_grid, lesions_by_organ
    from petcorpus.volume import Volume

    check_output_file(out)
    les = Volume.from_nifti(lesions)
    org = Volume.from_nifti(organs)
    if not org.same_grid(les):
        org = labels_to_grid(org, les)
    table = load_labels(labels_json)
    if group is not None:
        g = normalise_group(group)
        if g is None:
            raise typer.BadParameter(f"groups are {', '.join(GROUPS)}", param_hint="--group")
        names = dict(table.groups[g])
    else:
        names = table.global_names()
    values = Volume.from_nifti(pet).array if pet is not None else None
    df = lesions_by_organ(les.array, org.array, les.voxel_volume_ml, names, values=values)
    _write_table(df, out)
    n = int(df["lesion"].nunique()) if len(df) else 0
    console.print(f"wrote {out}: {n} lesions, {len(df)} lesion-region overlaps", markup=False)
