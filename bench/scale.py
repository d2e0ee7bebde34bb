"""Plans at scale: scan + names + tasks for 1 → 1,000 studies, first run and re-run.

    python bench/scale.py [--studies 1 10 100 1000] [--files 100] [--changed 10]

A synthetic tree of N small studies (a CT and a PET series of DICOM files with a token 4x4
image each,
``--files`` files per study; the plan reads headers only). For each N, in a fresh process:

first plan
    ``plan_build`` + ``plan_tasks`` over the tree with no catalog: every header parsed,
    the catalog (and its scan cache) written, and every task read back once (as a build
    hands them to its workers). Reported: plan seconds, files/s of the header
    scan, catalog bytes, the driver's peak memory (VmHWM, and above its baseline after the
    imports).
re-run
    The studies are then marked converted (tiny stand-in outputs, recorded with their input
    fingerprints, as a build records them), and the plan runs again over the unchanged tree:
    no header is parsed; every study is complete.
changed
    ``--changed`` studies get one rewritten file each (new content, new mtime): the plan
    parses those files and returns exactly those studies as tasks.

The growth table gives each quantity's ratio per 10x studies (10 = linear, 1 = constant).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from _child import measure, proc_status_mib

CT, PT = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.128"


# -- the synthetic tree -------------------------------------------------------------------------
def _series_dataset(study: int, modality: str) -> Any:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CT if modality == "CT" else PT
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.PatientID = f"SCALE_{study:05d}"
    ds.PatientName = f"Scale^{study}"
    ds.PatientSex, ds.PatientAge, ds.PatientWeight, ds.PatientSize = "F", "054Y", 70.0, 1.7
    ds.StudyDate, ds.StudyTime = "20260102", "101010"
    ds.SeriesDate, ds.SeriesTime = "20260102", "111111"
    ds.AcquisitionDate, ds.AcquisitionTime = "20260102", "111111"
    ds.Modality = modality
    ds.Manufacturer, ds.ManufacturerModelName = "SIEMENS", "Biograph128"
    ds.SeriesDescription = f"{modality} whole body"
    ds.SeriesNumber = 2 if modality == "CT" else 3
    ds.FrameOfReferenceUID = generate_uid()
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [2.0, 2.0] if modality == "CT" else [4.0, 4.0]
    ds.SliceThickness = 3.0
    ds.Rows = ds.Columns = 4  # a token image: the plan reads headers only
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024 if modality == "CT" else 0
    if modality == "CT":
        ds.KVP, ds.XRayTubeCurrent, ds.ConvolutionKernel = 120, 100, "B30f"
    else:
        ds.Units, ds.DecayCorrection, ds.CorrectedImage = "BQML", "START", ["ATTN", "DECY"]
        ds.ReconstructionMethod = "OSEM3D 4i8s"
        rp = Dataset()
        rp.Radiopharmaceutical = "Fluorodeoxyglucose"
        rp.RadionuclideTotalDose = 300e6
        rp.RadionuclideHalfLife = 6586.2
        rp.RadiopharmaceuticalStartDateTime = "20260102100000"
        ds.RadiopharmaceuticalInformationSequence = Sequence([rp])
    ds.PixelData = bytes(2 * 4 * 4)
    return ds


def make_tree(root: Path, n_studies: int, files: int) -> int:
    """Write ``n_studies`` studies of ``files`` header-only files (CT 55 %, PET 45 %)."""
    from pydicom.uid import generate_uid

    done = root.parent / f"{root.name}.complete"
    if done.exists():
        return int(done.read_text())
    n = 0
    for k in range(n_studies):
        study_uid = generate_uid()
        n_ct = max(1, round(files * 0.55))
        for modality, count in (("CT", n_ct), ("PT", max(1, files - n_ct))):
            ds = _series_dataset(k, modality)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
            folder = root / f"subject{k:05d}" / f"{ds.SeriesNumber}-{modality}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                ds.InstanceNumber = i + 1
                ds.ImagePositionPatient = [-128.0, -128.0, -3.0 * i]
                ds.save_as(folder / f"{i + 1:04d}.dcm", enforce_file_format=True)
                n += 1
    done.write_text(str(n))
    return n


def _rewrite_one_file(root: Path, k: int) -> None:
    import pydicom

    path = sorted((root / f"subject{k:05d}").glob("*/*.dcm"))[1]
    ds = pydicom.dcmread(path)
    ds.ImageComments = "changed"
    ds.save_as(path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


# -- one plan, in a child process -------------------------------------------------------------
def plan_once(root: str, out: str, emulate_converted: bool, result: str) -> None:
    """plan_build + plan_tasks over ``root`` into ``out``; the numbers go to ``result``."""
    from petcorpus.catalog import Catalog
    from petcorpus.convert import ConversionOptions
    from petcorpus.pipeline import plan_build, plan_tasks

    baseline = proc_status_mib("VmRSS")
    options = ConversionOptions()
    t0 = time.perf_counter()
    with Catalog.open(out) as cat:
        plan = plan_build(root, cat, options=options)
        t_scan = time.perf_counter() - t0
        tasks, complete = plan_tasks(plan, cat, options=options, threads_per_task=1)
        t_plan = time.perf_counter() - t0
        n_files, parsed = plan.scanned.n_files, plan.scanned.parsed
        # Every task read back once, as a build hands them to its workers.
        for task in tasks:
            if emulate_converted:  # stand-in outputs, recorded as a build records a study
                folder = Path(out) / task.name.subject / task.name.study
                folder.mkdir(parents=True, exist_ok=True)
                paths = {}
                for kind in ("CT", "PET", "SUV", "CTres", "sidecar"):
                    (folder / kind).write_bytes(kind.encode())
                    paths[kind] = folder / kind
                with cat.transaction():
                    cat.record_artifacts(task.study.study_uid, paths)
                    cat.set_status(task.study.study_uid, "done")
                    cat.record_input_fingerprint(task.study.study_uid, task.study.fingerprint)
    peak = proc_status_mib("VmHWM")
    Path(result).write_text(
        json.dumps(
            {
                "files": n_files,
                "parsed": parsed,
                "scan_s": t_scan,
                "plan_s": t_plan,
                "tasks": len(tasks),
                "complete": len(complete),
                "catalog_bytes": (Path(out) / "catalog.sqlite").stat().st_size,
                "peak_mib": peak,
                "above_baseline_mib": peak - baseline,
            }
        )
    )


def run_plan(root: Path, out: Path, emulate: bool) -> dict[str, Any]:
    result = out.parent / f"{out.name}.json"
    measure(plan_once, str(root), str(out), emulate, str(result))
    return json.loads(result.read_text())


def main() -> None:
    import shutil

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, nargs="+", default=[1, 10, 100, 1000])
    ap.add_argument("--files", type=int, default=100, help="files per study")
    ap.add_argument("--changed", type=int, default=10, help="studies changed for the re-run")
    ap.add_argument("--work", type=Path, default=Path(__file__).parent / "_work")
    args = ap.parse_args()
    rows = []
    for n in args.studies:
        root = args.work / f"scale-{n}x{args.files}"
        t0 = time.perf_counter()
        n_files = make_tree(root, n, args.files)
        print(f"N={n}: tree of {n_files} files ready ({time.perf_counter() - t0:.0f} s)")
        out = args.work / f"scale-out-{n}"
        shutil.rmtree(out, ignore_errors=True)
        first = run_plan(root, out, emulate=True)
        rerun = run_plan(root, out, emulate=False)
        changed: dict[str, Any] = {}
        k = min(args.changed, n)
        if k:
            for i in range(k):
                _rewrite_one_file(root, i * n // k)
            changed = run_plan(root, out, emulate=False)
            (
                root.parent / f"{root.name}.complete"
            ).unlink()  # the tree is no longer the generated one
        rows.append((n, first, rerun, changed, k))
        print(json.dumps({"N": n, "first": first, "rerun": rerun, "changed": changed}))
        shutil.rmtree(out, ignore_errors=True)
        if k:
            shutil.rmtree(root)
    report(rows)


def report(rows: list[tuple[int, dict, dict, dict, int]]) -> None:
    print(
        f"\n{'N':>5s} {'files':>7s} {'plan s':>7s} {'files/s':>8s} {'catalog MB':>10s} "
        f"{'peak MiB':>8s} {'+base':>6s} | {'re-run s':>8s} {'parsed':>6s} {'peak':>6s} "
        f"| {'changed':>7s} {'s':>6s} {'parsed':>6s} {'tasks':>5s}"
    )
    for n, f, r, c, k in rows:
        print(
            f"{n:5d} {f['files']:7d} {f['plan_s']:7.2f} {f['files'] / f['scan_s']:8.0f} "
            f"{f['catalog_bytes'] / 1e6:10.2f} {f['peak_mib']:8.1f} {f['above_baseline_mib']:6.1f}"
            f" | {r['plan_s']:8.2f} {r['parsed']:6d} {r['peak_mib']:6.1f} | {k:7d} "
            f"{c.get('plan_s', math.nan):6.2f} {c.get('parsed', 0):6d} {c.get('tasks', 0):5d}"
        )
    print("\ngrowth per 10x studies (10 = linear, 1 = constant):")
    quantities = {
        "plan s (first)": lambda f, r: f["plan_s"],
        "catalog bytes": lambda f, r: f["catalog_bytes"],
        "peak above baseline (first)": lambda f, r: f["above_baseline_mib"],
        "re-run plan s": lambda f, r: r["plan_s"],
        "peak above baseline (re-run)": lambda f, r: r["above_baseline_mib"],
    }
    for label, get in quantities.items():
        ratios = []
        for (n0, f0, r0, _, _), (n1, f1, r1, _, _) in itertools.pairwise(rows):
            steps = math.log10(n1 / n0)
            a, b = get(f0, r0), get(f1, r1)
            ratios.append(f"{(b / a) ** (1 / steps):6.1f}" if a > 0 and steps > 0 else "   n/a")
        print(f"  {label:30s} " + " ".join(ratios))


if __name__ == "__main__":
    main()
