"""The typer application object and helpers shared by every command module."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from petcorpus.errors import PetcorpusError

app = typer.Typer(
    name="petcorpus",
    help="Turn whole-body FDG-PET/CT studies into an ML-ready corpus, and back into numbers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn a PetcorpusError into one red line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PetcorpusError as exc:
            err_console.print(f"[red]error[/red] [{exc.reason}]: {exc}")
            raise typer.Exit(code=1) from exc

    return wrapper  # type: ignore[return-value]


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """petcorpus command line."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command("version")
def version_cmd() -> None:
    """Print the petcorpus version."""
    from petcorpus import __version__

    console.print(__version__)
