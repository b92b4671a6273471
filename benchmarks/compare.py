"""Run the benchmark suite on freight beside Ray and Dask, alternating, and print one table.

    python benchmarks/compare.py                      # what `make bench` runs
    python benchmarks/compare.py --smoke --peers none # a minute: every row runs once, tiny sizes
    python benchmarks/compare.py --filter 'tasks (sync|async)' --passes 4

Each pass runs every system in turn -- freight, freight with FREIGHT_INSTRUMENTATION=0, Ray,
Dask; the next pass in the reverse order -- each as a subprocess of its own interpreter (Ray pins
its own grpcio and protobuf, so the peers live in their own virtualenv, `.bench-venv`). A
subprocess measures all selected workloads of its system and streams the samples back; a
workload that fails or outlives its timeout is recorded as an error for that row and the
workloads after it go on in a new subprocess. Samples of all passes are merged (mean and standard
deviation over every timed round), and one markdown table is printed and written, with the JSON,
to ``benchmarks/results/latest.{md,json}`` (``smoke.{md,json}`` with ``--smoke``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil
from rows import (
    AT_MOST,
    BY_NAME,
    OVERHEAD_TARGET,
    QUEUE,
    RATIO,
    SIZED_ROWS,
    WORKLOADS,
    Row,
    Workload,
)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BENCH_PYTHON = os.path.join(REPO, ".bench-venv", "bin", "python")
INSTALL_HINT = (
    "`make bench` installs ray==2.60.0 and dask[distributed] into .bench-venv; "
    "or pass --{peer}-python with an interpreter that has it"
)
FULL_QUEUE_TASKS = 1_000_000


@dataclass
class Variant:
    """One column group of the table: a system, the interpreter and environment it runs with."""

    key: str  # freight, freight-off, ray, dask
    title: str
    system: str
    python: str
    env: dict[str, str]
    queue_tasks: int


@dataclass
class Store:
    """Everything the subprocesses reported, merged over passes."""

    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    cpu: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # µs per operation
    sizes: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def error(self, variant: str, workload: str, pass_no: int, message: str) -> None:
        self.errors.append(
            {"variant": variant, "workload": workload, "pass": pass_no, "error": message}
        )
        print(f"  ! {variant}, {workload}: {message.splitlines()[0][:200]}", file=sys.stderr)


def has_module(python: str, module: str) -> bool:
    if not python or not os.path.exists(python):
        return False
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


def kill_tree(pid: int) -> None:
    """SIGKILL a subprocess this script started and every process under it (its cluster)."""
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def tail(path: str, n: int = 25) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


class Child:
    """Runs planned workloads of one variant in subprocesses, restarting after a failed one."""

    def __init__(self, args: argparse.Namespace, store: Store, tmp: str, logs: str) -> None:
        self.args, self.store, self.tmp, self.logs = args, store, tmp, logs
        self.count = 0

    def timeout(self, workload: Workload, variant: Variant) -> float:
        base = workload.timeout_s or self.args.row_timeout
        if workload.name == QUEUE:
            # Generous: a slow system is not a hang; 250 tasks/s is below every rate seen here.
            return base + variant.queue_tasks / 250
        return base

    def run(self, variant: Variant, names: list[str], pass_no: int) -> None:
        remaining = list(names)
        while remaining:
            remaining = self._run_once(variant, remaining, pass_no)

    def _run_once(self, variant: Variant, names: list[str], pass_no: int) -> list[str]:
        """Run ``names`` in one subprocess; return the workloads still to run after a failure."""
        self.count += 1
        tag = f"{pass_no}-{variant.key}-{self.count}"
        plan_path = os.path.join(self.tmp, f"{tag}.plan.json")
        out_path = os.path.join(self.tmp, f"{tag}.jsonl")
        log_path = os.path.join(self.logs, f"{tag}.log")
        timing = self.args.timing
        with open(plan_path, "w") as f:
            json.dump(
                {
                    "workloads": names,
                    "smoke": self.args.smoke,
                    "timing": timing,
                    "queue_tasks": variant.queue_tasks,
                },
                f,
            )
        open(out_path, "w").close()  # the child appends to it
        cmd = [variant.python, os.path.join(HERE, "suite.py"), "--system", variant.system]
        cmd += ["--plan", plan_path, "--out", out_path]
        env = dict(os.environ, **variant.env)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        current: str | None = None
        started = time.monotonic()
        deadline = started + self.args.row_timeout
        ended: list[str] = []
        done = False
        timed_out = False
        buf = ""
        with open(out_path) as events:
            while True:
                exited = proc.poll() is not None
                buf += events.read()
                *lines, buf = buf.split("\n")
                for line in lines:
                    event = json.loads(line)
                    kind = event["event"]
                    now = time.monotonic()
                    if kind == "meta":
                        self.store.meta.setdefault(variant.key, event)
                    elif kind == "start":
                        current = event["workload"]
                        started = now
                        deadline = now + self.timeout(BY_NAME[current], variant)
                    elif kind == "row":
                        self._record(variant, event, pass_no)
                    elif kind == "error":
                        self.store.error(variant.key, event["workload"], pass_no, event["error"])
                    elif kind == "end":
                        key = f"{variant.key}: {event['workload']}"
                        self.store.seconds[key] = self.store.seconds.get(key, 0) + now - started
                        ended.append(event["workload"])
                        current = None
                        deadline = now + self.args.row_timeout  # shutdown, next start
                    elif kind == "done":
                        done = True
                if exited:
                    break
                if time.monotonic() > deadline:
                    timed_out = True
                    kill_tree(proc.pid)
                    proc.wait()
                    break
                time.sleep(0.2)
        if done:
            return []
        why = (
            f"timed out after {time.monotonic() - started:.0f} s"
            if timed_out
            else f"the subprocess exited with code {proc.returncode}"
        )
        why += f" (log: {log_path})\n{tail(log_path)}"
        if current is None:
            if len(ended) == len(names):  # every workload ran; only the shutdown failed
                self.store.error(variant.key, "(shutdown)", pass_no, why)
                return []
            current = names[len(ended)]  # died before its start event
        self.store.error(variant.key, current, pass_no, why)
        return names[names.index(current) + 1 :]

    def _record(self, variant: Variant, event: dict[str, Any], pass_no: int) -> None:
        samples = [x for x in event["samples"] if math.isfinite(x)]
        if not samples:
            self.store.error(variant.key, event["workload"], pass_no, f"no figure: {event}")
            return
        key = (variant.key, event["row"])
        self.store.samples.setdefault(key, []).extend(samples)
        cpu = [x for x in event.get("cpu") or () if math.isfinite(x)]
        if cpu:
            self.store.cpu.setdefault(key, []).extend(cpu)
        if "size" in event:
            self.store.sizes.setdefault(key, []).append(event["size"])
        row = next((r for w in WORKLOADS for r in w.rows if r.name == event["row"]), None)
        unit = row.unit if row else ""
        print(
            f"  {variant.title:>10}: {event['row']}: {fmt(statistics.fmean(samples))} {unit}",
            file=sys.stderr,
            flush=True,
        )


# --- the table ---------------------------------------------------------------------------------


def fmt(x: float | None) -> str:
    if x is None or x != x:
        return "-"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def figure(store: Store, variant: str, row: Row) -> dict[str, Any] | None:
    samples = store.samples.get((variant, row.name))
    if not samples:
        return None
    fig: dict[str, Any] = {
        "mean": statistics.fmean(samples),
        "stdev": statistics.pstdev(samples),
        "samples": samples,
    }
    if (variant, row.name) in store.sizes:
        fig["sizes"] = store.sizes[(variant, row.name)]
    cpu = store.cpu.get((variant, row.name))
    if cpu:
        fig["cpu_us_per_op"] = statistics.fmean(cpu)
        fig["cpu_samples"] = cpu
    return fig


def tasks_of(fig: dict[str, Any] | None) -> int | None:
    sizes = (fig or {}).get("sizes") or []
    return sizes[0].get("tasks") if sizes else None


def better(row: Row, freight: float, peer: float) -> float | None:
    """How many times better freight is than the peer on this row."""
    if row.lower_is_better:
        return peer / freight if freight > 0 else None
    return freight / peer if peer > 0 else None


def build_rows(store: Store, variants: dict[str, Variant]) -> list[dict[str, Any]]:
    out = []
    failed = {(e["variant"], e["workload"]) for e in store.errors}
    for w in WORKLOADS:
        for row in w.rows:
            figures = {v: figure(store, v, row) for v in variants}
            errors = {v: True for v in variants if (v, w.name) in failed and not figures[v]}
            if not any(figures.values()) and not errors:
                continue
            rec: dict[str, Any] = {
                "name": row.name,
                "label": row.label,
                "unit": row.unit,
                "lower_is_better": row.lower_is_better,
                "target": asdict(row.target) if row.target else None,
                "figures": figures,
                "errors": sorted(errors),
                "systems": sorted(w.systems),
                "ratio": {},
                "overhead": None,
                "cpu_overhead": None,
            }
            f = figures.get("freight")
            for peer in ("ray", "dask"):
                p = figures.get(peer)
                comparable = row.name not in SIZED_ROWS or tasks_of(f) == tasks_of(p)
                if f and p and comparable:
                    rec["ratio"][peer] = better(row, f["mean"], p["mean"])
            off = figures.get("freight-off")
            if f and off and off["mean"] > 0:
                sign = 1 if row.lower_is_better else -1
                rec["overhead"] = sign * (f["mean"] - off["mean"]) / off["mean"]
            if f and off and f.get("cpu_us_per_op") and off.get("cpu_us_per_op"):
                on_cpu, off_cpu = f["cpu_us_per_op"], off["cpu_us_per_op"]
                rec["cpu_overhead"] = (on_cpu - off_cpu) / off_cpu
            rec["met"] = met(row, rec, "freight-off" in variants)
            out.append(rec)
    return out


def met(row: Row, rec: dict[str, Any], overhead_measured: bool) -> str:
    checks: dict[str, bool | None] = {}
    f = rec["figures"].get("freight")
    if row.target is not None:
        if row.target.kind == RATIO:
            r = rec["ratio"].get("ray")
            checks["target"] = None if r is None else r >= row.target.value
        elif row.target.kind == AT_MOST:
            sized = row.name in SIZED_ROWS and tasks_of(f) != FULL_QUEUE_TASKS
            checks["target"] = None if f is None or sized else f["mean"] <= row.target.value
    if overhead_measured:
        # Where the row has CPU figures, its overhead is what instrumentation adds to the CPU
        # time per operation: on this kind of shared machine the rate of two identical runs
        # differs by more than the 5% to be shown (decisions/0015-overhead-by-cpu-time.md).
        o = rec["cpu_overhead"] if rec["cpu_overhead"] is not None else rec["overhead"]
        checks["overhead"] = None if o is None else o <= OVERHEAD_TARGET
    if not checks:
        return "-"
    failed = [k for k, ok in checks.items() if ok is False]
    if failed:
        return "no (" + ", ".join(failed) + ")"
    return "?" if None in checks.values() else "yes"


def render(
    rows: list[dict[str, Any]],
    variants: dict[str, Variant],
    header: str,
    legend: list[str],
) -> str:
    def cell(rec: dict[str, Any], v: str) -> tuple[str, str]:
        fig = rec["figures"].get(v)
        if fig:
            return fmt(fig["mean"]), fmt(fig["stdev"]) if len(fig["samples"]) > 1 else "-"
        if v in rec["errors"]:
            return "error", ""
        return "-", ""

    lines = [header, ""]
    lines.append(
        "| row | freight | ± | Ray | ± | freight/Ray | Dask | ± | freight/Dask "
        "| instr. off | overhead % | CPU µs/op on / off | CPU overhead % | target | met |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for rec in rows:
        f, fs = cell(rec, "freight")
        r, rs = cell(rec, "ray")
        d, ds = cell(rec, "dask")
        off, _ = cell(rec, "freight-off")
        rr = rec["ratio"].get("ray")
        dr = rec["ratio"].get("dask")
        o = rec["overhead"]
        co = rec["cpu_overhead"]
        fig_on, fig_off = rec["figures"].get("freight"), rec["figures"].get("freight-off")
        cpu = "-"
        if fig_on and fig_on.get("cpu_us_per_op"):
            cpu = (
                fmt(fig_on["cpu_us_per_op"])
                + " / "
                + (
                    fmt(fig_off["cpu_us_per_op"])
                    if fig_off and fig_off.get("cpu_us_per_op")
                    else "-"
                )
            )
        target = rec["target"]["text"] if rec["target"] else "-"
        lines.append(
            f"| {rec['label']} | {f} | {fs} | {r} | {rs} | "
            f"{f'{rr:.2f}x' if rr is not None else '-'} | {d} | {ds} | "
            f"{f'{dr:.2f}x' if dr is not None else '-'} | {off} | "
            f"{f'{o:+.1%}' if o is not None else '-'} | {cpu} | "
            f"{f'{co:+.1%}' if co is not None else '-'} | {target} | {rec['met']} |"
        )
    lines.append("")
    lines.extend(legend)
    return "\n".join(lines) + "\n"


def git_version() -> str:
    def git(*a: str) -> str:
        proc = subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return rev + (" + local changes" if dirty else "")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--peers",
        default=None,
        help="comma-separated peers to run: ray, dask, or none "
        "(default: each one whose interpreter is given or found in .bench-venv)",
    )
    p.add_argument("--ray-python", default=None, help="interpreter with ray (.bench-venv's)")
    p.add_argument("--dask-python", default=None, help="interpreter with dask (.bench-venv's)")
    p.add_argument("--passes", type=int, default=None, help="alternating passes (2; smoke: 1)")
    p.add_argument("--filter", default="", help="only rows whose name matches this regex")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and rounds, one pass")
    p.add_argument(
        "--no-instrumentation-off",
        action="store_true",
        help="skip the run of freight with FREIGHT_INSTRUMENTATION=0",
    )
    p.add_argument("--rounds", type=int, default=2, help="timed rounds per row and pass (2)")
    p.add_argument(
        "--queue-tasks", type=int, default=None, help="tasks in freight's queue (1,000,000)"
    )
    p.add_argument("--ray-queue-tasks", type=int, default=None, help="Ray's queue (100,000)")
    p.add_argument("--dask-queue-tasks", type=int, default=None, help="Dask's queue (20,000)")
    p.add_argument(
        "--queue-passes",
        type=int,
        default=1,
        help="passes that run the task queue, the longest workload (1: the first only)",
    )
    p.add_argument(
        "--row-timeout",
        type=float,
        default=None,
        help="seconds one workload may take before it is killed (600; smoke: 90)",
    )
    p.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    args.passes = args.passes or (1 if args.smoke else 2)
    args.row_timeout = args.row_timeout or (90.0 if args.smoke else 600.0)
    if args.passes < 1 or args.rounds < 1 or args.queue_passes < 0:
        p.error("--passes and --rounds must be at least 1, --queue-passes at least 0")
    try:
        re.compile(args.filter)
    except re.error as e:
        p.error(f"--filter is not a regular expression: {e}")
    if args.smoke:
        args.timing = {"warmup_s": 0.02, "round_s": 0.05, "rounds": args.rounds}
    else:
        args.timing = {"warmup_s": 1.0, "round_s": 2.0, "rounds": args.rounds}
    return args


def choose_variants(args: argparse.Namespace) -> tuple[dict[str, Variant], list[str]]:
    """The variants to run, in pass-1 order, and a note for each peer that cannot run."""
    small = 2_000 if args.smoke else None
    variants = {
        "freight": Variant(
            "freight",
            "freight",
            "freight",
            sys.executable,
            {"FREIGHT_INSTRUMENTATION": "1"},
            args.queue_tasks or small or FULL_QUEUE_TASKS,
        )
    }
    if not args.no_instrumentation_off:
        variants["freight-off"] = Variant(
            "freight-off",
            "instr. off",
            "freight",
            sys.executable,
            {"FREIGHT_INSTRUMENTATION": "0"},
            variants["freight"].queue_tasks,
        )
    notes = []
    wanted = None if args.peers is None else {p for p in args.peers.split(",") if p}
    unknown = (wanted or set()) - {"ray", "dask", "none"}
    if unknown:
        raise SystemExit(f"--peers: unknown peer(s) {', '.join(sorted(unknown))}; use ray, dask")
    for peer, title, module, default_n in (
        ("ray", "Ray", "ray", 100_000),
        ("dask", "Dask", "distributed", 20_000),
    ):
        given = getattr(args, f"{peer}_python")
        python = given or (BENCH_PYTHON if os.path.exists(BENCH_PYTHON) else "")
        if wanted is not None and peer not in wanted:
            continue
        if not has_module(python, module):
            if wanted is not None or given:
                where = python or "no interpreter"
                notes.append(f"{title}: not available ({where}): " + INSTALL_HINT.format(peer=peer))
            else:
                notes.append(f"{title}: not installed: " + INSTALL_HINT.format(peer=peer))
            continue
        n = getattr(args, f"{peer}_queue_tasks") or small or default_n
        variants[peer] = Variant(peer, title, peer, python, {}, n)
    return variants, notes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    variants, notes = choose_variants(args)
    store = Store()
    selected = [
        w
        for w in WORKLOADS
        if not args.filter or any(re.search(args.filter, r.name) for r in w.rows)
    ]
    if not selected:
        raise SystemExit(f"--filter {args.filter!r} matches no row")
    os.makedirs(args.out_dir, exist_ok=True)
    logs = os.path.join(args.out_dir, "logs")
    os.makedirs(logs, exist_ok=True)
    for name in os.listdir(logs):  # the logs of this run only
        if name.endswith(".log"):
            os.remove(os.path.join(logs, name))
    began = time.time()
    with tempfile.TemporaryDirectory(prefix="freight-bench-") as tmp:
        child = Child(args, store, tmp, logs)
        order = list(variants.values())
        for pass_no in range(1, args.passes + 1):
            for v in order if pass_no % 2 else reversed(order):
                print(f"pass {pass_no}/{args.passes}: {v.title}", file=sys.stderr, flush=True)
                plan = [
                    w
                    for w in selected
                    if v.system in w.systems and (w.name != QUEUE or pass_no <= args.queue_passes)
                ]
                # Fresh workloads get a subprocess each; the others share one, in order. A smoke
                # run only proves that every workload runs: one subprocess for all saves cluster
                # starts.
                group: list[str] = []
                for w in plan:
                    if w.fresh and not args.smoke:
                        if group:
                            child.run(v, group, pass_no)
                            group = []
                        child.run(v, [w.name], pass_no)
                    else:
                        group.append(w.name)
                if group:
                    child.run(v, group, pass_no)

    rows = build_rows(store, variants)
    report = make_report(args, variants, notes, store, rows, time.time() - began)
    text = render(rows, variants, report["header"], report["legend"])
    print(text, end="")
    stem = "smoke" if args.smoke else "latest"
    with open(os.path.join(args.out_dir, f"{stem}.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.out_dir, f"{stem}.md"), "w") as f:
        f.write(text)
    return 0


def make_report(
    args: argparse.Namespace,
    variants: dict[str, Variant],
    notes: list[str],
    store: Store,
    rows: list[dict[str, Any]],
    seconds: float,
) -> dict[str, Any]:
    meta = store.meta
    ram = psutil.virtual_memory().total / 1024**3
    versions = [f"freight {meta.get('freight', {}).get('version', '?')} @ {git_version()}"]
    for key, title in (("ray", "ray"), ("dask", "dask")):
        if key in variants:
            versions.append(f"{title} {meta.get(key, {}).get('version', '?')}")
    pythons = sorted({m.get("python", "?") for m in meta.values()} or {platform.python_version()})
    systems = " vs ".join(v.title for k, v in variants.items() if k != "freight-off")
    header = (
        f"{systems}, {time.strftime('%Y-%m-%d %H:%M')}: "
        f"{platform.system()} {platform.machine()}, {cpu_model()}, {os.cpu_count()} CPUs, "
        f"{ram:.1f} GiB RAM; Python {', '.join(pythons)}; {'; '.join(versions)}"
        + ("; SMOKE (tiny sizes, not figures)" if args.smoke else "")
    )
    t = args.timing
    titles = [v.title for v in variants.values()]
    legend = [
        f"- Figures: mean ± standard deviation over every timed round of {args.passes} "
        f"pass{'es' if args.passes > 1 else ''}; "
        f"each pass times a row as Ray does ({t['warmup_s']:g} s of warm-up that sizes the step, "
        f"then {t['rounds']} rounds of {t['round_s']:g} s). Per second unless the row gives a "
        "unit; rows marked *lower is better* are durations or memory.",
        "- freight/Ray, freight/Dask: how many times better freight is "
        "(freight ÷ peer for rates, peer ÷ freight for lower-is-better rows).",
        f"- Order of each pass: {', '.join(titles)}; the next pass reversed. "
        "Each system runs in its own subprocess; Ray and Dask with their defaults.",
    ]
    if "freight-off" in variants:
        legend.append(
            "- instr. off: freight with FREIGHT_INSTRUMENTATION=0. overhead % = (off - on) / off "
            "for rates, (on - off) / off for lower-is-better rows: what instrumentation costs "
            "in throughput. CPU µs/op: CPU time of the driver and every process under it "
            "(head, agent, workers) during the timed rounds, per operation; CPU overhead % = "
            "(on - off) / off of it. Target: at most "
            f"{OVERHEAD_TARGET:.0%} on every row, checked on the CPU overhead where the row has "
            "one (the rates of two identical runs on this machine differ by more than that)."
        )
    legend.append(
        "- met: yes when the row's target (ratio vs Ray in this run, or freight's own figure) "
        "and the overhead target hold; no (which failed); ? when a figure is missing."
    )
    ran = {key[1] for key in store.samples}
    queue = ", ".join(f"{v.title} {v.queue_tasks:,}" for v in variants.values())
    passes = "first pass only" if args.queue_passes == 1 else f"first {args.queue_passes} passes"
    if QUEUE in ran:
        legend.append(
            f"- Task queue ({passes}): tasks per system: {queue}. "
            "Peak RSS sampled every 50 ms; driver+agent: the driver and the node agent "
            "(freight.node, Ray's raylet; Dask: the driver, which holds the scheduler); whole "
            "tree: every process under the driver. Memory ratios only between equal sizes."
        )
    if any(key[0] == "dask" for key in store.samples):
        cfg = meta.get("dask", {}).get("config", {})
        legend.append(
            f"- Dask: LocalCluster({cfg.get('LocalCluster', {})}); only rows whose definition "
            "carries over; multi client tasks async submits from tasks with worker_client(), "
            f"{cfg.get('multi_n', '?')} tasks per client; its actors are objects in existing "
            "worker processes (no process per actor)."
        )
    legend.extend(f"- {n}" for n in notes)
    for e in store.errors:
        first = e["error"].splitlines()[0][:300]
        legend.append(f"- error: {e['variant']}, {e['workload']}, pass {e['pass']}: {first}")
    return {
        "header": header,
        "legend": legend,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "ram_gib": round(ram, 1),
        },
        "options": {
            "passes": args.passes,
            "rounds": args.rounds,
            "timing": args.timing,
            "smoke": args.smoke,
            "filter": args.filter,
            "queue_passes": args.queue_passes,
            "row_timeout_s": args.row_timeout,
        },
        "freight_git": git_version(),
        "variants": {k: {**asdict(v), "meta": meta.get(k)} for k, v in variants.items()},
        "notes": notes,
        "rows": rows,
        "errors": store.errors,
        "workload_seconds": store.seconds,
        "seconds": round(seconds, 1),
    }


if __name__ == "__main__":
    sys.exit(main())
