"""The ``petcorpus`` command: a thin typer shell over the library.

Each command group lives in its own module and registers itself on :data:`app`; this
module only assembles them. Errors become one line and an exit code in
:mod:`petcorpus.cli._app` (exit 1: the job failed; exit 2: a usage error).
"""

from __future__ import annotations

import importlib
import sys

from petcorpus.cli._app import app, console

# Command modules, imported for their registrations on `app` (one line per area).
# Each module is named after its command (or group); the order is that of `petcorpus --help`.
_COMMAND_MODULES = [
    "petcorpus.cli.demo",
    "petcorpus.cli.phantom",
    "petcorpus.cli.download",
    "petcorpus.cli.scan",
    "petcorpus.cli.suv",
    "petcorpus.cli.convert",
    "petcorpus.cli.build",
    "petcorpus.cli.catalog",
    "petcorpus.cli.evaluate",
    "petcorpus.cli.lesions",
    "petcorpus.cli.mip",
    "petcorpus.cli.report",
    "petcorpus.cli.qc",
    "petcorpus.cli.enhance",
    "petcorpus.cli.labels",
    "petcorpus.cli.organs",
    "petcorpus.cli.split",
    "petcorpus.cli.export",
    "petcorpus.cli.export_bids",
    "petcorpus.cli.datalist",
    "petcorpus.cli.deidentify",
    "petcorpus.cli.phi",
]

for _name in _COMMAND_MODULES:
    importlib.import_module(_name)

__all__ = ["app", "console", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``petcorpus`` console script."""
    from petcorpus._procs import drop_unsafe_path, unsafe_path_entries

    # Nothing a command does may import from the user's folder (a folder named `dl` there
    # broke pydicom's import through gdcm): `python -m` put it on sys.path.
    drop_unsafe_path(unsafe_path_entries())
    import typer

    from petcorpus.cli._app import fail

    try:
        app(args=argv, prog_name="petcorpus", standalone_mode=True)
    except Exception as exc:  # pragma: no cover - the root group reports command errors
        args = sys.argv[1:] if argv is None else argv
        try:
            fail(exc, debug="--debug" in args)
        except typer.Exit as done:  # outside typer's main loop here
            sys.exit(done.exit_code)
