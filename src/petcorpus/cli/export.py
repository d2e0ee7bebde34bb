"""``petcorpus export-nnunet``, and the report of ``build --from nnunet``: the nnU-Net
v2 raw format both ways (:mod:`petcorpus.pipeline.release`).

The command is ``export-nnunet``, not ``export nnunet``: ``petcorpus export`` is the catalog's
table export (kept, hidden, as a short form of ``petcorpus catalog export``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

from petcorpus.cli._app import app, console, handle_errors
from petcorpus.cli._outputs import check_output_dir


def report_release_import(
    root: Path, out: Path, *, copy: bool, site: str | None, licence: str | None
) -> None:
    """Run :func:`~petcorpus.pipeline.import_release` and print what it did; exit 1 when a
    case failed."""
    from petcorpus.pipeline import import_release

    rep = import_release(
        root,
        out,
        copy=copy,
        site=site,
        licence=licence,
        command=["petcorpus", *sys.argv[1:]],
    )
    tracers = ", ".join(f"{n} {t}" for t, n in sorted(rep.tracers.items())) or "none"
    links = ", ".join(f"{n} {k}" for k, n in rep.links.items() if n) or "no files"
    console.print(
        f"nnU-Net release {escape(Path(root).name)}: {len(rep.done)} studies imported "
        f"({tracers}), {len(rep.failed)} failed; files: {links}"
    )
    for case_id, notes in sorted(rep.notes.items()):
        for note in notes:
            console.print(f"[yellow]note[/yellow] {escape(case_id)}: {escape(note)}")
    for case_id, why in sorted(rep.failed.items()):
        console.print(f"[red]failed[/red] {escape(case_id)} {escape(why)}")
    if rep.failed:
        raise typer.Exit(code=1)


@app.command("export-nnunet")
@handle_errors
def export_nnunet_cmd(
    corpus: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="Corpus folder (autoPET layout)."
    ),
    nnunet_raw: Path = typer.Argument(
        ..., metavar="NNUNET_RAW", help="nnU-Net raw folder ($nnUNet_raw)."
    ),
    dataset_id: int = typer.Option(
        221, "--id", min=1, max=999, metavar="NNN", help="nnU-Net dataset id (1-999)."
    ),
    name: str = typer.Option(
        "autoPET", "--name", metavar="NAME", help="Dataset name (DatasetNNN_<name>)."
    ),
    pet_channel_name: str = typer.Option(
        "PET",
        "--pet-channel-name",
        metavar="NAME",
        help="Name of the SUV channel, which chooses nnU-Net's normalisation: PET (any "
        "name nnU-Net does not know: z-score per case), CT (CT-style clipping) or noNorm.",
    ),
    copy: bool = typer.Option(False, "--copy", help="Copy the files instead of linking."),
) -> None:
    """Write CORPUS as an nnU-Net v2 raw dataset NNUNET_RAW/DatasetNNN_Name (CTres as
    channel 0, SUV as channel 1, SEG as label; the split as splits_final.json)."""
    from petcorpus.pipeline import export_nnunet
    from petcorpus.pipeline.release import NNUNET_PREPROCESSED, PET_CHANNEL_NAMES

    if pet_channel_name not in PET_CHANNEL_NAMES:
        raise typer.BadParameter(
            f"must be one of {', '.join(PET_CHANNEL_NAMES)}", param_hint="--pet-channel-name"
        )
    try:
        from petcorpus.layouts.nnunet import dataset_folder_name

        dataset_folder_name(dataset_id, name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--name") from exc
    check_output_dir(nnunet_raw, what="nnU-Net raw folder")
    done = export_nnunet(
        corpus,
        nnunet_raw,
        dataset_id=dataset_id,
        name=name,
        pet_channel_name=pet_channel_name,
        copy=copy,
    )
    links = ", ".join(f"{n} {k}" for k, n in done.links.items() if n)
    console.print(
        f"wrote {done.folder}: {done.train} training and {done.test} test cases "
        f"(files: {links}); channel 1 '{pet_channel_name}': "
        f"{PET_CHANNEL_NAMES[pet_channel_name]}",
        markup=False,
    )
    for note in done.notes:
        console.print(f"note: {note}", markup=False)
    if done.splits:
        if len(done.splits) > 1:
            console.print(f"splits_final.json ({done.split_source}): {done.splits[-1]}",
                          markup=False)  # fmt: skip
        else:
            console.print(
                f"splits_final.json ({done.split_source}): {done.splits[0]}; nnU-Net reads it "
                f"from ${NNUNET_PREPROCESSED}/{done.folder.name}/: copy it there before "
                "training (set $nnUNet_preprocessed to have it written there)",
                markup=False,
            )
