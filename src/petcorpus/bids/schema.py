"""The BIDS schema as the source of truth for sidecar fields (``bidsschematools``).

:func:`sidecar_fields` reads the schema's sidecar rules (``rules.sidecars``) and returns the
fields a file must (``required``) or should (``recommended``) carry, evaluating each rule's
selectors (``datatype == "pet"``, ``suffix == "pet"``, conditions on other sidecar values, ...)
against the file. Selectors are parsed by ``bidsschematools.expressions`` and evaluated here:
the schema ships the grammar, not an evaluator. A selector this evaluator cannot decide (an
unknown function) makes its rule not apply, and is logged.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from petcorpus._optional import import_optional

__all__ = ["FileContext", "bids_version", "load_schema", "sidecar_fields"]

log = logging.getLogger(__name__)
_LEVELS = ("required", "recommended")


@functools.cache
def load_schema() -> Any:
    """The BIDS schema bundled with the installed ``bidsschematools`` (read once).

    Raises
    ------
    MissingDependencyError
        ``bidsschematools`` is not installed (its message is the pip command).
    """
    mod = import_optional(
        "bidsschematools.schema",
        extra="bids",
        package="bidsschematools",
        purpose="the BIDS export",
    )
    return mod.load_schema()


def bids_version() -> str:
    """The BIDS version of the schema (``dataset_description.json``'s ``BIDSVersion``)."""
    return str(load_schema().bids_version)


class _UnknownError(Exception):
    """A selector uses something this evaluator does not know."""


class _Obj:
    """Attribute access on a mapping; a missing attribute is null, as in the schema."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = dict(data)

    def get(self, name: str) -> Any:
        return self.data.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.data


class FileContext:
    """What a selector may ask about one file: datatype, suffix, modality, extension, its
    entities and its sidecar (as the schema's expression language names them)."""

    def __init__(
        self,
        *,
        datatype: str,
        suffix: str,
        extension: str,
        entities: Mapping[str, str],
        sidecar: Mapping[str, Any],
        modality: str | None = None,
        dataset_modalities: Sequence[str] = (),
    ) -> None:
        self.names: dict[str, Any] = {
            "datatype": datatype,
            "suffix": suffix,
            "extension": extension,
            "modality": modality or datatype,
            "entities": _Obj(entities),
            "sidecar": _Obj(sidecar),
            "dataset": _Obj({"modalities": list(dataset_modalities)}),
        }


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return list(v) if isinstance(v, list | tuple) else [v]


_FUNCTIONS = {
    "intersects": lambda a, b: bool(set(map(str, _as_list(a))) & set(map(str, _as_list(b)))),
    "match": lambda s, pat: s is not None and re.search(pat, str(s)) is not None,
    "length": lambda a: None if a is None else len(a),
    "exists": None,  # needs the file tree: unknown
}


def _literal(token: str, ctx: FileContext) -> Any:
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        return token[1:-1]
    if token in ("true", "false"):
        return token == "true"
    if token == "null":
        return None
    try:
        return float(token) if "." in token else int(token)
    except ValueError:
        pass
    if token in ctx.names:
        return ctx.names[token]
    raise _UnknownError(token)


def _eval(node: Any, ctx: FileContext) -> Any:
    from bidsschematools import expressions as ex

    if isinstance(node, str):
        return _literal(node, ctx)
    if isinstance(node, ex.Array):
        return [_eval(e, ctx) for e in node.elements]
    if isinstance(node, ex.Property):
        obj = _eval(node.name, ctx)
        return obj.get(node.field) if isinstance(obj, _Obj) else None
    if isinstance(node, ex.Element):
        seq = _eval(node.name, ctx)
        idx = _eval(node.index, ctx)
        try:
            return seq[idx]
        except (TypeError, IndexError, KeyError):
            return None
    if isinstance(node, ex.Function):
        fn = _FUNCTIONS.get(node.name)
        if fn is None:
            raise _UnknownError(f"{node.name}()")
        return fn(*(_eval(a, ctx) for a in node.args))
    if isinstance(node, ex.RightOp):
        value = _eval(node.rh, ctx)
        if node.op == "!":
            return not value
        if node.op == "-":
            return -value
        raise _UnknownError(node.op)
    if isinstance(node, ex.BinOp):
        if node.op == "&&":
            return bool(_eval(node.lh, ctx)) and bool(_eval(node.rh, ctx))
        if node.op == "||":
            return bool(_eval(node.lh, ctx)) or bool(_eval(node.rh, ctx))
        lh, rh = _eval(node.lh, ctx), _eval(node.rh, ctx)
        ops = {
            "==": lambda: lh == rh,
            "!=": lambda: lh != rh,
            "in": lambda: lh in rh if rh is not None else False,
            "<": lambda: lh < rh,
            ">": lambda: lh > rh,
            "<=": lambda: lh <= rh,
            ">=": lambda: lh >= rh,
            "+": lambda: lh + rh,
            "-": lambda: lh - rh,
        }
        if node.op not in ops:
            raise _UnknownError(node.op)
        try:
            return ops[node.op]()
        except TypeError:  # a comparison with null
            return False
    raise _UnknownError(type(node).__name__)


@functools.cache
def _parsed(selector: str) -> Any:
    from bidsschematools.expressions import parse

    return parse(selector)


def _applies(selectors: Sequence[str], ctx: FileContext, rule: str) -> bool:
    for sel in selectors:
        try:
            if not _eval(_parsed(sel), ctx):
                return False
        except _UnknownError as exc:
            log.debug("BIDS rule %s: selector %r not decidable here (%s)", rule, sel, exc)
            return False
    return True


def sidecar_fields(ctx: FileContext) -> dict[str, str]:
    """Every sidecar field the schema requires or recommends for the file ``ctx``.

    Returns
    -------
    dict
        Field name → ``"required"`` or ``"recommended"`` (the stronger level when several
        rules name the field), in the schema's order.
    """
    schema = load_schema()
    out: dict[str, str] = {}
    for group_name, group in schema.rules.sidecars.items():
        for rule_name, rule in group.items():
            if not _applies(list(rule.get("selectors", [])), ctx, f"{group_name}.{rule_name}"):
                continue
            for field, spec in (rule.get("fields") or {}).items():
                level = spec if isinstance(spec, str) else spec.get("level")
                if level not in _LEVELS:
                    continue
                if out.get(field) != "required":
                    out[field] = str(level)
    return out
