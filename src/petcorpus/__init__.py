"""petcorpus: whole-body FDG-PET/CT studies → annotated, ML-ready corpus → numbers."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from petcorpus.errors import PetcorpusError

if TYPE_CHECKING:
    from petcorpus.volume import Volume

try:
    __version__ = version("petcorpus")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

__all__ = ["PetcorpusError", "Volume", "__version__"]


def __getattr__(name: str) -> Any:
    # Volume is imported on first use: `import petcorpus` (and the CLI's start-up) then
    # loads no imaging library, so the CLI can drop the current folder from sys.path
    # before any third-party import could pick up a user's folder named like a module.
    if name == "Volume":
        from petcorpus.volume import Volume

        return Volume
    raise AttributeError(f"module 'petcorpus' has no attribute {name!r}")
