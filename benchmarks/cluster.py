"""Multi-node figures on one machine: object transfer between nodes, placement groups.

    python benchmarks/cluster.py                   # freight beside Ray (from .bench-venv), 2 passes
    python benchmarks/cluster.py --peers none      # freight alone
    python benchmarks/cluster.py --smoke           # tiny sizes, one round (the test suite)

Each system runs in a subprocess of its own interpreter (Ray from ``.bench-venv``), alternating
freight, Ray, Ray, freight... over the passes, and the table shows the mean and spread of every
timed round of all passes:

- **cross-node transfer (GB/s)**: a two-node cluster (freight: ``freight.testing.Cluster``;
  Ray: ``ray.cluster_utils.Cluster``, two raylets), a task pinned to the second node makes a
  fresh 256 MiB numpy array each round; once it is done, the driver on the first node gets it,
  timed: the object is copied between the nodes' stores, then read zero-copy.
- **placement group create/removal (ops/s)**: Ray's ``ray microbenchmark`` row: 100 groups of
  one bundle ``{"custom": 0.001}`` created, waited for, removed, on a one-node cluster that has
  100 ``custom``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_PYTHON = os.path.join(os.path.dirname(HERE), ".bench-venv", "bin", "python")
MIB = 1 << 20


# -- workloads (run inside the system's own interpreter) ---------------------------------------


def transfer_rounds(system: str, size: int, rounds: int) -> list[float]:
    import numpy as np

    if system == "ray":
        import ray
        from ray.cluster_utils import Cluster

        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "object_store_memory": 4 * size + 256 * MIB},
        )
        cluster.add_node(num_cpus=1, resources={"far": 1}, object_store_memory=4 * size + 256 * MIB)
        rt: Any = ray
        rt.init(address=cluster.address)
    else:
        import freight
        from freight.testing import Cluster as FCluster

        cluster = FCluster()
        cluster.add_node(num_cpus=1, object_store_memory=4 * size + 256 * MIB)
        cluster.add_node(num_cpus=1, resources={"far": 1}, object_store_memory=4 * size + 256 * MIB)
        rt = freight
        rt.init(address=cluster.address)

    @rt.remote(resources={"far": 1})
    def make(n: int, seed: int) -> Any:
        return np.full(n // 8, seed, dtype=np.int64)

    out = []
    try:
        for i in range(rounds + 1):  # the first is warm-up
            ref = make.remote(size, i)
            rt.wait([ref], fetch_local=False)
            t = time.perf_counter()
            value = rt.get(ref)
            took = time.perf_counter() - t
            assert value.nbytes == size and int(value[-1]) == i
            del value, ref
            if i:
                out.append(size / took / 1e9)
    finally:
        rt.shutdown()
        cluster.shutdown()
    return out


def placement_group_rounds(system: str, num_pgs: int, rounds: int) -> list[float]:
    if system == "ray":
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group

        rt: Any = ray
    else:
        import freight
        from freight.util.placement_group import (  # type: ignore[assignment]
            placement_group,
            remove_placement_group,
        )

        rt = freight
    rt.init(num_cpus=1, resources={"custom": 100})
    out = []
    try:
        for i in range(rounds + 1):
            t = time.perf_counter()
            pgs = [placement_group([{"custom": 0.001}]) for _ in range(num_pgs)]
            for pg in pgs:
                assert pg.wait(timeout_seconds=30)
            for pg in pgs:
                remove_placement_group(pg)
            took = time.perf_counter() - t
            if i:
                out.append(num_pgs / took)
    finally:
        rt.shutdown()
    return out


def run_system(system: str, smoke: bool) -> dict[str, list[float]]:
    size = 8 * MIB if smoke else 256 * MIB
    rounds = 1 if smoke else 5
    return {
        "cross-node transfer (GB/s)": transfer_rounds(system, size, rounds),
        "placement group create/removal (ops/s)": placement_group_rounds(
            system, 10 if smoke else 100, rounds
        ),
    }


# -- driver -------------------------------------------------------------------------------------


def measure(python: str, system: str, smoke: bool) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="fr-", dir="/tmp") as tmp:
        env = dict(os.environ, FREIGHT_TEMP_DIR=tmp)
        cmd = [python, __file__, "--system", system] + (["--smoke"] if smoke else [])
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{system} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fmt(x: float) -> str:
    return f"{x:,.2f}" if x < 100 else f"{x:,.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--system", choices=("freight", "ray"), help=argparse.SUPPRESS)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one round")
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--peers", choices=("ray", "none"), default="ray")
    p.add_argument("--ray-python", default=BENCH_PYTHON)
    args = p.parse_args(argv)
    if args.system:
        print(json.dumps(run_system(args.system, args.smoke)))
        return 0
    systems = {"freight": sys.executable}
    if args.peers == "ray":
        if os.path.exists(args.ray_python):
            systems["ray"] = args.ray_python
        else:
            print(f"no Ray at {args.ray_python} (make bench installs it): freight alone")
    samples: dict[str, dict[str, list[float]]] = {s: {} for s in systems}
    for n in range(max(1, args.passes)):
        order = list(systems) if n % 2 == 0 else list(reversed(systems))
        for system in order:
            for row, values in measure(systems[system], system, args.smoke).items():
                samples[system].setdefault(row, []).extend(values)
    rows = list(samples["freight"])
    head = "| row | freight | ± |" + (" Ray | ± | freight/Ray |" if "ray" in systems else "")
    print(head)
    print("|---|---:|---:|" + ("---:|---:|---:|" if "ray" in systems else ""))
    for row in rows:
        f = samples["freight"][row]
        line = f"| {row} | {fmt(statistics.fmean(f))} | {fmt(statistics.pstdev(f))} |"
        if "ray" in systems:
            r = samples["ray"][row]
            ratio = statistics.fmean(f) / statistics.fmean(r)
            line += f" {fmt(statistics.fmean(r))} | {fmt(statistics.pstdev(r))} | {ratio:.2f}x |"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
