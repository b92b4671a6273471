"""The on-call side of an experiment: what Prometheus computes, what Alertmanager fires, what
reached the pager, and the runbook's mitigation for a dead head.

The probes of :mod:`freight.chaos.probes` (``promql``, ``alert_firing``, ``page_received``) and
the action ``restart_head`` of :mod:`freight.chaos.actions` are thin wrappers over this module.

Where the servers are: the experiment's configuration (``freight_prometheus_url``,
``freight_alertmanager_url``, ``freight_pager_log``), else what `freight monitoring up`
recorded for the cluster (its ``monitoring.json``: read from the session folder, so it works
while the head is down, which is when these probes matter).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from freight import _launcher
from freight.cli import monitoring_cmd
from freight.cli.oncall_pack import runbook_url as default_runbook_url
from freight.client import access
from freight.config import settings
from freight.core.filters import parse_time
from freight.util.process import is_recorded_process

from . import journal, pager, targets

Configuration = dict[str, Any] | None

HTTP_TIMEOUT_S = 10.0
POLL_S = 0.2  # how often page_received reads the pager's log while it waits
MAX_WAIT_S = 3600.0
# What page_received returns when no page came: below any range a tolerance gives ([0, 60]).
NO_PAGE = -1.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
MITIGATIONS = ("restart_head",)  # journalled actions that undo an outage, not faults
_ALERTNAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")

SERVERS = {  # probe's server -> (configuration key, the name `freight monitoring up` records)
    "Prometheus": ("freight_prometheus_url", "prometheus"),
    "Alertmanager": ("freight_alertmanager_url", "alertmanager"),
}


def _config(configuration: Configuration) -> dict[str, Any]:
    return dict(configuration or {})


def _session(configuration: Configuration) -> str:
    """The cluster's session folder on this machine (no head needed)."""
    return access.resolve_session(
        _config(configuration).get("freight_address") or None, flag="freight_address"
    )


def server_url(server: str, given: str, configuration: Configuration) -> str:
    """The URL of ``server`` ("Prometheus", "Alertmanager"): ``given``, else the
    configuration's, else the one `freight monitoring up` runs for the cluster."""
    key, recorded = SERVERS[server]
    url = given or str(_config(configuration).get(key) or "")
    if url:
        if not url.startswith(("http://", "https://")):
            raise access.UsageError(
                f"{server} URL {url!r} ({key} or the probe's argument) is not an http(s) URL; "
                "write it like http://127.0.0.1:9090"
            )
        return url.rstrip("/")
    session = _session(configuration)
    for s in monitoring_cmd.read_state(session):
        if s.name == recorded:
            if not is_recorded_process(s.process):
                raise access.CommandFailed(
                    f"the {server} `freight monitoring up` started for the cluster of {session} "
                    f"(pid {s.process.get('pid')}, {s.url}) is not running; start it again "
                    f"(`freight monitoring down`, then `freight monitoring up`) or set {key}"
                )
            return s.url
    raise access.CommandFailed(
        f"no {server} to ask: the experiment's configuration has no {key} and `freight "
        f"monitoring up` runs none for the cluster of {session}; start it with `freight "
        f"monitoring up` or set {key} to its URL"
    )


def _get(server: str, url: str) -> Any:
    """The JSON answer of ``url``; a clear error naming the server and the URL when it does not
    answer, or answers with an error."""
    try:
        with _NO_PROXY.open(url, timeout=HTTP_TIMEOUT_S) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        try:
            text = str(json.loads(text).get("error") or text)
        except (ValueError, AttributeError):
            pass
        raise access.UsageError(
            f"{server} at {url} refused the request ({e.code}): {text}"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise access.CommandFailed(
            f"{server} at {url.split('/api/')[0]} does not answer ({reason}): check it runs "
            "(`freight monitoring status`) or point the experiment at the right URL"
        ) from None


# ---- Prometheus ------------------------------------------------------------------------------


def promql(query: str, prometheus_url: str = "", configuration: Configuration = None) -> float:
    """The value of the instant query ``query``: a scalar's, or the first sample of a vector
    (aggregate to one series, with sum, max, count..., for a definite answer); 0.0 when the
    vector is empty (no series matched: what `sum(...)` of nothing would be)."""
    if not isinstance(query, str) or not query.strip():
        raise access.UsageError("promql: give a PromQL query, like 'up{job=\"freight-head\"}'")
    base = server_url("Prometheus", prometheus_url, configuration)
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    answer = _get("Prometheus", url)
    if answer.get("status") != "success":
        raise access.UsageError(f"Prometheus refused {query!r}: {answer.get('error')}")
    data = answer["data"]
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        value = result[1]
    elif kind == "vector":
        if not result:
            return 0.0
        value = result[0]["value"][1]
    else:
        raise access.UsageError(
            f"{query!r} gives a {kind}, not a number: write an instant query that gives a "
            "scalar or a vector (no range selector like [5m] at the top)"
        )
    number = float(value)
    if math.isnan(number):
        raise access.CommandFailed(
            f"{query!r} is NaN now (a ratio of nothing to nothing?); guard it, e.g. with "
            "`(...) or vector(0)`"
        )
    return number


# ---- Alertmanager ----------------------------------------------------------------------------


def _alertname(alertname: str) -> str:
    if not isinstance(alertname, str) or not _ALERTNAME.fullmatch(alertname):
        raise access.UsageError(
            f"alertname must be an alert's name, like FreightHeadDown, got {alertname!r}"
        )
    return alertname


def alert_firing(
    alertname: str,
    alertmanager_url: str = "",
    matchers: list[str] | None = None,
    silenced: bool = False,
    inhibited: bool = False,
    configuration: Configuration = None,
) -> int:
    """How many alerts ``alertname`` Alertmanager holds active (API v2), of those whose labels
    match every matcher (``cluster="prod"``, ``instance=~"10\\..*"``); silenced and inhibited
    ones count only when asked."""
    matchers = list(matchers or [])
    if not all(isinstance(m, str) for m in matchers):
        raise access.UsageError(
            f"matchers must be a list of label matchers like 'cluster=\"prod\"', got {matchers!r}"
        )
    filters = [f'alertname="{_alertname(alertname)}"', *matchers]
    base = server_url("Alertmanager", alertmanager_url, configuration)
    query = [
        ("active", "true"),
        ("silenced", str(bool(silenced)).lower()),
        ("inhibited", str(bool(inhibited)).lower()),
        ("unprocessed", "false"),
        *(("filter", f) for f in filters),
    ]
    alerts = _get("Alertmanager", f"{base}/api/v2/alerts?" + urllib.parse.urlencode(query))
    return len(alerts)


# ---- the pager -------------------------------------------------------------------------------


def pager_log_path(given: str, configuration: Configuration) -> str:
    """The pager sink's log: ``given``, else ``freight_pager_log``, else the one of the sink
    `freight monitoring up --pager` runs for the cluster."""
    path = given or str(_config(configuration).get("freight_pager_log") or "")
    if path:
        return os.path.abspath(path)
    session = _session(configuration)
    recorded = monitoring_cmd.pager_log(session)
    if recorded is None:
        raise access.CommandFailed(
            "no pager log to read: the experiment's configuration has no freight_pager_log and "
            f"`freight monitoring up` runs no pager sink for the cluster of {session}; start "
            "monitoring with `freight monitoring up --pager`, or set freight_pager_log to the "
            "log of the sink the paging receiver sends to"
        )
    return recorded


def _posts(path: str) -> list[pager.Logged]:
    try:
        return pager.read(path)
    except FileNotFoundError:
        if os.path.isdir(os.path.dirname(path)):
            return []  # the sink writes its log at the first post
        raise access.UsageError(
            f"no pager log at {path} (its folder does not exist); point freight_pager_log at "
            "the --log of a running pager sink"
        ) from None
    except ValueError as e:
        raise access.UsageError(str(e)) from None


def since_time(since: str, configuration: Configuration, now: float) -> float | None:
    """The unix time ``since`` names: ``""`` now (the step's start); ``fault`` (or
    ``fault:NAME``) the newest injection of a fault (of the action NAME) in the fault journal
    (the mitigations, like restart_head, are no faults), None when there is none; else unix seconds, ISO-8601 or relative (``-5m``), as `freight list` takes."""
    text = str(since or "").strip()
    if not text:
        return now
    if text == "fault" or text.startswith("fault:"):
        from . import faults

        name = text.partition(":")[2]
        times = [
            float(r.get("time") or 0.0)
            for r in journal.read(faults.journal_path(configuration))
            if r["op"] == "inject"
            and (r.get("fault") == name if name else r.get("fault") not in MITIGATIONS)
        ]
        return max(times, default=None)
    try:
        return parse_time(text, now)
    except ValueError as e:
        raise access.UsageError(f"since: {e}; or 'fault' (the newest fault injected)") from None


def page_received(
    alertname: str,
    since: str = "",
    timeout: float = 0.0,
    receiver: str = "page",
    runbook_url: str = "",
    pager_log: str = "",
    configuration: Configuration = None,
) -> float:
    """Seconds from ``since`` to the first page for ``alertname`` (a firing notification at the
    sink's path ``/receiver``), waiting up to ``timeout`` s for it: :data:`NO_PAGE` (-1.0) when
    none came. A page must carry the alert's runbook link (``runbook_url``, default the
    configured runbook base's page for the alert); one without is an error. With ``since``
    naming a fault and no fault in the journal, there is nothing to page for: 0.0."""
    name = _alertname(alertname)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise access.UsageError(f"timeout must be a number of seconds, got {timeout!r}")
    if not 0 <= timeout <= MAX_WAIT_S:
        raise access.UsageError(f"timeout must be 0 to {MAX_WAIT_S:g} s, got {timeout!r}")
    path = pager_log_path(pager_log, configuration)
    started = time.time()
    start = since_time(since, configuration, started)
    if start is None:
        return 0.0
    want = runbook_url or default_runbook_url(name)
    where = f"/{receiver}" if receiver else None
    deadline = time.monotonic() + float(timeout)
    while True:
        for post in _posts(path):
            if post.time < start or (where is not None and post.path.split("?")[0] != where):
                continue
            for page in pager.pages(post.body):
                if page.alertname != name or not page.firing:
                    continue
                if page.runbook_url != want:
                    raise access.CommandFailed(
                        f"the {name} page that reached {path} at {post.time:.3f} carries the "
                        f"runbook link {page.runbook_url or '(none)'!r}, not {want!r}: the "
                        "on-call would page without the runbook; check the rule's runbook_url "
                        "annotation and the paging receiver's details"
                    )
                return round(post.time - start, 3)
        if time.monotonic() >= deadline:
            return NO_PAGE
        time.sleep(POLL_S)  # the sink is another process: its log is all there is to watch


# ---- the runbook's mitigation: start the head again on its store -----------------------------


def _head_options(cmdline: list[str]) -> argparse.Namespace:
    """The options a head process ran with, from its recorded command line."""
    p = argparse.ArgumentParser(add_help=False)
    for option in ("--storage", "--port", "--bind", "--cluster-name", "--metrics-port"):
        p.add_argument(option, default="")
    known, _ = p.parse_known_args(cmdline)
    return known


def restart_head(storage: str, timeout: float, configuration: Configuration) -> dict[str, Any]:
    """What runbooks/FreightHeadDown.md says: `freight start --head --storage FILE` with the
    options the dead head ran with (its recorded command line), so that it carries the
    cluster on and this machine's agent rejoins it; then wait until every node is ALIVE again.
    Nothing is done while the head runs (safe as a rollback)."""
    from . import faults

    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise access.UsageError(f"timeout must be a positive number of seconds, got {timeout!r}")
    session = _session(configuration)
    head = _launcher.read_trusted_json(os.path.join(session, "head.json"))
    if not head or not head.get("cmdline"):
        raise targets.FaultRefused(
            f"no head.json in {session} records how its head ran: start it by hand as "
            "runbooks/FreightHeadDown.md says"
        )
    address = str(head.get("address") or "")
    if is_recorded_process(head):
        return {"result": "running", "pid": int(head["pid"]), "address": address, "seconds": 0.0}
    options = _head_options([str(a) for a in head["cmdline"]])
    store = os.path.abspath(storage) if storage else options.storage
    started = _launcher.read_trusted_json(os.path.join(session, _launcher.STARTED_FILE)) or {}
    if not store or started.get("storage") != store:
        if storage:  # a store named that this head did not run on
            raise targets.FaultRefused(
                f"the head of {session} was not started by `freight start --head --storage "
                f"{store}`, so a head started on it would not carry its cluster on: start it by "
                "hand as runbooks/FreightHeadDown.md says"
            )
        # A head a program started (freight.testing.Cluster, a game day's own cluster): again
        # in its session folder, on the store it ran on, its port and metrics port.
        return _restart_in_session(session, head, timeout, configuration)
    argv = [
        sys.executable, "-m", "freight.cli.main", "start", "--head", "--storage", store,
        "--port", options.port or "0", "--bind", options.bind or "127.0.0.1",
        "--cluster-name", options.cluster_name or "freight",
        "--metrics-port", options.metrics_port or "0",
    ]  # fmt: skip
    target = {"kind": "head", "id": address, "node_id": ""}
    if faults.dry_run(configuration):
        command = "freight " + " ".join(argv[3:])
        return faults.planned(targets.cluster(configuration), "restart_head", target, run=command)
    path, injection = _journal_restart(head, target, configuration)
    began = time.monotonic()
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "FREIGHT_TEMP_DIR": settings.temp_dir},
        )
    except subprocess.TimeoutExpired:
        journal.write_end(path, injection.id, "timed out")
        raise access.CommandFailed(
            f"`freight start --head --storage {store}` did not finish within {timeout:g} s; "
            f"see {session}/logs/head.err"
        ) from None
    if done.returncode != 0:
        journal.write_end(path, injection.id, f"failed: exit {done.returncode}")
        raise access.CommandFailed(
            f"`freight start --head --storage {store}` failed (exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()[-1500:]}"
        )
    new = _launcher.read_trusted_json(os.path.join(session, "head.json")) or {}
    try:
        nodes = _wait_nodes(configuration, began + timeout)
    finally:
        journal.write_end(path, injection.id, "started")
    return {
        "result": "started",
        "pid": int(new.get("pid") or 0),
        "address": str(new.get("address") or address),
        "nodes_alive": nodes,
        "seconds": round(time.monotonic() - began, 3),
    }


def _journal_restart(
    head: dict[str, Any], target: dict[str, str], configuration: Configuration
) -> tuple[str, journal.Injection]:
    """Journal a head's restart before it happens (nothing to undo: the journal, like the
    fault's, says what the harness did and to which head); the journal's path and the line."""
    from . import faults

    path = faults.journal_path(configuration)
    injection = journal.Injection(
        "restart_head",
        target,
        {k: head[k] for k in ("pid", "create_time", "cmdline") if k in head},
        "start",
        None,
        0.0,
    )
    journal.write_injection(path, injection)
    return path, injection


def _restart_in_session(
    session: str, head: dict[str, Any], timeout: float, configuration: Configuration
) -> dict[str, Any]:
    """Start a head that `freight start` did not start again in its session folder, on the
    control store it ran on, with its address and metrics port, detached; journalled; once every
    node is ALIVE, what it did."""
    from . import faults

    address = str(head.get("address") or "")
    host, _, port = address.rpartition(":")
    metrics_port = str(head.get("metrics_address") or ":0").rpartition(":")[2]
    target = {"kind": "head", "id": address, "node_id": ""}
    if faults.dry_run(configuration):
        return faults.planned(
            targets.cluster(configuration), "restart_head", target, run=f"head in {session}"
        )
    path, injection = _journal_restart(head, target, configuration)
    began = time.monotonic()
    try:
        proc, new_address = _launcher.start_head(
            session,
            int(port),
            str(head.get("cluster_name") or "freight"),
            attached=False,
            bind=host,
            metrics_port=int(metrics_port or 0),
        )
        # The head outlives this call; a thread reaps it whenever it ends (no zombie left).
        threading.Thread(target=proc.wait, name="restarted-head", daemon=True).start()
        nodes = _wait_nodes(configuration, began + timeout)
    finally:
        journal.write_end(path, injection.id, "started")
    return {
        "result": "started",
        "pid": proc.pid,
        "address": new_address,
        "nodes_alive": nodes,
        "seconds": round(time.monotonic() - began, 3),
    }


def _wait_nodes(configuration: Configuration, deadline: float) -> int:
    """Wait until the restarted head lists every node it knows as ALIVE again (the agents that
    outlived it re-register at their next heartbeat): how many are."""
    from freight import state

    while True:
        try:
            cluster = targets.cluster(configuration)
            rows = state.list_state("nodes", [], limit=10_000, address=cluster)
        except (ConnectionError, access.CommandFailed):
            rows = None
        if rows is not None:
            alive = [n for n in rows if n["state"] == "ALIVE"]
            if alive and len(alive) == len([n for n in rows if n["state"] != "DEAD"]):
                return len(alive)
        if time.monotonic() >= deadline:
            raise access.CommandFailed(
                "the head started again, but not every node it knows is ALIVE: see "
                "`freight list nodes` and each agent's log"
            )
        time.sleep(POLL_S)  # waiting for other processes to re-register; bounded by the deadline
