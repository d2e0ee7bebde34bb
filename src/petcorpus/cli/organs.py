"""``petcorpus organs stats|lesions``: organ PET statistics, PERCIST, lesions by organ."""

from __future__ import annotations

import enum
from pathlib import Path

import typer
from rich.markup import escape

from petcorpus.cli._app import app, console, err_console, handle_errors
from petcorpus.cli._help import _Group
from petcorpus.cli._outputs import check_output_file, check_table_file, write_table
from petcorpus.cli._params import CASES, OrganPetUnit, Zips, parse_cases
from petcorpus.cli.enhance import ZIPS

organs_app = typer.Typer(
    help="Organ PET statistics, PERCIST references, lesions by organ.",
    no_args_is_help=True,
    cls=_Group,
)
app.add_typer(organs_app, name="organs")


class OrganGrid(enum.StrEnum):
    """Where regions are measured: PET grid (masks mapped by nearest neighbour) or CT grid
    (PET resampled linearly onto the masks' own voxels)."""

    PET = "pet"
    CT = "ct"


@organs_app.command("stats")
@handle_errors
def organs_stats_cmd(
    corpus: Path = typer.Argument(..., help="ENHANCE.PET corpus folder."),
    out: Path = typer.Option(
        ..., "--out", "-o", metavar="FILE", help="Per-region table (.csv/.parquet)."
    ),
    percist: Path | None = typer.Option(
        None, "--percist", metavar="FILE", help="Also write the PERCIST table (.csv)."
    ),
    cases: str | None = CASES,
    pet_unit: OrganPetUnit = typer.Option(
        OrganPetUnit.AUTO, "--pet-unit", help="PET unit (auto: from the metadata)."
    ),
    workers: int = typer.Option(1, "--workers", "-j", min=1, metavar="N", help="Processes."),
    zips: Zips = ZIPS,
    grid: OrganGrid = typer.Option(
        OrganGrid.PET,
        "--grid",
        help="Measure on the PET grid (masks mapped) or the CT grid (PET resampled, exact masks).",
    ),
) -> None:
    """Volume, SUVmean/median/max/p95/sd of every region of every case, plus PERCIST."""
    from petcorpus.layouts.enhance import open_enhance
    from petcorpus.organs import corpus_organ_stats

    check_table_file(out)
    if percist is not None:
        check_output_file(percist, what="PERCIST table")
    c = open_enhance(corpus, zips=zips.value)  # type: ignore[arg-type]
    table, refs, failed = corpus_organ_stats(
        c,
        parse_cases(cases),
        pet_unit=pet_unit.value,  # type: ignore[arg-type]
        workers=workers,
        grid=grid.value,  # type: ignore[arg-type]
    )
    if len(table):
        write_table(table, out)
        console.print(f"wrote {out}: {len(table)} rows from {len(refs)} cases", markup=False)
        if percist is not None:
            write_table(refs, percist)
            console.print(f"wrote {percist}", markup=False)
    if len(table):
        noted = table[table["note"] != ""]
        for cid, grp, local, note in zip(
            noted["case_id"], noted["group"], noted["local_id"], noted["note"], strict=True
        ):
            err_console.print(
                f"[yellow]warning[/yellow] case {cid}: {grp} {local}: {escape(str(note))}"
            )
    for cid, why in failed.items():
        err_console.print(f"[red]failed[/red] case {cid}: {escape(str(why))}")
    if failed:
        raise typer.Exit(code=1)


@organs_app.command("lesions")
@handle_errors
def organs_lesions_cmd(
    lesions: Path = typer.Option(
        ..., "--lesions", metavar="FILE", help="Lesion mask (.nii.gz), e.g. SEG."
    ),
    organs: Path = typer.Option(
        ..., "--organs", metavar="FILE", help="Organ label map (.nii.gz, any grid)."
    ),
    out: Path = typer.Option(..., "--out", "-o", metavar="FILE", help="Table (.csv)."),
    pet: Path | None = typer.Option(
        None, "--pet", metavar="FILE", help="PET/SUV on the lesion grid."
    ),
    group: str | None = typer.Option(
        None,
        "--group",
        metavar="GROUP",
        help="The organ map holds one group's local ids (default: global ids).",
    ),
    labels_json: Path | None = typer.Option(
        None, "--labels", metavar="JSON", help="labels.json for names."
    ),
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
    write_table(df, out)
    n = int(df["lesion"].nunique()) if len(df) else 0
    console.print(f"wrote {out}: {n} lesions, {len(df)} lesion-region overlaps", markup=False)
