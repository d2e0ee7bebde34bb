"""`petcorpus build`: many studies, one broken, resume, kill -9, Dask, verify, tables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from petcorpus.catalog import Catalog, hash_file
from petcorpus.cli import app
from petcorpus.errors import Reason
from petcorpus.phantom import write_corpus, write_study
from petcorpus.pipeline import build
from petcorpus.volume import Volume
from tests.conftest import phantom

runner = CliRunner()
CSV = "Clinical Metadata FDG PET_CT Lesions.csv"


def _checksums(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hash_file(p)
        for p in sorted(out.rglob("*"))
        if p.is_file() and (p.suffix == ".gz" or p.name == "petcorpus.json")
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Six good studies (mixed vendors, all diagnoses) and one with a missing PET slice."""
    root = tmp_path_factory.mktemp("build")
    dicom = root / "dicom"
    studies = write_corpus(dicom, subjects=6, seed=3, vendor="mixed")
    broken = phantom(seed=99, size="small", vendor="ge", diagnosis="LYMPHOMA")
    broken_dir = write_study(broken, dicom)
    pet_dir = next(p for p in broken_dir.iterdir() if "PET" in p.name)
    sorted(pet_dir.iterdir())[37].unlink()
    result = runner.invoke(
        app,
        [
            "build",
            str(dicom),
            str(root / "out"),
            "--clinical",
            str(dicom / CSV),
            "-j",
            "2",
            "--no-progress",
            "--hdf5",
            str(root / "out" / "corpus.h5"),
        ],
    )
    return root, studies, broken, result


@pytest.mark.slow
def test_good_studies_done_broken_one_failed(corpus):
    root, studies, broken, result = corpus
    assert result.exit_code == 1, result.output
    assert "SLICE_GAP" in result.output
    with Catalog.open(root / "out", readonly=True) as cat:
        status = cat.query("SELECT study_uid, status FROM studies")
        by_uid = dict(zip(status.study_uid, status.status, strict=True))
        assert all(by_uid[s.study_uid] == "done" for s in studies)
        assert by_uid[broken.study_uid] == "failed"
        failures = cat.query(
            "SELECT study_uid, reason, message FROM failures WHERE study_uid IS NOT NULL"
        )
        assert list(failures.study_uid) == [broken.study_uid]
        assert failures.reason[0] == Reason.SLICE_GAP
        # The clinical CSV in the tree is not DICOM: skipped, and named in the catalog.
        assert list(cat.skipped_files().file) == [CSV]
        # Every artifact is catalogued with the checksum of the file on disk.
        arts = cat.query("SELECT path, sha256, kind FROM artifacts WHERE study_uid IS NOT NULL")
        assert len(arts) == 6 * 6
        for path, sha in zip(arts.path, arts.sha256, strict=True):
            assert hash_file(root / "out" / path) == sha


@pytest.mark.slow
def test_catalog_joins_clinical_metadata(corpus):
    root, studies, _, _ = corpus
    with Catalog.open(root / "out", readonly=True) as cat:
        subj = cat.query("SELECT subject_id, sex, age, diagnosis FROM subjects")
    rows = subj.set_index("subject_id")
    for s in studies:
        assert rows.loc[s.subject_id, "diagnosis"] == s.truth.diagnosis
        assert rows.loc[s.subject_id, "sex"] == s.truth.sex
        assert rows.loc[s.subject_id, "age"] == s.truth.age


@pytest.mark.slow
def test_outputs_hold_the_truth(corpus):
    root, studies, _, _ = corpus
    for s in studies:
        (study_dir,) = (root / "out" / s.subject_id).iterdir()
        seg = Volume.from_nifti(study_dir / "SEG.nii.gz")
        np.testing.assert_array_equal(seg.array, s.truth.lesion_mask.array)


@pytest.mark.slow
def test_hdf5_equals_nifti(corpus):
    from petcorpus.layouts.hdf5 import read_study

    root, studies, _, _ = corpus
    s = studies[1]
    (study_dir,) = (root / "out" / s.subject_id).iterdir()
    vols = read_study(root / "out" / "corpus.h5", s.subject_id, study_dir.name)
    for name, fname in (("suv", "SUV"), ("ct", "CT"), ("seg", "SEG"), ("ctres", "CTres")):
        ref = Volume.from_nifti(study_dir / f"{fname}.nii.gz")
        np.testing.assert_array_equal(vols[name].array, ref.array)
        np.testing.assert_allclose(vols[name].affine, ref.affine, atol=1e-4)


@pytest.mark.slow
def test_rerun_skips_everything_complete(corpus, tmp_path):
    import shutil

    root, _, _, _ = corpus
    out = tmp_path / "out"  # a copy: the module's build stays as it was for the other tests
    shutil.copytree(root / "out", out)
    before = _checksums(out)
    report = build(root / "dicom", out, workers=1)
    assert len(report.skipped) == 6
    assert report.done == []
    assert len(report.failed) == 1  # the broken study is retried and fails again
    assert _checksums(out) == before


@pytest.mark.slow
def test_tables_hold_true_values(corpus, tmp_path):
    root, studies, _, _ = corpus
    result = runner.invoke(app, ["export", str(root / "out"), "--to", str(tmp_path)])
    assert result.exit_code == 0, result.output
    pt = pd.read_excel(tmp_path / "PT-details.xlsx")
    ct = pd.read_excel(tmp_path / "CT-details.xlsx")
    s = studies[0]
    row = pt[pt["Patient"] == s.subject_id].iloc[0]
    assert row["Weight [kg]"] == pytest.approx(s.truth.weight_kg)
    assert float(ct[ct["Patient"] == s.subject_id].iloc[0]["kVp"]) == 120.0


@pytest.mark.slow
def test_verify_detects_flipped_byte_and_deleted_file(tmp_path, corpus):
    import shutil

    root, studies, _, _ = corpus
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    assert runner.invoke(app, ["verify", str(out)]).exit_code == 0
    s = studies[0]
    (study_dir,) = (out / s.subject_id).iterdir()
    data = bytearray((study_dir / "PET.nii.gz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (study_dir / "PET.nii.gz").write_bytes(bytes(data))
    (study_dir / "SEG.nii.gz").unlink()
    result = runner.invoke(app, ["verify", str(out)])
    assert result.exit_code == 1
    assert "PET.nii.gz" in result.output
    assert "SEG.nii.gz" in result.output


@pytest.mark.slow
def test_dask_local_cluster_gives_identical_checksums(corpus, tmp_path):
    distributed = pytest.importorskip("dask.distributed", reason="needs petcorpus[dask]")
    root, _, _, _ = corpus
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        report = build(root / "dicom", tmp_path / "api", client=client)
        # every worker was prepared like a local pool's (memory habit, conversion imports)
        plugins = client.run(lambda dask_worker: sorted(dask_worker.plugins))
        assert all("petcorpus-prepare-workers" in names for names in plugins.values())
        study_threads = client.run(_worker_has_task_threads)
        assert all(study_threads.values())
        # and Dask's stack-sampling profiler (GIL-holding, every 10 ms) is stopped there
        profiled = client.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
        assert not any(profiled.values())
        threads_before = client.run(_task_thread_ids)
        # The CLI connects to a running scheduler by address.
        result = runner.invoke(
            app,
            [
                "build",
                str(root / "dicom"),
                str(tmp_path / "cli"),
                "--scheduler",
                cluster.scheduler_address,
                "--no-progress",
            ],
        )
        # The CLI's build registered the plugin again: the workers kept their task
        # threads (new ones could land in one of Dask's malloc arenas, not the main heap)
        assert client.run(_task_thread_ids) == threads_before
    assert all(threads_before.values())
    assert len(report.done) == 6
    assert len(report.failed) == 1
    assert result.exit_code == 1  # the broken study
    ref = _checksums(root / "out")
    assert _checksums(tmp_path / "api") == ref
    assert _checksums(tmp_path / "cli") == ref


def _task_thread_ids() -> list[int]:
    from petcorpus.pipeline import executors

    pool = executors._task_threads
    return sorted(t.native_id or 0 for t in pool._threads) if pool is not None else []


def _worker_has_task_threads() -> bool:
    from petcorpus.pipeline import executors

    return executors._task_threads is not None


@pytest.mark.slow
@pytest.mark.parametrize("finished", [0, 3])
def test_kill_9_then_resume_equals_clean_build(corpus, tmp_path, finished):
    """Killed as conversion starts (no study in place yet), and after 3 studies."""
    root, _, _, _ = corpus
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "petcorpus.cli",
        "build",
        str(root / "dicom"),
        str(out),
        "-j",
        "2",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    # Kill at a point of progress, not after a fixed delay: the whole build takes ~2 s.
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        in_place = len(list(out.glob("*/*/petcorpus.json"))) if out.exists() else 0
        if in_place >= finished and (finished or (out / "catalog.sqlite").exists()):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the build ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process tree, like a power cut
    proc.wait()
    in_place = len(list(out.glob("*/*/petcorpus.json")))
    assert finished <= in_place < 6  # killed part-way
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr  # the broken study only
    assert _checksums(out) == _checksums(root / "out"), done.stdout + done.stderr
    leftovers = [p for p in out.rglob("*") if p.name.startswith((".tmp-", ".old-"))]
    assert leftovers == []


def test_hdf5_layout_options_are_checked_before_any_work(tmp_path):
    from petcorpus.convert import ConversionOptions

    result = runner.invoke(
        app, ["build", str(tmp_path), str(tmp_path / "out"), "--hdf5-layout", "flat"]
    )
    assert result.exit_code == 2 and "--hdf5-layout" in result.output  # a usage error
    with pytest.raises(ValueError, match="contiguous HDF5 does not apply"):
        build(
            tmp_path,
            tmp_path / "out",
            hdf5=tmp_path / "c.h5",
            hdf5_contiguous=True,
            options=ConversionOptions(compat="autopet"),
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_largest_studies_are_converted_first(tmp_path):
    import pydicom

    from petcorpus.dicom import scan

    dicom = tmp_path / "dicom"
    write_corpus(dicom, subjects=2, seed=8, vendor="siemens", size="small")
    studies = scan(dicom).studies
    # the first study loses its top 4 CT slices (no gap): it becomes the smaller one
    ct_files = studies[0].select().ct.files
    for f in sorted(ct_files, key=lambda f: -float(pydicom.dcmread(f).ImagePositionPatient[2]))[
        :4
    ]:
        Path(f).unlink()
    order: list[str] = []
    report = build(
        dicom, tmp_path / "out", workers=1, on_outcome=lambda o: order.append(o.study_uid)
    )
    assert report.ok
    assert order == [studies[1].study_uid, studies[0].study_uid]


def test_the_runner_takes_items_as_it_hands_them_out():
    """A plan's tasks are read back from the catalog one at a time: the runner must not
    draw them all before the first is done."""
    from petcorpus.pipeline.executors import AHEAD, Runner

    drawn: list[int] = []

    def items():
        for i in range(40):
            drawn.append(i)
            yield i

    with Runner(workers=2) as runner:
        results = runner.map_unordered(abs, items())
        first = next(results)
        assert len(drawn) <= AHEAD * 2 + 1
        rest = list(results)
    assert sorted([first, *rest]) == list(range(40))


def test_the_plan_keeps_no_file_of_the_tree(tmp_path):
    """What the plan holds per study is its UID, name, size and fingerprint: no Path of
    any input file stays alive once the studies are recorded."""
    import gc
    from pathlib import PosixPath, WindowsPath

    from petcorpus.convert import ConversionOptions
    from petcorpus.pipeline import plan_build, plan_tasks

    dicom = tmp_path / "dicom"
    write_corpus(dicom, subjects=3, seed=8, vendor="mixed", size="small")
    with Catalog.open(tmp_path / "out") as cat:
        plan = plan_build(dicom, cat, options=ConversionOptions())
        tasks, complete = plan_tasks(plan, cat, options=ConversionOptions(), threads_per_task=1)
        assert len(tasks) == 3 and complete == []
        gc.collect()
        paths = [o for o in gc.get_objects() if type(o) in (PosixPath, WindowsPath)]
        alive = [p for p in paths if dicom in p.parents]
        assert alive == []
        # ... and each task reads its study back whole
        files = sum(t.study.n_files for t in tasks)
    assert files == plan.scanned.n_files > 400


def test_an_output_folder_inside_the_tree_is_not_scanned(tmp_path):
    """``petcorpus build dicom dicom/out``: the catalog and the NIfTI files written there
    are not DICOM files of the tree, neither on the first run nor on the next."""
    dicom = tmp_path / "dicom"
    write_corpus(dicom, subjects=1, seed=4, vendor="siemens", size="small")
    first = build(dicom, dicom / "out", workers=1)
    again = build(dicom, dicom / "out", workers=1)
    assert first.ok and len(first.done) == 1 and again.skipped == [first.done[0].study_uid]
    for report in (first, again):
        assert not [p for p, _ in report.skipped_files if (dicom / "out") in p.parents]
    assert again.headers_parsed == 0
