"""Build time and size of the HTML report for N small phantom studies (default 50).

Usage: python bench/bench_report.py [N] [workdir]

Five phantom seeds' truth volumes are written under N subject names (the volumes repeat;
the report's work per study does not depend on that). Prints one line for docs/benchmarks.md.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib

from petcorpus.phantom import DIAGNOSES, make_study
from petcorpus.report import write_report
from petcorpus.resample import resample_to


def make_corpus(out: Path, n: int) -> None:
    vendors = ("siemens", "ge", "philips")
    studies = [
        make_study(seed=s, diagnosis=DIAGNOSES[s % 4], vendor=vendors[s % 3]) for s in range(5)
    ]
    for i in range(n):
        st = studies[i % len(studies)]
        t = st.truth
        d = out / f"PETCT_{i:010x}" / "01-01-2005-NA-PET-CT-1"
        d.mkdir(parents=True)
        nib.save(t.suv.to_nifti(), d / "SUV.nii.gz")
        nib.save(t.lesion_mask.to_nifti(), d / "SEG.nii.gz")
        ctres = resample_to(t.ct_hu, t.suv, interpolation="linear", fill=-1024)
        nib.save(ctres.to_nifti(), d / "CTres.nii.gz")
        suv = {"kind": "bw", "factor": t.suv_factors["bw"], "time_reference": "qiba",
               "inputs": {"weight_kg": t.weight_kg, "manufacturer": st.vendor}}  # fmt: skip
        side = {"diagnosis": t.diagnosis, "sex": t.sex, "suv": suv}
        (d / "petcorpus.json").write_text(json.dumps(side))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    work = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp())
    out = work / "corpus"
    if not out.exists():
        make_corpus(out, n)
    for with_ct in (False, True):
        t0 = time.perf_counter()
        path = write_report(out, output=work / f"report-ct{int(with_ct)}.html", with_ct=with_ct)
        dt = time.perf_counter() - t0
        size = path.stat().st_size
        print(f"{n} studies, with_ct={with_ct}: {dt:.2f} s ({dt / n * 1000:.0f} ms/study), "
              f"{size / 1e6:.2f} MB ({size / n / 1e3:.1f} kB/study)")  # fmt: skip


if __name__ == "__main__":
    main()
