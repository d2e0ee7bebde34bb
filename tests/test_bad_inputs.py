"""Bad inputs through ``petcorpus build``: the right reason, the file named, the rest intact.

Each case damages one study (the *victim*) of a two-study tree built from the phantom and
runs the CLI on it. A case that is an error asserts the exit status, the reason code in the
catalog's failures table and on screen, the file named there, the other study converted
(files and checksums as in a build of the pristine tree), no ``.tmp-*`` leftover and no
empty folder in OUT. A case that is *not* an error (a DICOMDIR, mixed transfer syntaxes,
odd file names...) asserts that the victim converts to the same volumes as the pristine
study, and that what the user should know is said.

The sweep flips random bytes in the header region of one file of each of two studies of
a three-study tree: never a traceback, the build finishes, the third study always converts.
"""

from __future__ import annotations

import builtins
import dataclasses
import math
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.fileset import FileSet
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)
from typer.testing import CliRunner

from petcorpus.atomic import TEMP_PREFIX
from petcorpus.catalog import CATALOG_NAME
from petcorpus.cli import app
from petcorpus.errors import printable
from petcorpus.layouts.autopet import SIDECAR
from petcorpus.phantom import PhantomStudy, write_study
from tests.conftest import phantom

runner = CliRunner()

VICTIM = {"seed": 61, "size": "small", "vendor": "siemens", "diagnosis": "LYMPHOMA"}
GOOD = {"seed": 62, "size": "small", "vendor": "ge", "diagnosis": "MELANOMA"}
EXTRA = {"seed": 63, "size": "small", "vendor": "philips", "diagnosis": "LUNG_CANCER"}
#: the victim again, its SEG with a frame for every PET slice, 3 segments, frames shuffled
SEG_VARIANT = {**VICTIM, "seg_all_frames": True, "seg_segments": 3, "seg_frame_order": "shuffled"}
NIFTI_KINDS = ("CT", "PET", "SUV", "CTres", "SEG")


# -- the trees ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Tree:
    """A copy of the two-study input tree, with the victim's folders."""

    root: Path
    study: Path  # the victim's study folder
    victim: PhantomStudy
    good: PhantomStudy

    def series(self, word: str) -> Path:
        return next(p for p in self.study.iterdir() if p.is_dir() and word in p.name)

    @property
    def ct(self) -> Path:
        return self.series("CT IMAGES")

    @property
    def pet(self) -> Path:
        return self.series("PET corr")

    @property
    def seg(self) -> Path:
        (f,) = self.series("Segmentation").iterdir()
        return f

    def slices(self, folder: Path) -> list[Path]:
        return sorted(folder.glob("*.dcm"))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The pristine two-study tree, written once; cases work on copies."""
    root = tmp_path_factory.mktemp("bad-inputs-src")
    write_study(phantom(**VICTIM), root)
    write_study(phantom(**GOOD), root)
    return root


@pytest.fixture(scope="module")
def reference(base, tmp_path_factory) -> dict[str, dict[str, str]]:
    """StudyInstanceUID → kind → SHA-256 of a build of the pristine tree."""
    out = tmp_path_factory.mktemp("bad-inputs-ref") / "out"
    result = runner.invoke(app, ["build", str(base), str(out), "-j", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    return _artifacts(out)


@pytest.fixture
def tree(base, tmp_path) -> Tree:
    root = tmp_path / "in"
    shutil.copytree(base, root, symlinks=True)
    victim, good = phantom(**VICTIM), phantom(**GOOD)
    return Tree(root, root / victim.subject_id / victim.study_folder, victim, good)


@pytest.fixture(autouse=True)
def _logs_here(tmp_path, monkeypatch):
    """An unexpected error's log (there must be none) goes to the test's folder."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


# -- reading a build ------------------------------------------------------------------------------
def _db(out: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"{(out / CATALOG_NAME).resolve().as_uri()}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def _artifacts(out: Path) -> dict[str, dict[str, str]]:
    with _db(out) as conn:
        rows = conn.execute("SELECT study_uid, kind, sha256 FROM artifacts").fetchall()
    got: dict[str, dict[str, str]] = {}
    for r in rows:
        got.setdefault(r["study_uid"], {})[r["kind"]] = r["sha256"]
    return got


def _status(out: Path, uid: str) -> str | None:
    with _db(out) as conn:
        row = conn.execute("SELECT status FROM studies WHERE study_uid = ?", (uid,)).fetchone()
    return None if row is None else row["status"]


def _failure(out: Path, uid: str) -> sqlite3.Row:
    with _db(out) as conn:
        row = conn.execute(
            "SELECT reason, path, message FROM failures WHERE study_uid = ? "
            "ORDER BY failure_id DESC LIMIT 1",
            (uid,),
        ).fetchone()
    assert row is not None, f"no failure recorded for {uid}"
    return row


def _study_folder(out: Path, uid: str) -> Path | None:
    import json

    for sidecar in out.rglob(SIDECAR):
        if json.loads(sidecar.read_text())["study_instance_uid"] == uid:
            return sidecar.parent
    return None


def _check_out_is_clean(out: Path) -> None:
    """No partial file and no empty folder anywhere in OUT."""
    for dirpath, dirnames, filenames in os.walk(out):
        names = dirnames + filenames
        assert names, f"empty folder left in OUT: {dirpath}"
        leftovers = [n for n in names if n.startswith(TEMP_PREFIX)]
        assert not leftovers, f"partial files in {dirpath}: {leftovers}"


def _assert_converted(out: Path, uid: str, reference: dict[str, str], kinds=NIFTI_KINDS) -> None:
    """``uid`` is done, its files exist, and the given kinds are byte-identical to the
    pristine build."""
    assert _status(out, uid) == "done"
    folder = _study_folder(out, uid)
    assert folder is not None
    got = _artifacts(out)[uid]
    for kind in kinds:
        assert (folder / (SIDECAR if kind == "sidecar" else f"{kind}.nii.gz")).is_file()
        assert got[kind] == reference[kind], f"{kind} differs from the pristine build"


def _build(tree: Tree, out: Path, *args: str):
    return runner.invoke(
        app, ["build", str(tree.root), str(out), "-j", "1", "--no-progress", *args]
    )


# -- editing DICOM --------------------------------------------------------------------------------
def _edit(paths, fn: Callable[[pydicom.Dataset], None]) -> None:
    for p in paths if isinstance(paths, list) else [paths]:
        ds = pydicom.dcmread(p)
        fn(ds)
        ds.save_as(p, enforce_file_format=True)


def _set(**values) -> Callable[[pydicom.Dataset], None]:
    def fn(ds: pydicom.Dataset) -> None:
        for k, v in values.items():
            if v is None:
                delattr(ds, k)
            else:
                setattr(ds, k, v)

    return fn


def _raw_ds(path: Path, keyword: str, text: str) -> None:
    """Patch the value of a DS element in the file's bytes (same length, space-padded)."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    assert tag is not None
    tag = pydicom.tag.Tag(tag)
    data = path.read_bytes()
    # the element by its encoded tag and VR (explicit VR little endian)
    marker = tag.group.to_bytes(2, "little") + tag.element.to_bytes(2, "little") + b"DS"
    at = data.index(marker)
    length = int.from_bytes(data[at + 6 : at + 8], "little")
    value = text.encode().ljust(length)[:length]
    assert len(text) <= length, f"{text!r} is longer than the stored value"
    path.write_bytes(data[: at + 8] + value + data[at + 8 + length :])


# -- the cases ------------------------------------------------------------------------------------
Named = Path | tuple[Path, ...] | None


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: what to do to the victim and what the build must say.

    ``damage(tree, monkeypatch)`` returns the file (or folder) the failure must name.
    ``reason`` None: the victim converts (``same`` lists the volumes that must equal the
    pristine build's); ``says`` are texts the build's output must hold.
    """

    id: str
    damage: Callable[[Tree, pytest.MonkeyPatch], Named]
    reason: str | None
    args: tuple[str, ...] = ()
    says: tuple[str, ...] = ()
    same: tuple[str, ...] = NIFTI_KINDS
    #: what the other study must have (all of it, unless the options leave something out)
    good: tuple[str, ...] = (*NIFTI_KINDS, "sidecar")


def _zero_byte(which: str, k: int):
    def damage(t: Tree, _mp) -> Path:
        victim = t.slices(getattr(t, which))[k]
        victim.write_bytes(b"")
        return victim

    return damage


def _truncate(which: str, k: int, keep: Callable[[int], int]):
    def damage(t: Tree, _mp) -> Path:
        victim = t.slices(getattr(t, which))[k]
        data = victim.read_bytes()
        victim.write_bytes(data[: keep(len(data))])
        return victim

    return damage


def _unreadable(t: Tree, mp: pytest.MonkeyPatch) -> Path:
    """A slice the user may not read (chmod 000; as root, ``open`` refuses it instead)."""
    victim = t.slices(t.pet)[33]
    if os.geteuid() != 0:
        victim.chmod(0)
        return victim
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, str | os.PathLike) and Path(file) == victim:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    mp.setattr(builtins, "open", guarded)
    return victim


def _missing_slice(t: Tree, _mp) -> tuple[Path, ...]:
    files = t.slices(t.pet)
    files[30].unlink()
    return files[29], files[31]  # the gap is named by the slice on either side


def _duplicate_slice(t: Tree, _mp) -> Path:
    files = t.slices(t.ct)
    copy = t.ct / "1-999.dcm"
    shutil.copy(files[10], copy)
    _edit(copy, _set(SOPInstanceUID=generate_uid()))
    return t.ct


def _tilt(t: Tree, _mp) -> Path:
    files = t.slices(t.ct)
    z0 = float(pydicom.dcmread(files[0], stop_before_pixels=True).ImagePositionPatient[2])

    def fn(ds):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, round(y + (z - z0) * math.tan(math.radians(12)), 4), z]

    _edit(files, fn)
    return t.ct


def _pet_header(edit: Callable[[pydicom.Dataset], None]):
    def damage(t: Tree, _mp) -> Path:
        files = t.slices(t.pet)
        _edit(files, edit)
        return t.pet  # every file holds the value: the failure may name any of them

    return damage


def _one_pet_slice(edit: Callable[[pydicom.Dataset], None], k: int = 25):
    def damage(t: Tree, _mp) -> Path:
        victim = t.slices(t.pet)[k]
        _edit(victim, edit)
        return victim

    return damage


def _one_raw(which: str, keyword: str, text: str, k: int = 25):
    def damage(t: Tree, _mp) -> Path:
        victim = t.slices(getattr(t, which))[k]
        _raw_ds(victim, keyword, text)
        return victim

    return damage


def _all_raw(keyword: str, text: str):
    def damage(t: Tree, _mp) -> Path:
        files = t.slices(t.pet)
        for f in files:
            _raw_ds(f, keyword, text)
        return t.pet

    return damage


def _decay_none(ds):
    ds.DecayCorrection = "NONE"
    ds.CorrectedImage = ["NORM", "DTIM", "ATTN", "SCAT", "RAN"]


def _no_ct(t: Tree, _mp) -> Path:
    shutil.rmtree(t.ct)
    return t.pet


def _mixed_matrix(t: Tree, _mp) -> Path:
    victim = t.slices(t.ct)[20]

    def fn(ds):
        px = ds.pixel_array[::2, ::2].copy()
        ds.Rows, ds.Columns = px.shape
        ds.PixelData = px.tobytes()

    _edit(victim, fn)
    return victim


def _broken_seg_reference(t: Tree, _mp) -> Path:
    def fn(ds):
        ds.ReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.3.4"
        for group in (*ds.SharedFunctionalGroupsSequence, *ds.PerFrameFunctionalGroupsSequence):
            if "DerivationImageSequence" in group:
                del group.DerivationImageSequence

    _edit(t.seg, fn)
    return t.seg


def _seg_other_frame_of_reference(t: Tree, _mp) -> Path:
    _edit(t.seg, _set(FrameOfReferenceUID=generate_uid()))
    return t.seg


def _seg_zero_byte(t: Tree, _mp) -> Path:
    seg = t.seg
    seg.write_bytes(b"")
    return seg


def _ct_other_frame_of_reference(t: Tree, _mp) -> None:
    _edit(t.slices(t.ct), _set(FrameOfReferenceUID=generate_uid()))


def _ct_short(t: Tree, _mp) -> None:
    for f in t.slices(t.ct)[-20:]:  # the CT stops 20 slices below the PET's top
        f.unlink()


def _second_ac_pet(t: Tree, _mp) -> None:
    uid = generate_uid()
    files = t.slices(t.pet)
    dst = t.study / "5.000000-PET corr. again-12345"
    dst.mkdir()
    for path in files:
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesDescription = "PET AC again"
        ds.save_as(dst / path.name, enforce_file_format=True)


def _seg_variant(reorder_segments: bool):
    def damage(t: Tree, _mp) -> None:
        seg = phantom(**SEG_VARIANT).seg
        assert seg is not None
        seg = pydicom.dcmread(_roundtrip(seg))
        if reorder_segments:  # segment 3, 2, 1 in the SegmentSequence
            seg.SegmentSequence = list(reversed(list(seg.SegmentSequence)))
        seg.save_as(t.seg, enforce_file_format=True)

    return damage


def _roundtrip(ds: pydicom.Dataset):
    from io import BytesIO

    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    return buf


def _duplicate_instance_numbers(t: Tree, _mp) -> None:
    _edit(t.slices(t.pet), _set(InstanceNumber=1))
    _edit(t.slices(t.ct)[::2], _set(InstanceNumber=7))


def _mixed_transfer_syntaxes(t: Tree, _mp) -> None:
    for k, path in enumerate(t.slices(t.ct) + t.slices(t.pet)):
        if k % 3 == 0:
            continue
        ds = pydicom.dcmread(path)
        if k % 3 == 1:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=True)
        else:
            ds.compress(RLELossless, encoding_plugin="pydicom")
            ds.save_as(path, enforce_file_format=True)


def _deflated(t: Tree, _mp) -> None:
    for path in t.slices(t.pet) + t.slices(t.ct)[:10]:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)


def _dicomdir_export(t: Tree, _mp) -> None:
    """The victim as a media export (DICOMDIR + IM000000 names) instead of TCIA folders."""
    fileset = FileSet()
    for path in sorted(p for p in t.study.rglob("*") if p.is_file()):
        fileset.add(pydicom.dcmread(path))
    fileset.write(t.root / "export")
    shutil.rmtree(t.study.parent)
    assert (t.root / "export" / "DICOMDIR").is_file()


def _symlink_loops(t: Tree, _mp) -> None:
    (t.study / "loop").symlink_to(t.study, target_is_directory=True)
    (t.pet / "up").symlink_to("..", target_is_directory=True)
    (t.pet / "self.dcm").symlink_to("self.dcm")
    (t.root / "a").symlink_to("b")
    (t.root / "b").symlink_to("a")


def _latin1(name: str) -> str:
    return os.fsdecode(name.encode("latin-1"))


def _non_utf8_names(t: Tree, _mp) -> None:
    for k, path in enumerate(t.slices(t.pet)):
        path.rename(path.with_name(_latin1(f"tranche-é{k:03d}.dcm")))
    t.ct.rename(t.ct.with_name(_latin1("2.000000-CT épaule-92773")))
    t.study.parent.rename(t.study.parent.with_name(_latin1("Müller_Jürgen")))


def _non_utf8_junk(t: Tree, _mp) -> None:
    (t.root / _latin1("notes-é.txt")).write_text("not DICOM\n")
    (t.pet / _latin1("vide-é.dcm")).write_bytes(b"")  # damaged, beside a whole series


def _non_utf8_zero_byte(t: Tree, _mp) -> Path:
    victim = t.slices(t.pet)[40]
    renamed = victim.with_name(_latin1("coupe-é040.dcm"))
    victim.rename(renamed)
    renamed.write_bytes(b"")
    return renamed


def _readme_beside(t: Tree, _mp) -> None:
    (t.pet / "README.txt").write_text("exported by the scanner\n")


CASES = [
    # -- damaged files: CORRUPT_FILE naming the file ----------------------------------------------
    Case("zero-byte PET slice", _zero_byte("pet", 40), "CORRUPT_FILE"),
    Case("zero-byte CT slice", _zero_byte("ct", 10), "CORRUPT_FILE"),
    Case("header truncated", _truncate("pet", 20, lambda n: 1500), "CORRUPT_FILE"),
    Case("pixels truncated", _truncate("ct", 7, lambda n: n - 500), "CORRUPT_FILE"),
    Case("unreadable slice", _unreadable, "CORRUPT_FILE", says=("Permission denied",)),
    Case("zero-byte SEG", _seg_zero_byte, "CORRUPT_FILE", says=("--no-seg",)),
    Case("non-UTF-8 name, zero bytes", _non_utf8_zero_byte, "CORRUPT_FILE"),
    # -- geometry ---------------------------------------------------------------------------------
    Case("missing slice", _missing_slice, "SLICE_GAP"),
    Case("duplicate slice", _duplicate_slice, "DUPLICATE_SLICE"),
    Case("gantry tilt", _tilt, "GANTRY_TILT", says=("gantry tilt of 12.00°",)),
    Case("mixed matrix sizes", _mixed_matrix, "GEOMETRY_MISMATCH"),
    Case(
        "NaN in ImagePositionPatient",
        _one_raw("ct", "ImagePositionPatient", "nan\\0\\0"),
        "INVALID_VALUE",
    ),
    Case("NaN in PixelSpacing", _one_raw("pet", "PixelSpacing", "nan\\nan"), "INVALID_VALUE"),
    # -- SUV header values ------------------------------------------------------------------------
    Case("PatientWeight 0", _pet_header(_set(PatientWeight="0")), "INVALID_VALUE"),
    Case("PatientWeight missing", _pet_header(_set(PatientWeight=None)), "MISSING_TAG"),
    Case("PatientWeight NaN", _all_raw("PatientWeight", "NaN"), "INVALID_VALUE"),
    Case(
        "DecayCorrection NONE",
        _pet_header(_decay_none),
        "UNSUPPORTED",
        says=("--suv-time autopet",),
    ),
    Case("Units GML", _pet_header(_set(Units="GML")), "UNSUPPORTED"),
    Case("Units PROPCPS", _pet_header(_set(Units="PROPCPS")), "UNSUPPORTED"),
    Case(
        "no radiopharmaceutical",
        _pet_header(_set(RadiopharmaceuticalInformationSequence=None)),
        "MISSING_TAG",
    ),
    # -- rescale ----------------------------------------------------------------------------------
    Case("negative RescaleSlope", _one_pet_slice(_set(RescaleSlope="-2.5")), "INVALID_VALUE"),
    Case("zero RescaleSlope", _one_pet_slice(_set(RescaleSlope="0")), "INVALID_VALUE"),
    Case("missing RescaleSlope", _one_pet_slice(_set(RescaleSlope=None)), "MISSING_TAG"),
    Case("NaN RescaleSlope", _one_raw("pet", "RescaleSlope", "NaN"), "INVALID_VALUE"),
    Case(
        "NaN RescaleIntercept (CT)",
        _one_raw("ct", "RescaleIntercept", "nan", k=3),
        "INVALID_VALUE",
    ),
    # -- series and SEG ---------------------------------------------------------------------------
    Case("no CT series", _no_ct, "NO_SERIES"),
    Case("SEG references another series", _broken_seg_reference, "SEG_REFERENCE"),
    Case("SEG in another frame of reference", _seg_other_frame_of_reference, "SEG_REFERENCE"),
    # -- not errors: converted right, and what matters is said ------------------------------------
    Case(
        "broken SEG with --no-seg",
        _broken_seg_reference,
        None,
        args=("--no-seg",),
        says=("--no-seg",),
        same=("CT", "PET", "SUV", "CTres"),
        good=("CT", "PET", "SUV", "CTres"),
    ),  # --no-seg holds for the whole batch
    Case("two AC PET series", _second_ac_pet, None, says=("--pet-series",)),
    Case(
        "PET and CT frames of reference differ",
        _ct_other_frame_of_reference,
        None,
        says=("FrameOfReferenceUID",),
    ),
    Case(
        "CT does not cover the PET",
        _ct_short,
        None,
        says=("does not cover",),
        same=("PET", "SUV", "SEG"),
    ),
    Case("SEG with empty frames, shuffled", _seg_variant(False), None),
    Case("SEG segments out of order", _seg_variant(True), None),
    Case("duplicate InstanceNumber", _duplicate_instance_numbers, None),
    Case("mixed transfer syntaxes", _mixed_transfer_syntaxes, None),
    Case("deflated explicit VR", _deflated, None),
    Case("DICOMDIR export", _dicomdir_export, None),
    Case("symlink loops", _symlink_loops, None),
    Case("non-UTF-8 names", _non_utf8_names, None),
    Case("non-UTF-8 junk beside", _non_utf8_junk, None, says=("notes-",)),
    Case("README beside the slices", _readme_beside, None, says=("README.txt",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tree: Tree, reference, tmp_path, monkeypatch):
    named = case.damage(tree, monkeypatch)
    out = tmp_path / "out"
    result = _build(tree, out, *case.args)
    text = result.output
    assert "Traceback" not in text and "full traceback in" not in text, text
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), text
    victim_uid, good_uid = tree.victim.study_uid, tree.good.study_uid

    # the other study is always converted, byte for byte as from the pristine tree
    _assert_converted(out, good_uid, reference[good_uid], kinds=case.good)
    _check_out_is_clean(out)
    for word in case.says:
        assert word in text, text

    if case.reason is None:
        assert result.exit_code == 0, text
        _assert_converted(out, victim_uid, reference[victim_uid], kinds=case.same)
        return
    assert result.exit_code == 1, text
    assert _status(out, victim_uid) == "failed"
    assert _study_folder(out, victim_uid) is None
    rec = _failure(out, victim_uid)
    assert rec["reason"] == case.reason, dict(rec)
    assert f"[{case.reason}]" in text
    # the file itself, or (a value every file of the series holds) any file of the series
    # (a file name that is not UTF-8 is shown with \xNN escapes: see errors.printable)
    if isinstance(named, tuple):
        assert rec["path"] in [printable(str(p)) for p in named], dict(rec)
    else:
        assert rec["path"] == printable(str(named)) or Path(rec["path"]).parent == named, dict(rec)
    if rec["path"].isprintable():
        assert rec["path"] in text


# -- user mistakes around the studies -------------------------------------------------------------
def test_out_is_a_file(tree, tmp_path):
    out = tmp_path / "out"
    out.write_text("not a folder\n")
    result = _build(tree, out)
    assert result.exit_code == 1
    assert "[OUTPUT_PATH]" in result.output and str(out) in result.output
    assert "Traceback" not in result.output
    assert out.read_text() == "not a folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_a_root_without_any_study(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    (root / "notes.txt").write_text("hello\n")
    (root / "empty.dcm").write_bytes(b"")
    out = tmp_path / "out"
    result = runner.invoke(app, ["build", str(root), str(out), "-j", "1"])
    assert result.exit_code == 1
    assert "[NO_SERIES]" in result.output and "no DICOM study found" in result.output
    assert "empty.dcm" in result.output and "notes.txt" in result.output
    assert not out.exists()


# -- the sweep ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep_base(base, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep-src")
    shutil.copytree(base, root, dirs_exist_ok=True)
    write_study(phantom(**EXTRA), root)
    return root


def _flip_header_bytes(path: Path, rng: np.random.Generator) -> None:
    """Flip 1-8 random bytes among the header elements (after the preamble, before pixels)."""
    data = bytearray(path.read_bytes())
    end = data.rfind(b"\xe0\x7f\x10\x00")  # the header ends where the pixels begin
    if end < 0:
        end = len(data)
    lo = 128  # after the preamble
    for _ in range(int(rng.integers(1, 9))):
        at = int(rng.integers(lo, max(lo + 1, end)))
        data[at] ^= int(rng.integers(1, 256))
    path.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(50))
def test_header_byte_flips_never_stop_the_batch(seed, sweep_base, reference, tmp_path):
    rng = np.random.default_rng(seed)
    root = tmp_path / "in"
    shutil.copytree(sweep_base, root)
    victims = [phantom(**VICTIM), phantom(**EXTRA)]
    good = phantom(**GOOD)
    for study in victims:
        files = sorted((root / study.subject_id).rglob("*.dcm"))
        _flip_header_bytes(files[int(rng.integers(len(files)))], rng)
    out = tmp_path / "out"
    result = runner.invoke(app, ["build", str(root), str(out), "-j", "1", "--no-progress"])
    text = result.output
    assert "Traceback" not in text and "full traceback in" not in text, text
    assert result.exit_code in (0, 1), text
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), text
    _assert_converted(out, good.study_uid, reference[good.study_uid])
    _check_out_is_clean(out)
    for study in victims:
        status = _status(out, study.study_uid)
        if status is None:  # the flip changed its UIDs: a study of another name now
            continue
        assert status in ("done", "failed")
        if status == "failed":
            rec = _failure(out, study.study_uid)
            assert rec["reason"] != "UNEXPECTED", dict(rec)
            assert rec["path"], dict(rec)
