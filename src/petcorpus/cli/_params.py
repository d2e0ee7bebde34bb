"""The choices of the command line, as Enums (so ``--help`` lists them), and small parsers.

Each Enum's values are the library's own strings (``Suv.LBM.value == "lbm"``, the value
:class:`petcorpus.convert.ConversionOptions` takes); a command converts at the boundary with
``.value``. tests/test_cli.py checks every Enum against the library's ``Literal`` where one
exists, so the two cannot drift apart.
"""

from __future__ import annotations

import enum

import typer


class Suv(enum.StrEnum):
    """What SUV.nii.gz holds: body weight, lean body mass (SUL), body surface area."""

    BW = "bw"
    LBM = "lbm"
    BSA = "bsa"


class SuvTime(enum.StrEnum):
    """Decay-correction time reference of the SUV."""

    QIBA = "qiba"
    AUTOPET = "autopet"


class Compat(enum.StrEnum):
    """Reproduce a published release's files."""

    AUTOPET = "autopet"


class CompatFlavor(enum.StrEnum):
    """dicom2nifti 2.3 dtypes (the TCIA release) or those of dicom2nifti >= 2.4."""

    PUBLISHED = "published"
    CURRENT = "current"


class Source(enum.StrEnum):
    """What ``build`` reads: a DICOM tree; an ENHANCE.PET corpus catalogued in place; or an
    autoPET challenge release (nnU-Net format) linked into the autoPET layout."""

    DICOM = "dicom"
    ENHANCE = "enhance"
    NNUNET_RELEASE = "nnunet"


class Hdf5Layout(enum.StrEnum):
    """HDF5 datasets: chunked and compressed, or contiguous (memory-mapped reads)."""

    CHUNKED = "chunked"
    CONTIGUOUS = "contiguous"


class Edition(enum.StrEnum):
    """autoPET challenge edition whose metrics are computed."""

    I = "I"  # noqa: E741 - the edition's name
    III = "III"
    IV = "IV"


class MetricSet(enum.StrEnum):
    """Which metrics ``evaluate`` computes."""

    AUTOPET = "autopet"
    ORGANS = "organs"
    ALL = "all"


class View(enum.StrEnum):
    """A MIP projection."""

    CORONAL = "coronal"
    SAGITTAL = "sagittal"
    AXIAL = "axial"


class QueryFormat(enum.StrEnum):
    """How ``catalog query`` prints rows."""

    TABLE = "table"
    CSV = "csv"
    JSON = "json"


class TableFormat(enum.StrEnum):
    """File formats of ``catalog export``."""

    CSV = "csv"
    XLSX = "xlsx"
    PARQUET = "parquet"


class Release(enum.StrEnum):
    """ENHANCE.PET release."""

    V1 = "v1"
    V2 = "v2"


class Zips(enum.StrEnum):
    """Reading an ENHANCE.PET corpus: unpacked files else zip members, never zips, only zips."""

    AUTO = "auto"
    NEVER = "never"
    ONLY = "only"


class OrganPetUnit(enum.StrEnum):
    """Unit of the PET images of an ENHANCE.PET corpus (auto: from the metadata)."""

    AUTO = "auto"
    SUV = "SUV"
    BQML = "Bq/ml"


class PhantomPetUnit(enum.StrEnum):
    """Unit of the PET images a phantom ENHANCE.PET corpus is written in."""

    SUV = "suv"
    BQML = "bqml"


class Size(enum.StrEnum):
    """Phantom size: small (fast) or full (scanner-size)."""

    SMALL = "small"
    FULL = "full"


class Vendor(enum.StrEnum):
    """Phantom scanner vendor (mixed: one of each in turn)."""

    SIEMENS = "siemens"
    GE = "ge"
    PHILIPS = "philips"
    MIXED = "mixed"


class Tracer(enum.StrEnum):
    """Phantom radiopharmaceutical (mixed: FDG and PSMA in turn)."""

    FDG = "fdg"
    PSMA_GA68 = "psma"  # Ga-68 PSMA-11, the common one
    PSMA_F18 = "psma-f18"
    MIXED = "mixed"


def value(choice: enum.StrEnum | None) -> str | None:
    """The library's string for an Enum choice (None stays None)."""
    return None if choice is None else choice.value


def parse_views(text: str) -> list[str]:
    """``"coronal,sagittal"`` → ``["coronal", "sagittal"]``; an unknown view is a usage error."""
    views = [v.strip() for v in text.split(",") if v.strip()]
    known = [v.value for v in View]
    for v in views:
        if v not in known:
            raise typer.BadParameter(
                f"{v!r} is not a view; choose from {', '.join(known)}", param_hint="--views"
            )
    return views


#: The ``--cases LIST`` option of the commands reading an ENHANCE.PET corpus.
CASES = typer.Option(None, "--cases", metavar="LIST", help="e.g. 1-20,35 (default: all).")


def parse_cases(text: str | None) -> list[str] | None:
    """``"1-3,35"`` → ``["0001", "0002", "0003", "0035"]`` (None or empty: every case)."""
    if not text:
        return None
    out: list[str] = []
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = part.split("-", 1)
                out += [f"{i:04d}" for i in range(int(a), int(b) + 1)]
            elif part.strip():
                out.append(f"{int(part):04d}")
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a case list such as 1-20,35", param_hint="--cases"
        ) from None
    return out


#: The series choice of ``convert`` and ``build`` (one definition for both commands).
PET_SERIES = typer.Option(
    None, "--pet-series", metavar="UID", help="Convert this PT series (not the rule's)."
)
CT_SERIES = typer.Option(
    None, "--ct-series", metavar="UID", help="Convert this CT series (not the rule's)."
)
NO_SEG = typer.Option(False, "--no-seg", help="Images only (for a study whose SEG is broken).")
