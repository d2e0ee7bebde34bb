"""``petcorpus phantom``: write synthetic PET/CT studies as DICOM."""

from __future__ import annotations

from pathlib import Path

import typer

from petcorpus.cli._app import app, console, handle_errors
from petcorpus.cli._outputs import check_output_dir
from petcorpus.cli._params import Size, Tracer, Vendor

#: CLI choice → the phantom's ``tracer`` value.
_TRACERS = {
    Tracer.FDG: "FDG",
    Tracer.PSMA_GA68: "PSMA-Ga68",
    Tracer.PSMA_F18: "PSMA-F18",
    Tracer.MIXED: "mixed",
}


@app.command("phantom")
@handle_errors
def phantom_cmd(
    out: Path = typer.Argument(..., help="Folder for the TCIA-like DICOM tree."),
    subjects: int = typer.Option(3, "--subjects", "-n", min=1, metavar="N", help="Studies."),
    seed: int = typer.Option(
        0, "--seed", metavar="N", help="Random seed (same seed, same files)."
    ),
    size: Size = typer.Option(Size.SMALL, "--size", help="small (fast) or full (scanner-size)."),
    vendor: Vendor = typer.Option(Vendor.SIEMENS, "--vendor", help="Scanner vendor."),
    tracer: Tracer = typer.Option(
        Tracer.FDG, "--tracer", help="psma: Ga-68; mixed: FDG and PSMA in turn."
    ),
) -> None:
    """Write synthetic whole-body FDG or PSMA PET/CT studies (CT, PET, SEG) and a clinical CSV."""
    from petcorpus.phantom import write_corpus

    check_output_dir(out)
    studies = write_corpus(
        out,
        subjects=subjects,
        seed=seed,
        size=size.value,  # type: ignore[arg-type]
        vendor=vendor.value,  # type: ignore[arg-type]
        tracer=_TRACERS[tracer],  # type: ignore[arg-type]
    )
    for st in studies:
        console.print(
            f"{st.subject_id}  {st.vendor:8s} {st.truth.diagnosis:12s} "
            f"{len(st.truth.lesions)} lesions"
            + ("" if st.truth.tracer == "FDG" else f"  {st.truth.tracer}")
        )
    console.print(f"wrote {len(studies)} studies to {out}", markup=False)
