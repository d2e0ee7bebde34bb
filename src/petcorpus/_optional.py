"""Optional dependencies, imported where they are used.

petcorpus keeps what only some users need behind extras (``petcorpus[dask]``,
``petcorpus[parquet]``, ...). :func:`import_optional` imports such a module at the point of
use; when it is missing, or older than petcorpus requires, it raises
:class:`~petcorpus.errors.MissingDependencyError` whose message is the command that fixes
it, e.g. ``pip install 'petcorpus[dask]'`` (TorchIO's ``external/imports.py``; the version
check is highdicom's ``import_optional_dependency``). The version requirement of an extra is
read from petcorpus's own metadata (``pyproject.toml``), so it is stated in one place.

Examples
--------
>>> json = import_optional("json")  # present: the module itself
>>> try:
...     import_optional("no_such_module_xyz", extra="dask", purpose="--scheduler")
... except MissingDependencyError as exc:
...     print(exc)
--scheduler needs no_such_module_xyz, which is not installed: pip install 'petcorpus[dask]'
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import re
from types import ModuleType

from petcorpus.errors import MissingDependencyError

__all__ = ["import_optional", "install_hint"]


def install_hint(extra: str | None = None, package: str | None = None) -> str:
    """The pip command that installs an extra (or, without one, a package)."""
    if extra:
        return f"pip install 'petcorpus[{extra}]'"
    return f"pip install {package}"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def _extra_requirements(extra: str) -> dict[str, str]:
    """Distribution name → version specifier of petcorpus's ``extra`` (from its metadata)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - packaging comes with pip
        return {}
    try:
        lines = importlib.metadata.requires("petcorpus") or []
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout
        return {}
    out: dict[str, str] = {}
    for line in lines:
        req = Requirement(line)
        if req.marker is not None and req.marker.evaluate({"extra": extra}):
            out[_normalise(req.name)] = str(req.specifier)
    return out


def _check_version(package: str, extra: str, what: str) -> None:
    specifier = _extra_requirements(extra).get(_normalise(package))
    if not specifier:
        return
    from packaging.specifiers import SpecifierSet

    try:
        installed = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:  # imported from elsewhere: trust it
        return
    if not SpecifierSet(specifier).contains(installed, prereleases=True):
        raise MissingDependencyError(
            f"{what} needs {package}{specifier}, found {installed}: "
            f"pip install --upgrade 'petcorpus[{extra}]'"
        )


def import_optional(
    module: str,
    *,
    extra: str | None = None,
    package: str | None = None,
    purpose: str | None = None,
) -> ModuleType:
    """Import ``module``, or raise an error that says how to install it.

    Parameters
    ----------
    module : str
        Dotted module name, e.g. ``"dask.distributed"``.
    extra : str, optional
        The petcorpus extra that installs it (``"dask"``, ``"parquet"``); its version
        requirement is checked too.
    package : str, optional
        The distribution to install when there is no extra (default: the top-level module).
    purpose : str, optional
        What needs it, for the message (``"--scheduler"``, ``"Parquet export"``).

    Returns
    -------
    module
        The imported module.

    Raises
    ------
    MissingDependencyError
        The module cannot be imported, or its distribution is older than the extra requires.
    """
    package = package or module.split(".")[0]
    what = purpose or "this feature"
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{what} needs {package}, which is not installed: {install_hint(extra, package)}"
        ) from exc
    if extra:
        _check_version(package, extra, what)
    return mod
