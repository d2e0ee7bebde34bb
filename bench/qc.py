"""Quality control of one full-size study against its conversion time.

Usage::

    python bench/qc.py [--repeat 3]

Writes one full-size phantom study (Siemens, CT 512×512×326, PET 400×400×326) as DICOM,
converts it (``convert_to_layout``, timed: the reference), then times on the converted
folder

- read: decoding SUV, CTres and SEG from .nii.gz (what ``petcorpus qc`` pays per study),
- checks: every per-study check (``petcorpus.qc.check_study``: PET/CT shift, liver SUV,
  labels, corrections, field of view) without pictures,
- pictures: the same with a picture drawn for a flag (the shift check is forced to flag),

each the median of ``--repeat`` runs, in this process.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from petcorpus.convert import convert_to_layout, find_studies
from petcorpus.layouts.autopet import AutopetCorpus
from petcorpus.phantom import make_study, write_study
from petcorpus.qc import QcOptions, check_study


def _median(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        study = make_study(seed=3, size="full", vendor="siemens", diagnosis="LYMPHOMA")
        write_study(study, root / "dicom")
        infos, _ = find_studies(root / "dicom")
        convert_s, _ = _median(lambda: convert_to_layout(infos[0], root / "out"), args.repeat)
        case = next(AutopetCorpus(root / "out").cases())

        def read():
            return case.volume("SUV"), case.volume("CTres"), case.volume("SEG")

        read_s, (suv, ct, seg) = _median(read, args.repeat)
        quiet = QcOptions(pictures=False)
        checks_s, res = _median(
            lambda: check_study(suv, ct, seg, diagnosis="LYMPHOMA", options=quiet), args.repeat
        )
        drawn = QcOptions(shift_mm=0.0)
        pict_s, _ = _median(
            lambda: check_study(suv, ct, seg, diagnosis="LYMPHOMA", options=drawn), args.repeat
        )
    print(f"PET {suv.shape}, flags {res.reasons() or 'none'}")
    print("| step | seconds | × conversion |")
    print("|---|---|---|")
    for name, s in [
        ("conversion (convert_to_layout, reference)", convert_s),
        ("read SUV + CTres + SEG", read_s),
        ("all checks, no picture", checks_s),
        ("all checks + one flag's picture", pict_s),
    ]:
        print(f"| {name} | {s:.2f} | {s / convert_s:.3f} |")


if __name__ == "__main__":
    main()
