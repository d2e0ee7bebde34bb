"""Organ statistics of one full-size case: CT-grid masks → PET grid → all regions, one pass.

Usage::

    python bench/organs.py [--repeat 3] [--naive]

Builds one full-size phantom study (CT 512×512×326, PET 400×400×326), writes it as an
ENHANCE.PET case (CT, PET and the seven group masks as .nii.gz) and times

- read: decoding the PET and the seven group masks from .nii.gz (what a corpus run pays),
- compute: each group mapped to the PET grid by nearest neighbour (over the PET box its
  labels reach), volume/mean/median/max/p95/sd of every region of the group in one pass,
  PERCIST liver sphere and blood pool (``petcorpus.organs.case_organ_stats``),

then projects the time for the 1,683 cases of the current release on 2 cores (one case per
process). ``--naive`` also times the per-region loop (merged map, one full-volume pass per region)
that the one-pass code replaces.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from petcorpus.labels import merge_groups
from petcorpus.layouts.enhance import open_enhance, read_case
from petcorpus.organs import case_organ_stats, labels_to_grid
from petcorpus.phantom import make_study
from petcorpus.phantom.enhance import write_enhance_corpus
from petcorpus.volume import Volume

CASES = 1683
CORES = 2


def _naive(groups: dict[str, Volume], pet: Volume) -> int:
    first = next(iter(groups.values()))
    merged = Volume(merge_groups({g: v.array for g, v in groups.items()}), first.affine)
    on_pet = labels_to_grid(merged, pet).array
    vals = np.asarray(pet.array, dtype=np.float64)
    n = 0
    for rid in np.unique(on_pet):
        if rid == 0:
            continue
        v = vals[on_pet == rid]
        _ = (v.mean(), np.median(v), v.max(), np.percentile(v, 95), v.std())
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--naive", action="store_true", help="also time the per-region loop")
    args = ap.parse_args()

    t0 = time.perf_counter()
    study = make_study(seed=7, size="full", diagnosis="NEGATIVE")
    print(f"phantom study built in {time.perf_counter() - t0:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "enhance"
        t0 = time.perf_counter()
        write_enhance_corpus(root, studies=[study])
        print(f"written as ENHANCE case in {time.perf_counter() - t0:.1f} s")
        corpus = open_enhance(root)
        reads, computes, cpu_reads, cpu_computes = [], [], [], []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            data = read_case(corpus, 1)
            t1, c1 = time.perf_counter(), time.process_time()
            assert data.pet is not None
            stats, ref, unit = case_organ_stats(data.groups, data.pet, corpus.labels)
            t2, c2 = time.perf_counter(), time.process_time()
            reads.append(t1 - t0)
            computes.append(t2 - t1)
            cpu_reads.append(c1 - c0)
            cpu_computes.append(c2 - c1)
        ct = data.groups["Organs"]
        print(f"CT grid {ct.shape}, PET grid {data.pet.shape}, {len(stats)} regions, unit {unit}")
        liver = f"{ref.liver_mean:.3f} ± {ref.liver_sd:.3f} ({ref.liver_voxels} vx)"
        blood = f"{ref.blood_mean:.3f} ± {ref.blood_sd:.3f} ({ref.blood_voxels} vx)"
        print(f"PERCIST liver {liver}, blood {blood}")
        read, compute = min(reads), min(computes)
        per_case = read + compute
        print(f"read (PET + 7 masks, .nii.gz): {read:.2f} s   (runs: "
              + ", ".join(f"{r:.2f}" for r in reads) + ")")  # fmt: skip
        print(f"compute (map each group to PET, stats, PERCIST): {compute:.2f} s   (runs: "
              + ", ".join(f"{c:.2f}" for c in computes) + ")")  # fmt: skip
        cpu = min(cpu_reads) + min(cpu_computes)
        print(f"CPU time: read {min(cpu_reads):.2f} s, compute {min(cpu_computes):.2f} s")
        print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        hours = CASES * per_case / CORES / 3600
        cpu_hours = CASES * cpu / CORES / 3600
        print(f"per case {per_case:.2f} s wall → {CASES} cases on {CORES} cores ≈ {hours:.2f} h")
        print(f"per case {cpu:.2f} s CPU → {CASES} cases on {CORES} cores ≈ {cpu_hours:.2f} h")
        if args.naive:
            t0 = time.perf_counter()
            n = _naive(data.groups, data.pet)
            print(f"naive per-region loop ({n} regions): {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
