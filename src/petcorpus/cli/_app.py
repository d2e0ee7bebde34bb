"""The typer application object and helpers shared by every command module.

Errors and exit codes (docs/design.md, "Errors and exit codes"): every command runs inside
one guard, :class:`_GuardedGroup`, so a user never sees a Python traceback.

- :class:`~petcorpus.errors.PetcorpusError`: one red line ``error [REASON]: path: message``,
  exit 1.
- :class:`OSError` (disk full, permission denied, read-only file system, a file where a
  folder must be, ...): one line naming the path and the cause, exit 1.
- Anything else (a bug): one line ``error: <type>: <message> (full traceback in <log>)``
  and the traceback written to a log file (:func:`log_dir`), exit 1. ``petcorpus --debug``
  prints the traceback instead.
- Usage errors (unknown option, bad value): typer's message, exit 2.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import platform
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from petcorpus.cli._help import _Group, tidy_tree
from petcorpus.errors import PetcorpusError

#: Exit codes of every command (typer/click use 2 for usage errors).
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_DEBUG_KEY = "petcorpus.debug"

# What the user should read for the errno values a corpus tool meets when writing.
_OS_CAUSES = {
    errno.ENOSPC: "disk full (no space left on the device)",
    errno.EDQUOT: "disk full (disk quota exceeded)",
    errno.EFBIG: "disk full / file too large (a file-size limit was reached)",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.EEXIST: "already exists",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOENT: "no such file or folder",
}

# Signals of typer/click itself (usage errors, --help, typer.Exit): never caught here.
_PASS_THROUGH = (typer.Exit, typer.Abort, typer.TyperException)


class _GuardedGroup(_Group):
    """The root command group: turns any exception of a command into one line (see above),
    and tidies the help pages of the whole tree (:func:`petcorpus.cli._help.tidy_tree`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tidy_tree(self)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            fail(exc, debug=bool(ctx.meta.get(_DEBUG_KEY)))


app = typer.Typer(
    name="petcorpus",
    help="Turn whole-body FDG-PET/CT studies into an ML-ready corpus, and back into numbers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_GuardedGroup,
)
console = Console(stderr=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def log_dir() -> Path:
    """Folder for the logs of unexpected errors: ``$XDG_STATE_HOME/petcorpus/logs``
    (default ``~/.local/state/petcorpus/logs``), else ``<temp dir>/petcorpus-logs``."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join("~", ".local", "state")
    for candidate in (
        Path(state).expanduser() / "petcorpus" / "logs",
        Path(tempfile.gettempdir()) / "petcorpus-logs",
    ):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return Path(tempfile.gettempdir())


def _write_log(exc: BaseException) -> Path | None:
    """Write the traceback of ``exc`` (and what ran) to a new log file; None if impossible."""
    from petcorpus import __version__

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = (
        f"petcorpus {__version__}, Python {platform.python_version()}, {platform.platform()}\n"
        f"command: {' '.join(sys.argv)}\n"
        f"time: {dt.datetime.now().isoformat(timespec='seconds')}\n\n"
        + "".join(traceback.format_exception(exc))
    )
    try:
        fd, name = tempfile.mkstemp(prefix=f"petcorpus-{stamp}-", suffix=".log", dir=log_dir())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError:
        return None
    return Path(name)


def os_error_line(exc: OSError) -> str:
    """``path: cause`` of an OSError (both paths of a rename; the cause said plainly)."""
    cause = _OS_CAUSES.get(exc.errno or -1) or exc.strerror or str(exc)
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {cause}" if paths else cause


def error_line(exc: BaseException, log: Path | None = None) -> str:
    """The one line (rich markup, values escaped) that reports ``exc`` to a user."""
    if isinstance(exc, PetcorpusError):
        return f"[red]error[/red] [{exc.reason}]: {escape(str(exc))}"
    if isinstance(exc, OSError):
        return f"[red]error[/red]: {escape(os_error_line(exc))}"
    where = f"full traceback in {log}" if log else "the traceback could not be logged"
    msg = " ".join(str(exc).split()) or "(no message)"
    return f"[red]error[/red]: {escape(type(exc).__name__)}: {escape(msg)} ({escape(where)})"


def fail(exc: BaseException, *, debug: bool = False) -> NoReturn:
    """Report ``exc`` as one line on stderr (a traceback too with ``debug``); exit 1.

    A PetcorpusError or an OSError is the user's to fix; anything else is a bug, whose
    traceback goes to a log file named in the line.
    """
    log = None
    if debug:
        err_console.print(escape("".join(traceback.format_exception(exc))), end="")
    elif not isinstance(exc, PetcorpusError | OSError):
        log = _write_log(exc)
    logging.getLogger("petcorpus.cli").debug("command failed", exc_info=exc)
    err_console.print(error_line(exc, log))
    raise typer.Exit(code=EXIT_FAILED) from exc


def handle_errors(func: F) -> F:
    """Mark a command whose errors are reported as one line (returns ``func`` unchanged).

    Every command runs inside :class:`_GuardedGroup`, which reports any exception (see
    :func:`fail`): the report is made there, in one place, for commands with and without
    this decorator alike.
    """
    return func


def _print_version(value: bool) -> None:
    if value:
        from petcorpus import __version__

        console.print(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        expose_value=True,
        help="Print the petcorpus version and exit.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
    debug: bool = typer.Option(
        False, "--debug", help="On an error, print the Python traceback (for bug reports)."
    ),
) -> None:
    """petcorpus command line."""
    ctx.meta[_DEBUG_KEY] = debug
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command("version", hidden=True)
def version_cmd() -> None:
    """Print the petcorpus version (the same as ``petcorpus --version``)."""
    from petcorpus import __version__

    console.print(__version__)
