"""Which series names, matcher labels and grouping labels a PromQL expression uses, checked
against observe/catalogue.py (plus Prometheus' `up`) and the scrape jobs freight configures."""

from __future__ import annotations

import re

from alertfiles import records

from freight.observe.catalogue import CATALOGUE, Type

# Labels Prometheus adds to every scraped series (job, instance) or that the file-SD document
# gives each target (runtime/head/metrics.py), plus histogram buckets' le.
TARGET_LABELS = {"job", "instance", "cluster", "node_id", "is_head_node", "le"}
JOBS = {"freight-head", "freight-nodes"}  # freight metrics prometheus-config's job names
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "offset", "bool", "inf", "nan",
}  # fmt: skip


def _metric_labels() -> dict[str, set[str]]:
    """Every series name the catalogue lets a query name, with the labels it carries."""
    out: dict[str, set[str]] = {"up": set(TARGET_LABELS)}
    for m in CATALOGUE:
        labels = {*m.labels, *TARGET_LABELS}
        if m.type == Type.HISTOGRAM:
            for suffix in ("_bucket", "_sum", "_count"):
                out[m.name + suffix] = labels
        else:
            out[m.name] = labels
    return out


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}")
_IDENT = re.compile(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(?!\w)(\s*\()?")
_MATCHER = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*")


def promql_names(expr: str) -> tuple[set[str], list[tuple[str, set[str]]], set[str]]:
    """The series names ``expr`` selects, each selector's (name, matcher labels), and the label
    names its groupings use. Functions (an identifier followed by ``(``), keywords, durations
    and string values are not series names."""
    strings: list[str] = []

    def keep(m: re.Match[str]) -> str:
        strings.append(m.group(0))
        return '""'

    text = _RANGE.sub("", _STRING.sub(keep, expr))
    grouped: set[str] = set()
    for m in _GROUPING.finditer(text):
        grouped |= {x.strip() for x in m.group(2).split(",") if x.strip()}
    text = _GROUPING.sub(" ", text)
    selectors: list[tuple[str, set[str]]] = []
    names: set[str] = set()
    for m in _SELECTOR.finditer(text):
        labels = {mm.group(1) for mm in (_MATCHER.match(p) for p in m.group(2).split(",")) if mm}
        selectors.append((m.group(1) or "", labels))
        if m.group(1):
            names.add(m.group(1))
    text = _SELECTOR.sub(lambda m: " ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    for m in _IDENT.finditer(text):
        if m.group(2) or m.group(1).lower() in PROMQL_WORDS:
            continue  # a function call or a keyword
        names.add(m.group(1))
    return names, selectors, grouped


def undeclared(expr: str) -> list[str]:
    known = _metric_labels()
    recorded = {r["record"] for r in records()}
    names, selectors, grouped = promql_names(expr)
    problems = [
        f"{n} is not in observe/catalogue.py"
        for n in sorted(names)
        if n not in known and n not in recorded
    ]
    for name, labels in selectors:
        if name and name not in known:
            continue  # reported above, or a recorded series (labelled by its rule)
        allowed = known.get(name, set()) if name else set().union(*known.values())
        problems += [f"{name} has no label {lb}" for lb in sorted(labels - allowed)]
    every_label = set().union(*known.values())
    problems += [
        f"grouping by {g}: no metric has that label" for g in sorted(grouped - every_label)
    ]
    for job in re.findall(r'job\s*=~?\s*"([^"]*)"', expr):
        problems += [f"job {j} is not scraped" for j in job.split("|") if j not in JOBS]
    return problems
