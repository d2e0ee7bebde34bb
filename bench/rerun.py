"""A re-run over a built corpus: outputs trusted by size and mtime vs all re-hashed.

    python bench/rerun.py [--studies 8] [--size full] [--repeat 3]

The corpus is built once (2 workers). Then, alternating, each ``--repeat`` times:

trusted
    ``build`` again over the unchanged tree: the plan parses no header (scan cache) and each
    output's size and mtime match what the catalog recorded, so none is read.
re-hashed
    Every output's mtime is moved by one second first (its bytes unchanged): each output is
    read and hashed again (SHA-256), which is what every re-run did before session 7, and
    what ``petcorpus catalog verify`` does. Its mtime is then recorded again.

Inputs and outputs are read once before each run (warm page cache): the re-hash times are
the CPU's, not the disk's; a cold cache adds the read of every output.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from build import make_data, warm_inputs


def main() -> None:
    from petcorpus.pipeline import build

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=8)
    ap.add_argument("--size", default="full", choices=["full", "small"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path(__file__).parent / "_work")
    args = ap.parse_args()
    dicom = make_data(args.work, args.studies, args.size)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        out = Path(tmp) / "corpus"
        first = build(dicom, out, workers=2)
        assert first.ok and len(first.done) == args.studies
        outputs = [p for p in out.rglob("*") if p.is_file() and p.name != "catalog.sqlite"]
        outputs = [p for p in outputs if not p.name.startswith("catalog.sqlite")]
        size = sum(p.stat().st_size for p in outputs)
        times: dict[str, list[float]] = {"trusted": [], "re-hashed": []}
        for _ in range(args.repeat):
            for kind in times:
                if kind == "re-hashed":
                    for p in outputs:
                        st = p.stat()
                        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
                warm_inputs(dicom)
                warm_inputs(out)
                t0 = time.perf_counter()
                report = build(dicom, out, workers=2)
                times[kind].append(time.perf_counter() - t0)
                assert report.done == [] and len(report.skipped) == args.studies
                assert report.headers_parsed == 0
    print(
        f"{args.studies} {args.size}-size studies, {len(outputs)} outputs, {size / 2**20:.0f} MiB"
    )
    for kind, values in times.items():
        print(
            f"  re-run, outputs {kind:9s}: median {statistics.median(values):6.2f} s  "
            f"({', '.join(f'{v:.2f}' for v in values)})"
        )
    trusted, rehashed = (statistics.median(times[k]) for k in times)
    print(f"  ratio: {rehashed / trusted:.1f}x")


if __name__ == "__main__":
    main()
