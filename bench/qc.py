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
- with organ masks: one full-size ENHANCE.PET phantom case (PET 400×400×326, masks on the
  CT grid): the organ map on the PET grid (``case_organ_map``: read and map the Organs and
  Cardiac groups), then every check with the masks (hot-organ shares, liver from its mask),

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
from petcorpus.resample import resample_to


def _median(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _enhance_case(root: Path, repeat: int, options: QcOptions) -> tuple[float, float]:
    """(organ map, checks with it) seconds on one full-size ENHANCE.PET phantom case."""
    from petcorpus.layouts import open_corpus
    from petcorpus.phantom.enhance import write_enhance_corpus
    from petcorpus.qc.organ_maps import case_organ_map, qc_regions

    write_enhance_corpus(root, cases=1, size="full")
    with open_corpus(root) as corpus:
        case = next(iter(corpus.cases()))
        table = corpus.labels  # type: ignore[attr-defined]
        pet = case.volume("PET")
        ct = resample_to(case.volume("CT"), pet, interpolation="linear", fill=-1024.0)
        regions, _ = qc_regions(table)
        map_s, found = _median(lambda: case_organ_map(case, pet, table, regions), repeat)
    organs, names = found  # type: ignore[misc]
    checks_s, _ = _median(
        lambda: check_study(pet, ct, None, organs=organs, organ_names=names, options=options),
        repeat,
    )
    return map_s, checks_s


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
        organ_map_s, organs_s = _enhance_case(root / "enhance", args.repeat, quiet)
    print(f"PET {suv.shape}, flags {res.reasons() or 'none'}")
    print("| step | seconds | × conversion |")
    print("|---|---|---|")
    for name, s in [
        ("conversion (convert_to_layout, reference)", convert_s),
        ("read SUV + CTres + SEG", read_s),
        ("all checks, no picture", checks_s),
        ("all checks + one flag's picture", pict_s),
        ("ENHANCE case: organ map on the PET grid", organ_map_s),
        ("ENHANCE case: all checks with organ masks, no picture", organs_s),
    ]:
        print(f"| {name} | {s:.2f} | {s / convert_s:.3f} |")


if __name__ == "__main__":
    main()
