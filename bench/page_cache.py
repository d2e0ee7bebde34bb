"""Writing study-sized files into the page cache: kept cached vs dropped after the fsync.

    python bench/page_cache.py [--mb 192] [--rounds 6]

Each round writes one file of ``--mb`` MB (16 MB writes, then fsync), the way a build
writes a study's outputs; "drop" then tells the kernel the pages need not stay cached
(``POSIX_FADV_DONTNEED``, what ``build`` does through ``write_converted(drop_cache=True)``).
On a VM whose guest memory is backed lazily, every page the cache grows into costs a
hypervisor fault; dropped pages are reused at memory speed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def run(folder: Path, mb: int, rounds: int, drop: bool) -> list[float]:
    buf = os.urandom(16 << 20)
    rates = []
    for r in range(rounds):
        path = folder / f"{'drop' if drop else 'keep'}-{r}.bin"
        t0 = time.perf_counter()
        with open(path, "wb") as f:
            for _ in range(mb // 16):
                f.write(buf)
            f.flush()
            os.fsync(f.fileno())
            if drop:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        rates.append(mb / (time.perf_counter() - t0))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=192)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--dir", type=Path, default=Path(__file__).parent / "_work")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if not hasattr(os, "posix_fadvise"):
        raise SystemExit("posix_fadvise is not available on this platform")
    for drop in (False, True):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            rates = run(Path(tmp), args.mb, args.rounds, drop)
        label = "dropped after fsync" if drop else "kept in the page cache"
        print(f"{label:24s} " + " ".join(f"{r:6.0f}" for r in rates) + "  MB/s per round")


if __name__ == "__main__":
    main()
