"""``petcorpus scan``: index a DICOM tree, show the CT/PET each study would convert."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from petcorpus.cli._app import app, console, handle_errors


@app.command("scan")
@handle_errors
def scan_cmd(
    root: Path = typer.Argument(..., help="A DICOM tree (any layout) or one file."),
    workers: int = typer.Option(
        0,
        "--workers",
        "-j",
        min=0,
        metavar="N",
        help="Processes parsing headers (0: none, in this process).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """List the studies and series under ROOT and the CT/PET each study would convert."""
    from petcorpus.dicom.scan import scan
    from petcorpus.errors import PetcorpusError

    result = scan(root, processes=workers or None)
    studies = []
    for st in result.studies:
        try:
            sel = st.select()
            choice = {
                "ct": sel.ct.series_uid,
                "pet": sel.pet.series_uid,
                "segs": [s.series_uid for s in sel.segs],
                "reasons": sel.reasons,
            }
        except PetcorpusError as exc:
            choice = {"error": f"[{exc.reason}] {exc.message}"}
        studies.append((st, choice))
    if as_json:
        obj = {
            "studies": [
                {
                    "study_uid": st.study_uid,
                    "study_date": st.study_date,
                    "series": [
                        {
                            "series_uid": s.series_uid,
                            "modality": s.modality,
                            "description": s.description,
                            "files": s.n_files,
                            "manufacturer": s.manufacturer,
                            "z_extent": s.z_extent,
                            "params": s.params,
                        }
                        for s in st.series
                    ],
                    "selection": choice,
                }
                for st, choice in studies
            ],
            "skipped": [{"file": str(p), "reason": r} for p, r in result.skipped],
        }
        print(json.dumps(obj, indent=2, default=str))
        return
    for st, choice in studies:
        # One series on two lines (the UID alone on the second), so that 80 columns suffice.
        console.print(f"[bold]study[/bold] {st.study_uid}")
        console.print(f"  date {st.study_date}, {len(st.series)} series")
        for s in st.series:
            what = [f"{s.n_files} files", s.description or "", s.manufacturer or ""]
            if s.z_extent:
                what.append(f"z {s.z_extent[0]:.1f}..{s.z_extent[1]:.1f} mm")
            line = f"  {s.modality:4s} " + " | ".join(w for w in what if w)
            console.print(line, markup=False, soft_wrap=False)
            console.print(f"       {s.series_uid}", markup=False)
        if "error" in choice:
            console.print(f"  [red]no selection[/red]: {escape(str(choice['error']))}")
        else:
            for reason in choice["reasons"]:
                console.print(f"  → {reason}", markup=False)
    console.print(
        f"{_count(len(result.studies), 'study', 'studies')}, "
        f"{_count(result.n_files, 'DICOM file', 'DICOM files')}, "
        f"{_count(len(result.skipped), 'file', 'files')} skipped"
    )
    for p, r in result.skipped[:20]:
        console.print(f"  skipped {p}: {r}", markup=False)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
