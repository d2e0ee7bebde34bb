"""``petcorpus enhance phantom|cases``: ENHANCE.PET corpora."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from petcorpus.cli._app import app, console, err_console, handle_errors
from petcorpus.cli._help import _Group
from petcorpus.cli._outputs import check_output_dir, check_table_file, write_table
from petcorpus.cli._params import PhantomPetUnit, Release, Size, Zips

enhance_app = typer.Typer(
    help="ENHANCE.PET corpora: list cases, write a phantom corpus.",
    no_args_is_help=True,
    cls=_Group,
)
app.add_typer(enhance_app, name="enhance")

#: The ``--zips`` option of every command reading an ENHANCE.PET corpus.
ZIPS = typer.Option(
    Zips.AUTO, "--zips", help="auto: unpacked files, else zip members; only: the zips only."
)


@enhance_app.command("phantom")
@handle_errors
def enhance_phantom_cmd(
    out: Path = typer.Argument(..., help="Folder for the ENHANCE-style corpus."),
    cases: int = typer.Option(3, "--cases", "-n", min=1, metavar="N", help="Number of cases."),
    release: Release = typer.Option(
        Release.V2, "--release", help="v1: flat CT/PT; v2: CT_*/PT_*."
    ),
    zipped: bool = typer.Option(False, "--zipped", help="v2: write the 13 downloads (zips)."),
    pet_unit: PhantomPetUnit = typer.Option(PhantomPetUnit.SUV, "--pet-unit", help="PET unit."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Random seed."),
    size: Size = typer.Option(Size.SMALL, "--size", help="small (fast) or full."),
) -> None:
    """Write phantom studies as an ENHANCE.PET corpus (images, masks, labels.json, xlsx)."""
    from petcorpus.phantom.enhance import write_enhance_corpus

    check_output_dir(out)
    written = write_enhance_corpus(
        out,
        cases,
        seed=seed,
        size=size.value,  # type: ignore[arg-type]
        release=release.value,  # type: ignore[arg-type]
        zipped=zipped,
        pet_unit=pet_unit.value,  # type: ignore[arg-type]
    )
    console.print(
        f"wrote {len(written)} {release.value} cases to {out}" + (" (zips)" if zipped else ""),
        markup=False,
    )


@enhance_app.command("cases")
@handle_errors
def enhance_cases_cmd(
    corpus: Path = typer.Argument(..., help="ENHANCE.PET corpus folder."),
    out: Path | None = typer.Option(
        None, "--out", "-o", metavar="FILE", help="Write the table (.csv/.parquet)."
    ),
    zips: Zips = ZIPS,
) -> None:
    """List the cases: files found, what is missing, site and licence."""
    from petcorpus.layouts.enhance import enhance_cases_table, open_enhance

    if out is not None:
        check_table_file(out)
    c = open_enhance(corpus, zips=zips.value)  # type: ignore[arg-type]
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
        write_table(table, out)
        console.print(f"wrote {out}", markup=False)
