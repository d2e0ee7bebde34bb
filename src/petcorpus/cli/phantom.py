"""``petcorpus phantom``: write synthetic PET/CT studies as DICOM."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from petcorpus.cli._app import app, console, handle_errors
from petcorpus.cli._outputs import check_output_dir


@app.command("phantom")
@handle_errors
def phantom_cmd(
    out: Path = typer.Argument(..., help="Folder for the TCIA-like DICOM tree."),
    subjects: int = typer.Option(3, "--subjects", "-n", min=1, help="Number of studies."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same files)."),
    size: str = typer.Option("small", "--size", help="small (fast) or full (scanner-size)."),
    vendor: str = typer.Option("siemens", "--vendor", help="siemens, ge, philips or mixed."),
    tracer: str = typer.Option(
        "fdg", "--tracer", help="fdg, psma-ga68, psma-f18 or mixed (FDG and PSMA in turn)."
    ),
) -> None:
    """Write synthetic whole-body FDG or PSMA PET/CT studies (CT, PET, SEG) and a clinical CSV."""
    from petcorpus.phantom import write_corpus

    if size not in ("small", "full"):
        raise typer.BadParameter("size must be 'small' or 'full'", param_hint="--size")
    if vendor not in ("siemens", "ge", "philips", "mixed"):
        raise typer.BadParameter(
            "vendor must be siemens, ge, philips or mixed", param_hint="--vendor"
        )
    tracers = {"fdg": "FDG", "psma-ga68": "PSMA-Ga68", "psma-f18": "PSMA-F18", "mixed": "mixed"}
    if tracer.lower() not in tracers:
        raise typer.BadParameter(
            "tracer must be fdg, psma-ga68, psma-f18 or mixed", param_hint="--tracer"
        )
    check_output_dir(out)
    sz: Literal["small", "full"] = "full" if size == "full" else "small"
    studies = write_corpus(
        out,
        subjects=subjects,
        seed=seed,
        size=sz,
        vendor=vendor,  # type: ignore[arg-type]
        tracer=tracers[tracer.lower()],  # type: ignore[arg-type]
    )
    for st in studies:
        console.print(
            f"{st.subject_id}  {st.vendor:8s} {st.truth.diagnosis:12s} "
            f"{len(st.truth.lesions)} lesions"
            + ("" if st.truth.tracer == "FDG" else f"  {st.truth.tracer}")
        )
    console.print(f"wrote {len(studies)} studies to {out}", markup=False)
