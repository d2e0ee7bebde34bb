"""DICOM values read one way: dates and times, private tags, scan/injection rule, iterations."""

from __future__ import annotations

import copy
import datetime as dt
import io

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian

from petcorpus.dicom.values import (
    GE_SCAN_DATETIME,
    PHILIPS_BQML_SCALE,
    PHILIPS_SUV_SCALE,
    injection_datetime,
    parse_date_time,
    parse_datetime,
    private_value,
    recon_iterations_subsets,
    scan_start,
)
from tests.conftest import phantom

T = dt.datetime


@pytest.mark.parametrize(
    ("date", "time", "want"),
    [
        ("20200131", "083000", T(2020, 1, 31, 8, 30)),
        ("20200131", "0830", T(2020, 1, 31, 8, 30)),
        ("20200131", "08", T(2020, 1, 31, 8)),
        ("20200131", "083000.25", T(2020, 1, 31, 8, 30, 0, 250000)),
        ("20200131", "08:30:00", T(2020, 1, 31, 8, 30)),  # ACR-NEMA colons
        ("20200131", "083000.1234567", T(2020, 1, 31, 8, 30, 0, 123456)),  # cut to µs
        (" 20200131 ", " 083000 ", T(2020, 1, 31, 8, 30)),
        ("20200131", "", None),
        ("", "083000", None),
        (None, "083000", None),
        ("20201331", "083000", None),
        ("20200131", "256000", None),
        ("2020013", "083000", None),
    ],
)
def test_parse_date_time(date, time, want):
    assert parse_date_time(date, time) == want


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("20200131083000", T(2020, 1, 31, 8, 30)),
        ("20200131083000.5", T(2020, 1, 31, 8, 30, 0, 500000)),
        ("20200131083000.00+0100", T(2020, 1, 31, 8, 30)),  # offset dropped, naive
        ("20200131083000-0500", T(2020, 1, 31, 8, 30)),
        ("2020013108", T(2020, 1, 31, 8)),
        ("20200131", None),  # a date is no time
        ("", None),
        (None, None),
        ("garbage!!!", None),
    ],
)
def test_parse_datetime(value, want):
    assert parse_datetime(value) == want


# -- private tags ------------------------------------------------------------------------------
def _ds_with_blocks(slot: int) -> Dataset:
    ds = Dataset()
    ds.PatientID = "x"
    ds.add_new((0x0009, 0x0010), "LO", "SOMEONE ELSE")
    ds.add_new((0x0009, 0x1000 | 0x0D), "DT", "19991231000000")
    ds.add_new((0x0009, slot), "LO", "GEMS_PETD_01")
    ds.add_new((0x0009, (slot << 8) | 0x0D), "DT", "20200131083000.00")
    ds.add_new((0x7053, slot), "LO", "Philips PET Private Group")
    ds.add_new((0x7053, (slot << 8) | 0x09), "DS", "1.25")
    return ds


def test_private_value_is_found_by_its_creator_in_any_slot():
    ds = _ds_with_blocks(0x11)
    assert parse_datetime(private_value(ds, GE_SCAN_DATETIME)) == T(2020, 1, 31, 8, 30)
    assert float(private_value(ds, PHILIPS_BQML_SCALE)) == 1.25
    assert private_value(ds, PHILIPS_SUV_SCALE) is None  # the block lacks this element
    assert private_value(Dataset(), GE_SCAN_DATETIME) is None


def test_private_value_of_an_unknown_implicit_vr_element_is_decoded_text():
    ds = _ds_with_blocks(0x10)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=True, little_endian=True)
    back = pydicom.dcmread(io.BytesIO(buf.getvalue()), force=True)
    assert private_value(back, PHILIPS_BQML_SCALE) in ("1.25", 1.25)
    assert float(private_value(back, PHILIPS_BQML_SCALE)) == 1.25


def test_private_value_reads_a_deep_copy_not_its_original():
    ds = _ds_with_blocks(0x10)
    assert private_value(ds, GE_SCAN_DATETIME) is not None  # pydicom caches the block
    c = copy.deepcopy(ds)
    del c[0x0009, 0x100D]
    assert private_value(c, GE_SCAN_DATETIME) is None
    assert private_value(ds, GE_SCAN_DATETIME) is not None


# -- the scan and injection rule ---------------------------------------------------------------
def test_scan_start_rule():
    t = T(2020, 1, 1, 10)
    later = t + dt.timedelta(minutes=41)
    assert scan_start(t, later) == "series"  # series time before the acquisition
    assert scan_start(t, t) == "series"
    assert scan_start(later, t, ge_scan=t) == "ge"  # series time rewritten after the scan
    assert scan_start(later, t) == "acquisition"
    assert scan_start(None, t, ge_scan=later) == "ge"
    assert scan_start(t, None) == "series"
    assert scan_start(None, None) is None


def test_injection_rule():
    series = T(2020, 1, 2, 0, 45)
    assert injection_datetime("20200101233000", "000000", series) == (
        T(2020, 1, 1, 23, 30),
        "datetime",
    )
    assert injection_datetime(None, "233000", series) == (T(2020, 1, 1, 23, 30), "time")
    assert injection_datetime("", "003000", series) == (T(2020, 1, 2, 0, 30), "time")
    assert injection_datetime("bad", "003000", series) == (T(2020, 1, 2, 0, 30), "time")
    assert injection_datetime(None, "003000", None) is None
    assert injection_datetime(None, None, series) is None


@pytest.mark.parametrize(
    ("method", "want"),
    [
        ("PSF+TOF 2i21s", (2, 21)),
        ("OSEM 3i/24s", (3, 24)),  # the form scan's own regex used to miss
        ("3i24s", (3, 24)),
        ("OSEM3D 4i21s", (4, 21)),
        ("OP-OSEM3i21s", (3, 21)),
        ("VPFXS 2i24s", (2, 24)),
        ("BLOB-OS-TF 3i17s", (3, 17)),
        ("OSEM 2i x 16s", (2, 16)),
        ("OSEM 3 iterations 24 subsets", (3, 24)),
        ("3 it 8 subsets", (3, 8)),
        ("VPFX", (None, None)),
        ("FBP", (None, None)),
        ("", (None, None)),
        (None, (None, None)),
    ],
)
def test_recon_iterations_subsets(method, want):
    assert recon_iterations_subsets(method) == want


@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips"])
def test_phantom_private_tags_and_recon_read_back(vendor):
    pet = phantom(seed=11, size="small", vendor=vendor, diagnosis="LYMPHOMA").pet[0]
    ge = parse_datetime(private_value(pet, GE_SCAN_DATETIME))
    assert (ge is not None) == (vendor == "ge")
    assert (private_value(pet, PHILIPS_BQML_SCALE) is not None) == (vendor == "philips")
    iters, subsets = recon_iterations_subsets(pet.ReconstructionMethod)
    assert iters is not None and subsets is not None
