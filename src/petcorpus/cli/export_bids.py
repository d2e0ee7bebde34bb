"""``petcorpus export-bids``: a corpus as a BIDS-PET dataset (:mod:`petcorpus.bids`).

Named like ``export-nnunet``: ``petcorpus export`` is the catalog's table export.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from petcorpus.cli._app import app, console, handle_errors
from petcorpus.cli._outputs import check_output_dir


@app.command("export-bids")
@handle_errors
def export_bids_cmd(
    corpus: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="Corpus folder (autoPET layout, with its catalog)."
    ),
    bids_root: Path = typer.Argument(..., metavar="BIDS_ROOT", help="BIDS dataset folder."),
    name: str | None = typer.Option(
        None, "--name", metavar="NAME", help="Dataset name (default: the corpus folder's)."
    ),
    copy: bool = typer.Option(False, "--copy", help="Copy the images instead of linking."),
) -> None:
    """Write CORPUS as BIDS-PET in BIDS_ROOT: PET in Bq/mL with its BIDS-PET sidecar, the CT,
    participants and sessions (weight); SUV with its inputs, lesion masks and the CT on the
    PET grid under derivatives/petcorpus. Exit 1 when a study could not be exported."""
    from petcorpus.bids import export_bids

    check_output_dir(bids_root, what="BIDS folder")
    done = export_bids(corpus, bids_root, copy=copy, name=name)
    links = ", ".join(f"{n} {k}" for k, n in sorted(done.links.items()) if n)
    console.print(
        f"wrote {done.root}: {len(done.sessions)} sessions of "
        f"{len({s.split('/')[0] for s in done.sessions})} subjects (images: {links})",
        markup=False,
    )
    if done.not_filled:
        console.print(
            f"{len(done.not_filled)} recommended PET sidecar fields not known to the corpus "
            f"(docs/bids.md lists why): {', '.join(done.not_filled)}",
            markup=False,
        )
    for key, why in sorted(done.failed.items()):
        console.print(f"[red]failed[/red] {escape(key)} {escape(why)}")
    if done.failed:
        raise typer.Exit(code=1)
