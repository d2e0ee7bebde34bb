"""A long-lived Dask cluster: the same corpus built again and again on one worker.

    python bench/dask_rebuilds.py [--studies 4] [--size full] [--builds 9]

Each build writes a fresh output folder (inputs read once beforehand); printed per build:
its seconds and the worker's resident memory after it. The question it answers: does a
worker that has served many builds get slower or keep growing (a leak), or does it settle?
Build workers keep freed memory in their heap on purpose (``petcorpus._memory``), so the
heap grows until it holds the largest study's working set and then stays.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from build import make_data, warm_inputs


def worker_rss_mib() -> float:
    from _child import proc_status_mib

    return proc_status_mib("VmRSS")


def main() -> None:
    from dask.distributed import Client, LocalCluster

    from petcorpus.pipeline import build

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=4)
    ap.add_argument("--size", default="full", choices=["full", "small"])
    ap.add_argument("--builds", type=int, default=9)
    ap.add_argument("--work", type=Path, default=Path(__file__).parent / "_work")
    args = ap.parse_args()
    dicom = make_data(args.work, args.studies, args.size)
    with (
        tempfile.TemporaryDirectory(dir=args.work) as tmp,
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(1)
        print(f"{'build':>5s} {'seconds':>8s} {'worker RSS MiB':>15s}")
        for k in range(args.builds):
            out = Path(tmp) / f"out{k}"
            warm_inputs(dicom)
            t0 = time.perf_counter()
            report = build(dicom, out, client=client)
            seconds = time.perf_counter() - t0
            if report.failed or len(report.done) != args.studies:
                raise RuntimeError("a study failed")
            (rss,) = client.run(worker_rss_mib).values()
            print(f"{k + 1:5d} {seconds:8.2f} {rss:15.0f}", flush=True)
            shutil.rmtree(out)


if __name__ == "__main__":
    main()
