"""HDF5 layout benchmark: our corpus file against a published-style one.

The published recipe (lab-midas/TCIA_processing ``tcia_nifti_to_hdf5.py``) stores every
image as float64 with ``compression="gzip"`` (level 4) and h5py's automatic chunks. Ours
stores native dtypes in 32³ chunks with Blosc-LZ4 (default) or gzip/lzf. For one phantom
study (``--size full``: CT 512²×326, PET 400²×326) we report file size, write time and the
time to read a random 96³ block (the same random offsets for every file, reads interleaved
between files so machine noise hits all alike; page cache warm). The published file is read
with h5py slicing, ours with ``H5Corpus.read_block`` (a memory map for the contiguous layout).

Usage::

    python bench/hdf5.py --size full --reads 40
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from petcorpus.layouts.hdf5 import H5Corpus, H5Options, H5Study, write_hdf5
from petcorpus.phantom import make_study
from petcorpus.resample import resample_to

BLOCK = 96


def _published(path: Path, study: H5Study) -> None:
    """The published recipe, verbatim in effect: get_fdata() (float64) + gzip."""
    with h5py.File(path, "w") as f:
        g = f.create_group(f"{study.subject}/{study.study}")
        for name in ("suv", "ctres", "ct", "pet", "seg"):
            g.create_dataset(
                name, data=study.volumes[name].array.astype(np.float64), compression="gzip"
            )


def _read(reader: h5py.File | H5Corpus, base: tuple[str, str], name: str, sl: tuple) -> object:
    if isinstance(reader, H5Corpus):
        return reader.read_block(*base, name, sl)
    return reader[f"{base[0]}/{base[1]}/{name}"][sl]


def _contenders() -> dict[str, H5Options | None]:
    return {
        "published-style (float64, auto chunks, gzip 4)": None,
        "petcorpus default (native, 32³, blosc-lz4)": H5Options(),
        "petcorpus gzip 1 + shuffle (native, 32³)": H5Options(compression="gzip"),
        "petcorpus lzf + shuffle (native, 32³)": H5Options(compression="lzf"),
        "petcorpus --compat (float64, auto chunks, gzip 4)": H5Options(compat=True),
        "petcorpus contiguous (native, uncompressed, memory-mapped)": H5Options(contiguous=True),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["small", "full"], default="full")
    ap.add_argument("--reads", type=int, default=40, help="random blocks per dataset")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args(argv)

    st = make_study(seed=5, size=args.size, vendor="siemens", diagnosis="LYMPHOMA")
    t = st.truth
    ctres = resample_to(t.ct_hu, t.pet_bqml)
    ctres = ctres.with_array(np.asarray(ctres.array, dtype=np.float32))
    study = H5Study(
        st.subject_id,
        st.study_folder,
        {"ct": t.ct_hu, "ctres": ctres, "pet": t.pet_bqml, "suv": t.suv, "seg": t.lesion_mask},
        {"suv_factor": t.suv_factors["bw"]},
    )
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        paths = {}
        for i, (label, opts) in enumerate(_contenders().items()):
            p = Path(tmp, f"{i}.h5")
            t0 = time.perf_counter()
            if opts is None:
                _published(p, study)
            else:
                write_hdf5(p, [study], opts)
            results[label] = {
                "bytes": p.stat().st_size,
                "write_s": time.perf_counter() - t0,
                "block_ms": [],
            }
            paths[label] = p
        rng = np.random.default_rng(0)
        # The published file is read as its users read it (h5py slicing); ours through
        # petcorpus' reader (h5py slicing for chunked files, a memory map for contiguous).
        readers = {
            label: h5py.File(p, "r") if opts is None else H5Corpus(p)
            for (label, opts), p in zip(_contenders().items(), paths.values(), strict=True)
        }
        try:
            base = (study.subject, study.study)
            for name in ("suv", "ctres", "pet", "ct", "seg"):
                shape = study.volumes[name].shape
                for _ in range(args.reads):
                    size = [min(BLOCK, s) for s in shape]  # small phantoms are < 96 in z
                    o = [int(rng.integers(0, s - b + 1)) for s, b in zip(shape, size, strict=True)]
                    sl = tuple(slice(a, a + b) for a, b in zip(o, size, strict=True))
                    for label, r in readers.items():
                        t0 = time.perf_counter()
                        _read(r, base, name, sl)
                        results[label]["block_ms"].append((time.perf_counter() - t0) * 1e3)
            for label, r in readers.items():  # whole-volume reads (what a full loader does)
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    _read(r, base, "suv", ())
                    times.append(time.perf_counter() - t0)
                results[label]["full_suv_s"] = min(times)
        finally:
            for r in readers.values():
                r.close()
    ref = statistics.median(results[next(iter(results))]["block_ms"])
    print(f"one {args.size} study, {args.reads} random {BLOCK}³ blocks per dataset × 5")
    print("| file | size | write | 96³ block (median) | p90 | speed-up | whole SUV read |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for label, r in results.items():
        med = statistics.median(r["block_ms"])
        p90 = float(np.percentile(r["block_ms"], 90))
        summary[label] = {
            "MB": r["bytes"] / 1e6,
            "write_s": r["write_s"],
            "block_median_ms": med,
            "block_p90_ms": p90,
            "speedup": ref / med,
            "full_suv_s": r["full_suv_s"],
        }
        print(
            f"| {label} | {r['bytes'] / 1e6:.0f} MB | {r['write_s']:.1f} s | {med:.1f} ms | "
            f"{p90:.1f} ms | {ref / med:.1f}x | {r['full_suv_s']:.2f} s |"
        )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
