"""Run the microbenchmarks on freight and on Ray in one session and print the ratios.

    python benchmarks/compare.py [--ray-python PATH] [--smoke] [--json PATH]

Each system runs in its own subprocess (Ray pins its own grpcio and protobuf, so it lives in its
own virtual environment: pass its interpreter with --ray-python). Figures are only compared
within one run of this script, on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run(system: str, python: str, smoke: bool, out: str) -> dict:
    cmd = [python, os.path.join(HERE, "microbenchmark.py"), "--system", system, "--json", out]
    if smoke:
        cmd.append("--smoke")
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    with open(out) as f:
        return json.load(f)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ray-python", default="", help="interpreter of a virtualenv with ray")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--json", default="")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        freight = run("freight", sys.executable, args.smoke, os.path.join(tmp, "freight.json"))
        ray = None
        if args.ray_python:
            ray = run("ray", args.ray_python, args.smoke, os.path.join(tmp, "ray.json"))
    peer = {r["name"]: r for r in (ray or {"results": []})["results"]}
    print(
        f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, ray {ray['version'] if ray else '-'}"
    )
    print("| benchmark | freight | ± | Ray | ± | freight / Ray |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = []
    for r in freight["results"]:
        o = peer.get(r["name"])
        ratio = r["mean"] / o["mean"] if o and o["mean"] else None
        rows.append({"name": r["name"], "freight": r, "ray": o, "ratio": ratio})
        print(
            f"| {r['name']} | {r['mean']:,.2f} | {r['stdev']:,.2f} | "
            + (f"{o['mean']:,.2f} | {o['stdev']:,.2f} | {ratio:.2f}x |" if o else "- | - | - |")
        )
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
