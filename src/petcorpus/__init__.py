"""petcorpus: whole-body FDG-PET/CT studies → annotated, ML-ready corpus → numbers."""

from importlib.metadata import PackageNotFoundError, version

from petcorpus.errors import PetcorpusError
from petcorpus.volume import Volume

try:
    __version__ = version("petcorpus")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

__all__ = ["PetcorpusError", "Volume", "__version__"]
