"""Training-patch throughput: petcorpus's HDF5 loader against loading NIfTI.gz per sample.

Random 96³ (CT on the PET grid, SUV, lesion label) patches per second, half of them centred
on a lesion voxel, through ``torch.utils.data.DataLoader`` with the same number of workers:

- **MONAI per-sample NIfTI** (the usual MONAI pipeline): ``LoadImaged`` (nibabel, each
  sample decompresses its case's three ``.nii.gz`` files) + ``EnsureChannelFirstd`` +
  ``SpatialPadd`` + ``RandCropByPosNegLabeld(pos=1, neg=1, num_samples=1)``; without
  MONAI, nibabel + the same crop in numpy (``--baseline nibabel``);
- **petcorpus HDF5**: :class:`petcorpus.torch.PatchDataset` over the corpus's HDF5 file
  (``build --hdf5-layout contiguous``: memory-mapped) with ``oversample_foreground=0.5``.

Both run in one process, one after the other, on the same cases (page cache warm for both:
each is run once briefly first). The rate is counted from the first patch received to the
last, so worker start-up is left out for both.

Full-size phantom studies (CT 512²×326, PET 400²×326)::

    petcorpus phantom dicom --subjects 3 --size full
    petcorpus build dicom corpus --hdf5 corpus/corpus.h5 --hdf5-layout contiguous --workers 2
    python bench/loader.py corpus corpus/corpus.h5 --workers 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from petcorpus.layouts.autopet import AutopetCorpus
from petcorpus.torch import PatchDataset

PATCH = (96, 96, 96)


def _first(batch: list[Any]) -> Any:
    return batch


def _monai_dataset(files: list[dict[str, str]], n: int, seed: int) -> Any:
    from monai.data import Dataset
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        RandCropByPosNegLabeld,
        SpatialPadd,
    )

    keys = ["ct", "suv", "label"]
    transform = Compose(
        [
            LoadImaged(keys, image_only=True),
            EnsureChannelFirstd(keys),
            SpatialPadd(keys, spatial_size=PATCH),  # a no-op on full-size studies
            RandCropByPosNegLabeld(
                keys, label_key="label", spatial_size=PATCH, pos=1, neg=1, num_samples=1
            ),
        ]
    )
    transform.set_random_state(seed)
    return Dataset([files[i % len(files)] for i in range(n)], transform)


class _NibabelCrop(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Without MONAI: nibabel loads the three files per sample, then a pos/neg crop."""

    def __init__(self, files: list[dict[str, str]], n: int, seed: int) -> None:
        self.files, self.n, self.seed = files, n, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        import nibabel as nib

        f = self.files[i % len(self.files)]
        vols = {k: np.asarray(nib.load(p).get_fdata(dtype=np.float32)) for k, p in f.items()}
        rng = np.random.default_rng([self.seed, i])
        shape = vols["label"].shape
        fg = np.flatnonzero(vols["label"])
        if i % 2 and fg.size:
            c = np.unravel_index(int(fg[rng.integers(fg.size)]), shape)
        else:
            c = tuple(int(rng.integers(0, s)) for s in shape)
        o = [
            int(np.clip(ci - p // 2, 0, max(s - p, 0)))
            for ci, p, s in zip(c, PATCH, shape, strict=True)
        ]
        sl = tuple(slice(a, a + p) for a, p in zip(o, PATCH, strict=True))
        return {k: v[sl][None] for k, v in vols.items()}


def _rate(dataset: Any, workers: int, batch_size: int) -> dict[str, float]:
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_first if batch_size == 1 else None,
        persistent_workers=False,
    )
    t0 = time.perf_counter()
    first = None
    n = 0
    for batch in loader:
        n += len(batch) if isinstance(batch, list) else len(batch["meta"]["case"])
        if first is None:
            first = time.perf_counter()
            n_first = n
    end = time.perf_counter()
    assert first is not None
    steady = (n - n_first) / (end - first) if end > first else float("nan")
    return {"patches": n, "total_s": end - t0, "patches_per_s": steady}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("corpus", type=Path, help="corpus folder (autoPET layout, NIfTI)")
    ap.add_argument("hdf5", type=Path, help="the corpus's HDF5 file (contiguous layout)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--baseline-samples", type=int, default=12)
    ap.add_argument("--samples", type=int, default=600, help="petcorpus patches")
    ap.add_argument("--baseline", choices=["monai", "nibabel"], default="monai")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args(argv)

    cases = list(AutopetCorpus(args.corpus).cases())
    files = [
        {"ct": str(c.path("CTres")), "suv": str(c.path("SUV")), "label": str(c.path("SEG"))}
        for c in cases
    ]
    baseline = args.baseline
    if baseline == "monai":
        try:
            import monai  # noqa: F401
        except ImportError:
            baseline = "nibabel"

    def base(n: int) -> Any:
        if baseline == "monai":
            return _monai_dataset(files, n, seed=0)
        return _NibabelCrop(files, n, seed=0)

    def ours(n: int) -> PatchDataset:
        keys = [c.key for c in cases]
        return PatchDataset(args.hdf5, patch_size=PATCH, oversample_foreground=0.5,
                            length=n, cases=keys, seed=0)  # fmt: skip

    # Warm the page cache for both (one pass over every case), then measure.
    _rate(base(len(files)), 0, 1)
    _rate(ours(4 * len(files)), 0, 1)
    results = {
        f"{baseline} per-sample NIfTI.gz": _rate(base(args.baseline_samples), args.workers, 1),
        "petcorpus HDF5 (PatchDataset)": _rate(ours(args.samples), args.workers, 4),
    }
    ref, fast = (r["patches_per_s"] for r in results.values())
    print(
        f"{len(files)} cases, random {PATCH[0]}³ (CT, SUV, label) patches, half on a lesion, "
        f"{args.workers} workers"
    )
    print("| loader | patches | wall | patches/s | ratio |")
    print("|---|---|---|---|---|")
    for label, r in results.items():
        print(
            f"| {label} | {r['patches']} | {r['total_s']:.1f} s | {r['patches_per_s']:.2f} | "
            f"{r['patches_per_s'] / ref:.0f}x |"
        )
    print(f"ratio: {fast / ref:.0f}x (target >= 20x)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
