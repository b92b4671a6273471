"""A game day's report: the summary table (printed at the end, and the closing note), Markdown
for people, JUnit XML for CI (a testcase per step, a failure per broken hypothesis), an SVG
timeline of the probes with the faults and notes on it, and ``gameday.json`` with all of it.
The Chaos Toolkit journal of each step is written by chaoslib next to them (``journals/``).
"""

from __future__ import annotations

import glob
import html
import json
import os
import time
from dataclasses import asdict
from typing import Any
from xml.etree import ElementTree as ET

from . import workload
from .record import Run, StepResult
from .watch import SERIES

COLUMNS = ("step", "fault", "recovery", "lost", "alert expected / fired", "page latency", "verdict")


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}"


def alert_cell(s: StepResult) -> str:
    if s.alert is None:
        return "none"
    if not s.watched:
        return f"{s.alert} / not watched"
    if s.alert_fired is None:
        return f"{s.alert} / did not fire"
    since = s.fault_started or s.started
    return f"{s.alert} / fired at +{s.alert_fired - since:.1f} s"


def page_cell(s: StepResult) -> str:
    if not s.page:
        return "-"
    if not s.watched:
        return "not watched"
    return _s(s.page_latency_s) if s.page_received is not None else "no page"


def lost_cell(s: StepResult) -> str:
    if s.status == "skipped":
        return "-"
    return "nothing" if not s.lost else f"{len(s.lost)} of {s.submitted}"


def rows(run: Run) -> list[tuple[str, ...]]:
    return [
        (
            s.name,
            s.fault_names,
            _s(s.recovery_s),
            lost_cell(s),
            alert_cell(s),
            page_cell(s),
            s.status,
        )
        for s in run.steps
    ]


def summary_table(run: Run) -> str:
    """The summary as a Markdown table (which reads as plain text on a terminal too)."""
    table = [COLUMNS, *rows(run)]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in table
    ]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def verdict(run: Run) -> str:
    held = sum(1 for s in run.steps if s.status == "held")
    skipped = sum(1 for s in run.steps if s.status == "skipped")
    broken = [s.name for s in run.steps if s.status in ("broken", "interrupted")]
    text = f"{held} of {len(run.steps)} hypotheses held"
    if skipped:
        text += f", {skipped} step(s) skipped"
    if broken:
        text += f"; broken: {', '.join(broken)}"
    if run.interrupted:
        text += "; the run was interrupted (Ctrl-C)"
    return text


def timeline(run: Run) -> list[tuple[float, str]]:
    """Every event of the run, oldest first: steps, injections and reverts, recoveries,
    alerts, pages and notes."""
    events: list[tuple[float, str]] = []
    for s in run.steps:
        for f in s.faults:
            target = f"{f.target.get('kind')} {f.target.get('id')}"
            events.append((f.started, f"inject {f.fault} ({f.signal}) on {target}, pid {f.pid}"))
            if f.ended is not None:
                events.append((f.ended, f"end of {f.fault} on {target}: {f.result}"))
        if s.recovered is not None:
            events.append((s.recovered, f"{s.name} recovered ({_s(s.recovery_s)})"))
        if s.alert_fired is not None:
            events.append((s.alert_fired, f"alert {s.alert} fired"))
        if s.page_received is not None:
            events.append((s.page_received, f"page for {s.alert} received"))
    for n in run.notes:
        text = n.text.splitlines()[0] if n.text else ""
        events.append((n.time, f"note: {text}" if n.by == "operator" else text))
    for r in run.recovered_at_end:
        events.append((run.ended, f"reverted when the run stopped: {r}"))
    return sorted(events, key=lambda e: e[0])


def _during(run: Run, s: StepResult) -> str:
    """The probes while the step's faults held (from its first injection to its recovery)."""
    start = s.fault_started
    end = s.recovered or s.ended
    if start is None or not end:
        return "no fault held"
    seen = [x for x in run.samples if start <= x.time <= end]
    parts = []
    for name in SERIES:
        values = [v for x in seen if (v := x.values.get(name)) is not None]
        gaps = sum(1 for x in seen if x.values.get(name) is None)
        if values:
            part = f"{name} {min(values):g}..{max(values):g}"
            parts.append(part + (f" ({gaps} reading(s) unanswered)" if gaps else ""))
        elif gaps:
            parts.append(f"{name} unanswered")
    return "; ".join(parts) or "no readings"


def markdown(run: Run) -> str:
    out = [
        f"# Game day: {run.plan.title}",
        "",
        run.plan.description.strip(),
        "",
        f"- Cluster: `{run.address}`",
        f"- From {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(run.started))} to "
        f"{time.strftime('%H:%M:%S', time.gmtime(run.ended))} UTC "
        f"({run.ended - run.started:.0f} s)",
        f"- Verdict: **{verdict(run)}**",
        "",
        "## Summary",
        "",
        summary_table(run),
        "",
        "## Steps",
    ]
    for n, s in enumerate(run.steps, 1):
        out += ["", f"### {n}. {s.name}: {s.title}", "", f"Hypothesis: {s.hypothesis}", ""]
        out.append(f"- Experiment: `{s.experiment}`")
        for line in s.plan:
            out.append(f"- Does: `{line}`")
        out.append(f"- Verdict: **{s.status}**")
        for r in s.reasons:
            out.append(f"  - {r}")
        if s.status == "skipped":
            continue
        out.append(
            f"- Steady state: before {_met(s.steady_before)}; during: {_during(run, s)}; after "
            f"{_met(s.steady_after)}"
        )
        for f in s.faults:
            target = f"{f.target.get('kind')} {f.target.get('id')}"
            end = f"{_clock(f.ended)} ({f.result})" if f.ended else "never ended"
            out.append(
                f"- Fault: {f.fault} ({f.signal}) on {target}, pid {f.pid}: {_clock(f.started)} to {end}"
            )
        out.append(
            f"- Recovery: {_s(s.recovery_s)} (from the fault's end to the steady state and a new right result)"
        )
        out.append(f"- Work: {s.submitted} submitted, {s.answered} answered right")
        out.append(
            "- Lost: "
            + ("nothing" if not s.lost else ", ".join(f"{k} ({v})" for k, v in s.lost.items()))
        )
        if s.abandoned:
            out.append(
                "- Abandoned with the killed driver (expected): "
                + ", ".join(f"{k} ({v})" for k, v in s.abandoned.items())
            )
        out.append(f"- Alert: {alert_cell(s)}; page: {page_cell(s)}")
        if s.page_runbook:
            out.append(f"- The page's runbook: {s.page_runbook}")
        if s.journal_path:
            out.append(f"- Chaos Toolkit journal: `{os.path.relpath(s.journal_path, run.out_dir)}`")
    out += ["", "## Timeline", "", "| time (UTC) | + s | event |", "| --- | --- | --- |"]
    for t, text in timeline(run):
        out.append(f"| {_clock(t)} | {t - run.started:.1f} | {text.replace('|', '/')} |")
    out += ["", "## Probes", "", "![probes across the run](timeline.svg)", ""]
    out += ["## Closing note", "", summary_table(run), ""]
    return "\n".join(out)


def _met(met: bool | None) -> str:
    return {True: "held", False: "did not hold", None: "not checked"}[met]


def junit(run: Run) -> str:
    suite = ET.Element(
        "testsuite",
        name=f"gameday: {run.plan.title}",
        tests=str(len(run.steps)),
        failures=str(sum(1 for s in run.steps if s.status in ("broken", "interrupted"))),
        skipped=str(sum(1 for s in run.steps if s.status == "skipped")),
        time=f"{run.ended - run.started:.3f}",
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(run.started)),
    )
    for s in run.steps:
        case = ET.SubElement(
            suite,
            "testcase",
            classname="gameday",
            name=s.name,
            time=f"{max(0.0, s.ended - s.started) if s.started else 0.0:.3f}",
        )
        if s.status == "skipped":
            ET.SubElement(case, "skipped", message="no go at the prompt")
        elif s.status in ("broken", "interrupted"):
            failure = ET.SubElement(case, "failure", message=f"hypothesis broken: {s.hypothesis}")
            failure.text = "\n".join(s.reasons) or s.status
        out = ET.SubElement(case, "system-out")
        out.text = (
            f"hypothesis: {s.hypothesis}\nfault: {s.fault_names}\nrecovery: {_s(s.recovery_s)}\n"
            f"lost: {lost_cell(s)}\nalert: {alert_cell(s)}\npage latency: {page_cell(s)}\n"
        )
    suites = ET.Element("testsuites")
    suites.append(suite)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def results_per_second(out_dir: str) -> list[tuple[float, float]]:
    """Right results per second across every workload ledger of the run."""
    times: list[float] = []
    for path in glob.glob(os.path.join(out_dir, "ledgers", "*.jsonl")):
        times += list(workload.read_ledger(path).ok.values())
    if not times:
        return []
    start = int(min(times))
    buckets: dict[int, int] = {}
    for t in times:
        buckets[int(t) - start] = buckets.get(int(t) - start, 0) + 1
    return [(start + k + 0.5, float(buckets.get(k, 0))) for k in range(max(buckets) + 1)]


WIDTH, LANE, TOP, LEFT, RIGHT = 960, 110, 40, 130, 20


def svg(run: Run) -> str:
    """The probes across the run, one lane each, with each step's faults shaded and the notes
    marked: hand-written SVG, no plotting library."""
    series: dict[str, list[tuple[float, float | None]]] = {
        name: [(x.time, x.values.get(name)) for x in run.samples] for name in SERIES
    }
    series["results_per_s"] = [(t, v) for t, v in results_per_second(run.out_dir)]
    t0, t1 = run.started, max(run.ended, run.started + 1)
    span = WIDTH - LEFT - RIGHT
    height = TOP + LANE * len(series) + 40

    def x(t: float) -> float:
        return LEFT + (min(max(t, t0), t1) - t0) / (t1 - t0) * span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        f"<title>{html.escape(run.plan.title)}: probes across the game day</title>",
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{LEFT}" y="20" font-size="14">{html.escape(run.plan.title)}</text>',
    ]
    for s in run.steps:
        start, end = s.fault_started, s.recovered or s.ended
        if start is None or not end:
            continue
        parts.append(
            f'<rect class="fault" data-step="{html.escape(s.name)}" x="{x(start):.1f}" y="{TOP}" '
            f'width="{max(1.0, x(end) - x(start)):.1f}" height="{LANE * len(series)}" '
            f'fill="{"#fde2e1" if s.status != "held" else "#fff1d6"}"/>'
        )
        parts.append(
            f'<text x="{x(start) + 2:.1f}" y="{TOP - 4}" fill="#a33">{html.escape(s.name)}</text>'
        )
    for i, (name, points) in enumerate(series.items()):
        top = TOP + i * LANE
        values = [v for _, v in points if v is not None]
        hi = max([*values, 1.0])
        parts.append(
            f'<line x1="{LEFT}" y1="{top + LANE - 10}" x2="{WIDTH - RIGHT}" y2="{top + LANE - 10}" stroke="#999"/>'
        )
        parts.append(f'<text x="8" y="{top + LANE / 2:.0f}">{name}</text>')
        parts.append(f'<text x="{LEFT - 8}" y="{top + 12}" text-anchor="end">{hi:g}</text>')
        parts.append(f'<text x="{LEFT - 8}" y="{top + LANE - 10}" text-anchor="end">0</text>')
        runs: list[list[str]] = [[]]
        for t, v in points:
            if v is None:  # a gap: the probe went unanswered
                runs.append([])
                continue
            y = top + LANE - 10 - v / hi * (LANE - 30)
            runs[-1].append(f"{x(t):.1f},{y:.1f}")
        for pts in (r for r in runs if r):
            parts.append(
                f'<polyline class="series" data-series="{name}" fill="none" stroke="#1f6feb" '
                f'stroke-width="1.5" points="{" ".join(pts)}"/>'
            )
    bottom = TOP + LANE * len(series)
    for n in run.notes:
        if n.by != "operator":
            continue
        parts.append(
            f'<line class="note" x1="{x(n.time):.1f}" y1="{TOP}" x2="{x(n.time):.1f}" y2="{bottom}" '
            f'stroke="#2da44e" stroke-dasharray="3,3"><title>{html.escape(n.text)}</title></line>'
        )
    parts.append(f'<text x="{LEFT}" y="{bottom + 20}">0 s</text>')
    parts.append(
        f'<text x="{WIDTH - RIGHT}" y="{bottom + 20}" text-anchor="end">{t1 - t0:.0f} s</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def as_json(run: Run) -> dict[str, Any]:
    return {
        "title": run.plan.title,
        "plan": run.plan.path,
        "address": run.address,
        "started": run.started,
        "ended": run.ended,
        "held": run.held,
        "interrupted": run.interrupted,
        "steps": [
            {**asdict(s), "recovery_s": s.recovery_s, "page_latency_s": s.page_latency_s}
            for s in run.steps
        ],
        "notes": [asdict(n) for n in run.notes],
        "timeline": [{"time": t, "event": e} for t, e in timeline(run)],
        "samples": [asdict(x) for x in run.samples],
        "recovered_at_end": run.recovered_at_end,
    }


def write(run: Run) -> dict[str, str]:
    """Write every report file into the run's folder; their paths by kind."""
    paths = {
        "markdown": os.path.join(run.out_dir, "report.md"),
        "junit": os.path.join(run.out_dir, "report.xml"),
        "svg": os.path.join(run.out_dir, "timeline.svg"),
        "json": os.path.join(run.out_dir, "gameday.json"),
    }
    texts = {
        "markdown": markdown(run),
        "junit": junit(run),
        "svg": svg(run),
        "json": json.dumps(as_json(run), indent=2) + "\n",
    }
    for kind, path in paths.items():
        with open(path, "w", encoding="utf-8") as f:
            f.write(texts[kind])
    return paths
