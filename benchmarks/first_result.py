"""A fresh interpreter that starts a private cluster and gets one task result.

    python benchmarks/first_result.py --system freight|ray|dask --t0 TIME

``TIME`` is the parent's ``time.time()`` just before it started this interpreter, so the figure
covers interpreter start, imports, cluster start and the first task. Prints one line
``FIRST_RESULT_JSON {"first_result_s": ..., "shutdown_s": ...}``; shutdown is timed separately.
"""

from __future__ import annotations

import argparse
import json
import os
import time

MARK = "FIRST_RESULT_JSON "


def one() -> int:
    return 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--system", choices=["freight", "ray", "dask"], required=True)
    p.add_argument("--t0", type=float, required=True)
    args = p.parse_args()
    if args.system == "dask":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True)
        client = Client(cluster)
        value = client.submit(one, pure=False).result()
        first = time.time() - args.t0
        t = time.time()
        client.close()
        cluster.close()
    else:
        import importlib

        ray = importlib.import_module(args.system)
        ray.init()
        value = ray.get(ray.remote(one).remote())
        first = time.time() - args.t0
        t = time.time()
        ray.shutdown()
    if value != 1:
        raise RuntimeError(f"the first task returned {value!r}")
    figures = {"first_result_s": first, "shutdown_s": time.time() - t}
    print(MARK + json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
