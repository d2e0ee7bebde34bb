"""The ``petcorpus`` command: a thin typer shell over the library.

Each command group lives in its own module and registers itself on :data:`app`; this
module only assembles them and maps :class:`~petcorpus.errors.PetcorpusError` to a one-line
message and exit code 1.
"""

from __future__ import annotations

import importlib
import sys

from petcorpus.cli._app import app, console

# Command modules, imported for their registrations on `app` (one line per area).
_COMMAND_MODULES = [
    "petcorpus.cli.phantom",
    "petcorpus.cli.demo",
    "petcorpus.cli.convert",
    "petcorpus.cli.build",
    "petcorpus.cli.download",
    "petcorpus.cli.viz",
    "petcorpus.cli.suv",
    "petcorpus.cli.evaluate",
    "petcorpus.cli.enhance",
    "petcorpus.cli.catalog",
]

for _name in _COMMAND_MODULES:
    importlib.import_module(_name)

__all__ = ["app", "console", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``petcorpus`` console script."""
    from petcorpus.errors import PetcorpusError

    try:
        app(args=argv, prog_name="petcorpus", standalone_mode=True)
    except PetcorpusError as exc:  # pragma: no cover - typer re-raises only outside standalone
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
