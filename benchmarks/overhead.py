"""Cost of instrumentation: the microbenchmarks with metrics, task events and traces on, then off.

    python benchmarks/overhead.py [--rounds 2] [--filter REGEX] [--smoke] [--json PATH]

Runs ``microbenchmark.py --system freight`` alternately with ``FREIGHT_INSTRUMENTATION=1`` and
``=0`` (on, off, on, off, ... so that drift of the machine hits both alike), each in its own
subprocess, and prints per benchmark the mean of each mode and the overhead
``(off - on) / off`` (positive: instrumentation costs that much throughput), and the same for
the CPU time of the whole process tree per operation. With
``--tracing`` the "on" runs also export spans to an OTLP receiver started here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run_once(on: bool, args: argparse.Namespace, out: str, extra_env: dict[str, str]) -> dict:
    cmd = [sys.executable, os.path.join(HERE, "microbenchmark.py"), "--system", "freight"]
    cmd += ["--json", out]
    if args.smoke:
        cmd.append("--smoke")
    if args.filter:
        cmd += ["--filter", args.filter]
    env = dict(os.environ, FREIGHT_INSTRUMENTATION="1" if on else "0")
    if on:
        env.update(extra_env)
    subprocess.run(cmd, check=True, stdout=sys.stderr, env=env)
    with open(out) as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2, help="on/off pairs to run (alternating)")
    p.add_argument("--filter", default="", help="only benchmarks matching this regex")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (for tests)")
    p.add_argument("--tracing", action="store_true", help="also export spans when on")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    extra: dict[str, str] = {}
    receiver = None
    if args.tracing:
        from freight.testing import OtlpReceiver

        receiver = OtlpReceiver()
        receiver.start()
        extra = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        }
    figures: dict[str, dict[bool, list[float]]] = {}
    cpu: dict[str, dict[bool, list[float]]] = {}
    order: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.rounds):
                for on in (True, False):
                    out = os.path.join(tmp, f"{i}-{on}.json")
                    for r in run_once(on, args, out, extra)["results"]:
                        if r["name"] not in figures:
                            figures[r["name"]] = {True: [], False: []}
                            order.append(r["name"])
                        figures[r["name"]][on].append(r["mean"])
                        cpu.setdefault(r["name"], {True: [], False: []})[on].append(
                            r.get("cpu_us_per_op", 0.0)
                        )
    finally:
        if receiver is not None:
            receiver.stop()
    print(
        f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {args.rounds} on/off pair(s)"
        + (", spans exported" if args.tracing else "")
    )
    print("| benchmark | on | off | overhead | CPU µs/op on | off | CPU overhead |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for name in order:
        on = statistics.fmean(figures[name][True])
        off = statistics.fmean(figures[name][False])
        overhead = (off - on) / off if off else 0.0
        cpu_on = statistics.fmean(cpu[name][True])
        cpu_off = statistics.fmean(cpu[name][False])
        cpu_overhead = (cpu_on - cpu_off) / cpu_off if cpu_off else 0.0
        rows.append(
            {
                "name": name,
                "on": on,
                "off": off,
                "overhead": overhead,
                "cpu_us_per_op_on": cpu_on,
                "cpu_us_per_op_off": cpu_off,
                "cpu_overhead": cpu_overhead,
            }
        )
        print(
            f"| {name} | {on:,.2f} | {off:,.2f} | {overhead:+.1%} | {cpu_on:,.1f} | "
            f"{cpu_off:,.1f} | {cpu_overhead:+.1%} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
