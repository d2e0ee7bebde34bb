"""The command tree reads like one tool: every ``--help`` page fits 80 columns, lists its
choices, names its values well; one flag means one thing; ``--version``."""

from __future__ import annotations

import enum
import re
import typing

import pytest
import typer
from typer.testing import CliRunner

from petcorpus import __version__
from petcorpus.cli import _params, app

runner = CliRunner()
ROOT = typer.main.get_command(app)


def _tree(cmd=ROOT, path=()):
    """(path, command) of every visible command and group, the root first."""
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        if not sub.hidden:
            yield from _tree(sub, (*path, name))


PAGES = list(_tree())
IDS = [" ".join(p) or "petcorpus" for p, _ in PAGES]
# Type names typer shows when a parameter has no metavar, and typer's {arg} usage form.
_RAW_TYPE = re.compile(r"<(bool|str|text|int|float|path|dir|file|list)\b|\{\w+\}|\bTEXT\b|INTEGER")


def _help(path: tuple[str, ...]) -> str:
    res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize(("path", "cmd"), PAGES, ids=IDS)
def test_help_fits_80_columns_and_names_values(path, cmd) -> None:
    text = _help(path)
    for line in text.splitlines():
        assert len(line) <= 80, f"{line!r} is {len(line)} columns"
        assert "…" not in line, f"truncated: {line!r}"
        assert not _RAW_TYPE.search(line), f"a type name, not a metavar: {line!r}"
    for param in cmd.params:
        if param.hidden:
            continue
        for opt in param.opts:
            if opt.startswith("--"):
                assert opt in text
        desc = param.type_descriptor
        choices = desc.choices if desc.is_choice else None
        if choices:  # the whole list, on one line: [bw|lbm|bsa]
            listed = "[" + "|".join(str(getattr(c, "value", c)) for c in choices) + "]"
            assert listed in text, f"{param.name}: {listed} not in\n{text}"


def test_root_help_lists_groups_not_old_forms() -> None:
    text = _help(())
    for name in ("demo", "convert", "build", "catalog", "download", "labels", "organs"):
        assert re.search(rf"^│ {name}\b", text, re.M), name
    for old in ("status", "verify", "query", "export", "clinical", "version"):
        assert not re.search(rf"^│ {old}\s", text, re.M), f"{old} is listed at the top"
    catalog = _help(("catalog",))
    for name in ("status", "verify", "query", "export", "clinical"):
        assert re.search(rf"^│ {name}\b", catalog, re.M), name


def _options(cmd) -> list:
    return [p for p in cmd.params if p.param_type_name == "option" and not p.hidden]


def test_output_paths_are_out_or_positional() -> None:
    """An output path given as an option is ``-o/--out`` on every command; parallelism is
    ``-j/--workers``; no command keeps another name for either."""
    seen_out = 0
    for path, cmd in PAGES:
        for opt in _options(cmd):
            names = set(opt.opts) | set(opt.secondary_opts)
            assert not names & {"--output", "--to", "--dest", "--processes", "--threads", "-w"}, (
                path,
                names,
            )
            if names & {"--out", "-o"}:
                assert names == {"--out", "-o"}, (path, names)
                seen_out += 1
            if names & {"--workers", "-j"}:
                assert names == {"--workers", "-j"}, (path, names)
    assert seen_out >= 8


def test_old_option_and_command_names_still_run(tmp_path) -> None:
    """The short forms (``petcorpus status``) and old option names are hidden aliases."""
    res = runner.invoke(app, ["status", str(tmp_path / "none")])
    assert res.exit_code == 1 and "catalog" in res.output.lower()
    res = runner.invoke(app, ["catalog", "status", str(tmp_path / "none")])
    assert res.exit_code == 1 and "catalog" in res.output.lower()


def test_version() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == __version__
    res = runner.invoke(app, ["version"])  # the old form, hidden
    assert res.exit_code == 0 and res.output.strip() == __version__


def _literal(annotation) -> set[str]:
    """The strings of a ``Literal`` (or ``Literal | None``) annotation."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return set(args)
    return set().union(*(_literal(a) for a in args)) if args else set()


def _annotation(obj, name: str) -> set[str]:
    """The strings of the Literal annotating parameter (or field) ``name`` of ``obj``."""
    import inspect
    import sys

    ann = inspect.signature(obj).parameters[name].annotation
    if isinstance(ann, str):  # from __future__ import annotations: evaluate this one only
        ann = eval(ann, {**vars(sys.modules[obj.__module__]), "Literal": typing.Literal})
    return _literal(ann)


def test_choices_are_the_library_values() -> None:
    """Each Enum of the CLI holds exactly the strings the library function accepts."""
    from petcorpus.convert import ConversionOptions
    from petcorpus.layouts.enhance import open_enhance
    from petcorpus.metrics.evaluate import evaluate_folders
    from petcorpus.organs import corpus_organ_stats
    from petcorpus.phantom.enhance import write_enhance_corpus
    from petcorpus.phantom.study import Vendor

    pairs: list[tuple[type[enum.StrEnum], set[str]]] = [
        (_params.Suv, _annotation(ConversionOptions, "suv")),
        (_params.SuvTime, _annotation(ConversionOptions, "suv_time")),
        (_params.Compat, _annotation(ConversionOptions, "compat")),
        (_params.CompatFlavor, _annotation(ConversionOptions, "compat_flavor")),
        (_params.MetricSet, _annotation(evaluate_folders, "metrics")),
        (_params.Edition, _annotation(evaluate_folders, "edition")),
        (_params.Zips, _annotation(open_enhance, "zips")),
        (_params.OrganPetUnit, _annotation(corpus_organ_stats, "pet_unit")),
        (_params.PhantomPetUnit, _annotation(write_enhance_corpus, "pet_unit")),
        (_params.Release, _annotation(write_enhance_corpus, "release")),
        (_params.Size, _annotation(write_enhance_corpus, "size")),
        (_params.Vendor, _literal(Vendor) | {"mixed"}),
    ]
    for choice, library in pairs:
        assert {c.value for c in choice} == library, choice.__name__
