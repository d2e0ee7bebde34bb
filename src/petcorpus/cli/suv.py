"""``petcorpus suv``: the SUV factors of a PET series, with every input and its source."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from petcorpus.cli._app import app, console, handle_errors
from petcorpus.cli._format import table
from petcorpus.cli._params import SuvTime

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


@app.command("suv")
@handle_errors
def suv_cmd(
    paths: list[Path] = typer.Argument(
        ..., metavar="PATHS", help="A PET series folder, or PET files."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    suv_time: SuvTime = typer.Option(
        SuvTime.QIBA,
        "--suv-time",
        help="qiba: decay to the scan start; autopet: the published recipe.",
    ),
) -> None:
    """Print the SUV factors of a PET series with every input and where it came from."""
    from petcorpus.dicom.series import read_dataset
    from petcorpus.dicom.suv import autopet_reference_file, compute_suv
    from petcorpus.errors import PetcorpusError, Reason

    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file())
            if suv_time is SuvTime.AUTOPET:  # the recipe's file first, as it picks it
                ref = autopet_reference_file(p)
                found = [ref, *(f for f in found if f != ref)]
            files.extend(found)
        else:
            files.append(p)

    def header(f: Path) -> Dataset | PetcorpusError:
        try:
            return read_dataset(f, stop_before_pixels=True)
        except PetcorpusError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=4) as pool:
        headers = list(pool.map(header, files))
    dss, used = [], []
    for f, ds in zip(files, headers, strict=True):
        if isinstance(ds, PetcorpusError):
            if len(files) == 1:
                raise ds
            continue  # non-DICOM files beside a series are skipped
        if str(ds.get("Modality", "")) == "PT":
            dss.append(ds)
            used.append(f)
    if not dss:
        raise PetcorpusError(
            "no PET (Modality PT) DICOM file found", path=paths[0], reason=Reason.NO_SERIES
        )
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in dss}
    if len(series) > 1:
        raise PetcorpusError(
            f"files of {len(series)} PET series given; pass one series", path=paths[0]
        )
    res = compute_suv(dss, time_reference=suv_time.value, path=used)  # type: ignore[arg-type]
    if as_json:
        obj = {
            "suv_bw": res.suv_bw,
            "suv_lbm": res.suv_lbm,
            "suv_bsa": res.suv_bsa,
            "bqml": res.bqml,
            "time_reference": res.time_reference,
            "scan_datetime": res.scan_datetime,
            "scan_datetime_source": res.scan_datetime_source,
            "n_files": len(dss),
            "errors": res.errors,
            "warnings": list(res.warnings),
            "inputs": res.inputs,
        }
        if res.per_slice:
            obj["per_slice"] = res.per_slice
        print(json.dumps(obj, indent=2, default=str))
        return
    console.print(f"PET series {next(iter(series))}")
    console.print(f"  {len(dss)} files, time reference {res.time_reference}")
    rows = []
    for name, v in res.inputs.items():
        fname = Path(v["file"]).name if v["file"] else ""
        rows.append(
            [name, escape(str(v["value"])), f"{escape(v['source'])}  [dim]{escape(fname)}[/dim]"]
        )
    if res.scan_datetime:
        rows.append(["scan time used", res.scan_datetime, escape(res.scan_datetime_source or "")])
    console.print(table("input", "value", "source", rows=rows, title="inputs"))
    rows = []
    for key, label in (
        ("bqml", "Bq/ml"),
        ("suv_bw", "SUVbw (g/ml)"),
        ("suv_lbm", "SUL (g/ml)"),
        ("suv_bsa", "SUVbsa (cm2/ml)"),
    ):
        val = getattr(res, key)
        text = (
            f"{val:.9g}" if val is not None else f"[yellow]n/a[/yellow] {escape(res.errors[key])}"
        )
        rows.append([key, label, text])
    title = "factors (multiply a rescaled pixel value)"
    console.print(table("factor", "unit", "value", rows=rows, title=title))
    for w in res.warnings:
        console.print(f"[yellow]warning[/yellow] {escape(w)}")
