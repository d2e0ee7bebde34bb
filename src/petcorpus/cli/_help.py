"""How ``--help`` reads: one pass over the command tree when the root group is built.

typer renders a help page from the click objects it builds; left alone it shows a flag's
type (``<bool>``), an argument as ``{out}`` with its type, and keeps the single line breaks
of a docstring. :func:`tidy_tree` (called once by the root group) makes every page of the
tree read the same way:

- an argument shows as its metavar in capitals (``OUT``, ``[OUT]`` when optional,
  ``PATHS...``), without a type;
- a flag (``--json``, ``--no-seg``, ``--help``) shows no type; a choice shows as
  ``[bw|lbm|bsa]``; any other option shows its metavar (each command names one: ``N``,
  ``FILE``, ``UID``...);
- a docstring's paragraphs are re-flowed, so the terminal's width decides the lines.
"""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

__all__ = ["tidy_tree"]


def _reflow(text: str | None) -> str | None:
    """Join the single line breaks of each paragraph (``\\b`` paragraphs are kept as written)."""
    if not text:
        return text
    import inspect

    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        p if p.startswith("\b") else re.sub(r"\s*\n\s*", " ", p.strip()) for p in paragraphs
    )


class _Argument(TyperArgument):
    __slots__ = ()

    def _usage_display_name(self) -> str:
        name = self.display_name_raw + ("..." if self.nargs != 1 else "")
        return name if self.required else f"[{name}]"

    def _rich_display_name(self) -> str:
        return self.display_name_raw + ("..." if self.nargs != 1 else "")

    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # the metavar says what it is; the help says more


class _Option(TyperOption):
    __slots__ = ()

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.metavar is not None:
            return self.metavar or None
        if self.is_flag:
            return None
        desc = self.type_descriptor
        if desc.is_choice and desc.choices is not None:
            return "[" + "|".join(str(getattr(c, "value", c)) for c in desc.choices) + "]"
        return super().display_type_rich(ctx)


def _typeless(option: Any) -> Any:
    """The ``--help`` option of a command shows no type either."""
    if isinstance(option, TyperOption) and not isinstance(option, _Option):
        option.__class__ = _Option
    return option


class _Command(TyperCommand):
    __slots__ = ()

    def get_help_option(self, ctx: Any) -> Any:
        return _typeless(super().get_help_option(ctx))


class _Group(TyperGroup):
    __slots__ = ()

    def get_help_option(self, ctx: Any) -> Any:
        return _typeless(super().get_help_option(ctx))


def tidy_tree(command: Any) -> None:
    """Apply the rules above to ``command`` and everything under it (idempotent)."""
    if not isinstance(command, _Command | _Group):
        if isinstance(command, TyperGroup):
            command.__class__ = _Group
        elif isinstance(command, TyperCommand):
            command.__class__ = _Command
    command.help = _reflow(command.help)
    for param in command.params:
        if isinstance(param, TyperArgument) and not isinstance(param, _Argument):
            param.__class__ = _Argument
            if param.metavar is None:
                param.metavar = (param.name or "").upper()
        elif isinstance(param, TyperOption) and not isinstance(param, _Option):
            param.__class__ = _Option
    for sub in getattr(command, "commands", {}).values():
        tidy_tree(sub)
