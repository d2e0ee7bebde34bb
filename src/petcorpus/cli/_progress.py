"""Progress displays: shown only on a terminal, and never with ``--no-progress``.

A display written into a pipe or a log file is noise (or, with rich, a frozen last frame), so
every command builds its bar here. Downloads draw their own (on stderr,
:mod:`petcorpus.download.transfer`); :func:`on_terminal` tells them whether to.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["NO_PROGRESS", "on_terminal", "progress_bar", "spinner"]

#: The ``--no-progress`` option, the same on every command that has a display.
NO_PROGRESS = typer.Option(
    False, "--no-progress", help="No progress display (there is one only on a terminal)."
)


def on_terminal(enabled: bool, console: Console) -> bool:
    """Whether to draw: asked for (``--progress``) and ``console`` is a terminal."""
    return enabled and console.is_terminal


def progress_bar(console: Console, *, enabled: bool = True) -> Progress:
    """A bar of counted steps (studies, cases): ``description ━━━━ 3/10 0:00:05 0:00:12``."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not on_terminal(enabled, console),
        transient=True,
    )


def spinner(console: Console, *, enabled: bool = True) -> Progress:
    """A spinner with a description and the time elapsed, for work of unknown length."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        TimeElapsedColumn(),
        console=console,
        disable=not on_terminal(enabled, console),
        transient=True,
    )
