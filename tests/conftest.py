"""Shared fixtures: phantom studies are built once per session and written to tmp folders."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from petcorpus.phantom import PhantomStudy, make_study, write_study

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The shared folder of real DICOM from the field (see its README)."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder {REALDATA} is not beside the repository")
    return REALDATA


_CACHE: dict[tuple, PhantomStudy] = {}


def phantom(**kwargs) -> PhantomStudy:
    """A phantom study, built once per parameter set and process.

    Shared between tests: never edit it in place (deep-copy the datasets you change).
    """
    bound = inspect.signature(make_study).bind(**kwargs)
    bound.apply_defaults()  # phantom(seed=1) and phantom(seed=1, size="small") are one study
    key = tuple(sorted(bound.arguments.items()))
    if key not in _CACHE:
        _CACHE[key] = make_study(**kwargs)
    return _CACHE[key]


@pytest.fixture(scope="session", params=["siemens", "ge", "philips"])
def vendor_study(request, tmp_path_factory) -> tuple[PhantomStudy, Path]:
    """A small lymphoma study per vendor, written as DICOM; returns (study, study folder)."""
    study = phantom(seed=11, size="small", vendor=request.param, diagnosis="LYMPHOMA")
    root = tmp_path_factory.mktemp(f"dicom-{request.param}")
    return study, write_study(study, root)
