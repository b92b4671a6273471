"""`freight monitoring up|status|down`: Prometheus and Alertmanager for the running cluster.

``up`` writes, under ``<session>/monitoring/``, a ``prometheus.yml`` scraping the cluster through
the head's file-SD document (as ``freight metrics prometheus-config`` does) with the shipped rule
files loaded, and the shipped ``alertmanager.yml`` (receivers optionally pointed at webhooks),
then starts both servers bound to 127.0.0.1 with their data in that folder. ``monitoring.json``
records each server's pid with its start time and command line, so ``status`` and ``down`` never
mistake a later process that got the same pid for one of them (as freight does for its own
processes: :func:`freight.util.process.is_recorded_process`).

For drills, ``--time-scale N`` divides every duration of the pack by N (each rule's ``for``,
Alertmanager's ``resolve_timeout``, ``group_wait``, ``group_interval`` and ``repeat_interval``)
and nothing else, and ``--pager`` runs the pager sink (:mod:`freight.chaos.pager`) as a third
server, the receivers pointed at it: a page reaches the sink's log within seconds of its cause,
where the ``page_received`` probe of an experiment reads it.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, replace
from typing import Any

from freight.client import access
from freight.util.process import identity, is_recorded_process

from . import common, metrics_cmd, oncall_pack

INSTALL_HINT = "apt-get install prometheus prometheus-alertmanager"
# Debian names the Alertmanager binary prometheus-alertmanager; upstream's is alertmanager.
BINARIES = {
    "prometheus": ("prometheus",),
    "alertmanager": ("prometheus-alertmanager", "alertmanager"),
}
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
STATE_FILE = "monitoring.json"
PAGER_LOG = "pages.jsonl"  # the pager sink's log, in the monitoring folder
PAGER_KEY = "pager-routing-key"  # the drill's PagerDuty routing key, for the pager sink
DRILL_LABEL = "drill"  # the external label a drill's alerts carry: "time-scale N"
# Alertmanager's defaults for what the root route and the global section leave out.
AM_DEFAULTS = {"group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"}
AM_RESOLVE_TIMEOUT = "5m"
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Server:
    """One server ``up`` started, as ``monitoring.json`` records it."""

    name: str
    url: str
    process: dict[str, Any]  # identity(): pid, create_time, cmdline
    log: str
    time_scale: float = 1.0  # the drill's --time-scale (1: the pack's own durations)


def _fail(message: str) -> SystemExit:
    return SystemExit(f"freight monitoring: {message}")


def _binary(name: str) -> str:
    for candidate in BINARIES[name]:
        path = shutil.which(candidate)
        if path:
            return path
    raise _fail(
        f"{name} is not installed ({' or '.join(BINARIES[name])} not on PATH); install it "
        f"with `{INSTALL_HINT}`."
    )


def _check_port(port: int, option: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise _fail(
                    f"cannot listen on 127.0.0.1:{port} ({e.strerror}); pass another {option}."
                )
            raise _fail(
                f"port {port} on 127.0.0.1 is taken by another program; pass another {option}."
            )


def _monitoring_dir(session_dir: str) -> str:
    return os.path.join(session_dir, "monitoring")


def read_state(session_dir: str) -> list[Server]:
    try:
        with open(os.path.join(_monitoring_dir(session_dir), STATE_FILE), encoding="utf-8") as f:
            return [Server(**s) for s in json.load(f)]
    except (OSError, ValueError, TypeError):
        return []


def scale_duration(duration: str, scale: float) -> str:
    """A Prometheus/Alertmanager duration (``1h30m``) divided by ``scale``, in whole ms (at
    least 1 ms when it was not zero: Alertmanager refuses a zero group interval)."""
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", str(duration))
    if not parts or "".join(n + u for n, u in parts) != str(duration):
        raise _fail(
            f"{duration!r} in the on-call pack is not a duration (like 30s, 5m or 1h30m); fix "
            "the pack (FREIGHT_ONCALL_DIR)"
        )
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if scale == 1 or seconds == 0:
        return str(duration)
    ms = max(1, round(seconds * 1000 / scale))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def check_time_scale(scale: float) -> float:
    if not math.isfinite(scale) or scale <= 0:
        raise _fail(
            f"--time-scale {scale:g}: give a positive number, the factor every alert duration is "
            "divided by in a drill (60: a rule's `for: 1m` waits 1 s)."
        )
    return scale


def _rules(folder: str, time_scale: float = 1.0) -> list[str]:
    """Copy the shipped rule files into ``folder`` with runbook URLs under the configured base
    (and, in a drill, each ``for`` divided by ``time_scale``)."""
    import yaml

    os.makedirs(folder, exist_ok=True)
    written = []
    for source in oncall_pack.rule_files():
        doc = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        for group in doc.get("groups") or []:
            for rule in group.get("rules") or []:
                for key in ("for", "keep_firing_for"):  # a rule's durations
                    if key in rule:
                        rule[key] = scale_duration(rule[key], time_scale)
                notes = rule.get("annotations") or {}
                if "runbook_url" in notes:
                    notes["runbook_url"] = oncall_pack.rebase_runbook_url(notes["runbook_url"])
        path = os.path.join(folder, source.name)
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(doc, f, sort_keys=False)
        written.append(path)
    return written


def _webhooks(specs: list[str], receivers: list[str]) -> dict[str, str]:
    """``--webhook`` values (``URL`` for every receiver, or ``RECEIVER=URL``) as receiver → URL."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, url = spec.partition("=")
        if not sep or "://" in name:
            name, url = "", spec
        if not url.startswith(("http://", "https://")):
            raise _fail(f"--webhook {spec!r}: give URL or RECEIVER=URL with an http(s) URL.")
        if name and name not in receivers:
            raise _fail(
                f"--webhook {spec!r}: there is no receiver {name!r} in the routing; "
                f"the receivers are {', '.join(receivers) or 'none'}."
            )
        for r in [name] if name else receivers:
            out[r] = url
    return out


def _pagerduty(url: str | None, key_file: str | None) -> dict[str, str]:
    """``--pagerduty-url`` and ``--pagerduty-key-file`` as the PagerDuty settings they replace."""
    out = {}
    if url is not None:
        if not url.startswith(("http://", "https://")):
            raise _fail(
                f"--pagerduty-url {url!r}: give the http(s) URL of a PagerDuty Events API v2 "
                "endpoint, like https://events.eu.pagerduty.com/v2/enqueue."
            )
        out["url"] = url
    if key_file is not None:
        path = os.path.abspath(key_file)
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise _fail(
                f"--pagerduty-key-file {key_file}: no readable file there; write the PagerDuty "
                "routing key into it (one line), readable by you only (chmod 600)."
            )
        out["routing_key_file"] = path
    return out


def _scale_route(route: dict[str, Any], scale: float) -> None:
    for key in AM_DEFAULTS:
        if key in route:
            route[key] = scale_duration(route[key], scale)
    for child in route.get("routes") or []:
        _scale_route(child, scale)


def alertmanager_config(
    webhooks: list[str],
    pagerduty_url: str | None = None,
    pagerduty_key_file: str | None = None,
    time_scale: float = 1.0,
    pager: str | None = None,
) -> dict[str, Any]:
    """The shipped routing; receivers named by ``--webhook`` send to that URL instead, and the
    PagerDuty receivers send to ``pagerduty_url`` with the key of ``pagerduty_key_file``. With
    ``pager`` (the pager sink's URL), every other receiver that sends anywhere sends to
    ``pager/<its name>`` (the PagerDuty ones as PagerDuty events). With ``time_scale``, every
    duration is divided by it (those Alertmanager defaults too)."""
    import yaml

    shipped = oncall_pack.alertmanager_file()
    if shipped is None:  # no routing shipped: everything to one receiver (a webhook, if given)
        doc: dict[str, Any] = {"route": {"receiver": "default"}, "receivers": [{"name": "default"}]}
    else:
        doc = yaml.safe_load(shipped.read_text(encoding="utf-8")) or {}
    receivers = doc.get("receivers") or []
    targets = _webhooks(webhooks, [r["name"] for r in receivers])
    pagerduty = _pagerduty(pagerduty_url, pagerduty_key_file)
    for receiver in receivers:
        if receiver["name"] in targets:
            for key in [k for k in receiver if k.endswith("_configs")]:
                del receiver[key]
            receiver["webhook_configs"] = [
                {"url": targets[receiver["name"]], "send_resolved": True}
            ]
        for config in receiver.get("pagerduty_configs") or []:
            if "routing_key_file" in pagerduty:  # one key source: the file given
                config.pop("routing_key", None)
            config.update(pagerduty)
        if pager and receiver["name"] not in targets:
            url = f"{pager}/{receiver['name']}"
            for config in receiver.get("pagerduty_configs") or []:
                config["url"] = url
            if any(k.endswith("_configs") for k in receiver) and not receiver.get(
                "pagerduty_configs"
            ):
                for key in [k for k in receiver if k.endswith("_configs")]:
                    del receiver[key]
                receiver["webhook_configs"] = [{"url": url, "send_resolved": True}]
    if time_scale != 1:
        route = doc.setdefault("route", {})
        for key, default in AM_DEFAULTS.items():
            route.setdefault(key, default)
        glob = doc.setdefault("global", {}) or {}
        doc["global"] = glob
        glob["resolve_timeout"] = glob.get("resolve_timeout", AM_RESOLVE_TIMEOUT)
        glob["resolve_timeout"] = scale_duration(glob["resolve_timeout"], time_scale)
        _scale_route(route, time_scale)
    return doc


def _wait_ready(name: str, proc: subprocess.Popen[bytes], url: str, log: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log, encoding="utf-8", errors="replace") as f:
                tail = f.read()[-2000:]
            raise _fail(f"{name} exited with code {proc.returncode}; its log ({log}) ends:\n{tail}")
        try:
            with _NO_PROXY.open(url + "/-/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)  # polling a server that gives no other signal; bounded by the deadline
    proc.terminate()
    raise _fail(f"{name} did not answer at {url} within {READY_TIMEOUT_S:.0f} s; see {log}.")


def _start(name: str, argv: list[str], url: str, folder: str) -> Server:
    log = os.path.join(folder, f"{name}.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this command, as the cluster's processes do
        )
    _wait_ready(name, proc, url, log)
    return Server(name=name, url=url, process=identity(proc.pid), log=log)


def cmd_up(args: argparse.Namespace) -> int:
    if not metrics_cmd._DURATION.fullmatch(args.scrape_interval):
        raise _fail(
            f"--scrape-interval {args.scrape_interval!r} is not a Prometheus duration; "
            "write it like 15s, 500ms or 1m."
        )
    scale = check_time_scale(args.time_scale)
    ports = [
        ("--prometheus-port", args.prometheus_port),
        ("--alertmanager-port", args.alertmanager_port),
    ]
    if args.pager:
        ports.append(("--pager-port", args.pager_port))
        if args.pagerduty_url is not None:
            raise _fail(
                "--pager sends the pages to the pager sink; --pagerduty-url sends them to "
                "PagerDuty: give one of them."
            )
    for option, port in ports:
        if not 1 <= port <= 65535:
            raise _fail(f"{option} {port} is not a TCP port (1-65535).")
    if len({port for _, port in ports}) < len(ports):
        raise _fail(f"{', '.join(option for option, _ in ports)} must differ.")
    prometheus, alertmanager = _binary("prometheus"), _binary("alertmanager")
    info = metrics_cmd.metrics_info(args.address)
    session_dir = info["session_dir"]
    if not session_dir:
        raise _fail(
            "the cluster's session directory is not on this machine; run `freight "
            "monitoring up` where the head runs (Prometheus reads its file-SD document)."
        )
    running = [s for s in read_state(session_dir) if is_recorded_process(s.process)]
    if running:
        urls = ", ".join(f"{s.name} {s.url}" for s in running)
        raise _fail(f"already running for this cluster ({urls}); `freight monitoring down` first.")
    folder = _monitoring_dir(session_dir)
    pager_url = f"http://127.0.0.1:{args.pager_port}" if args.pager else None
    am_config = alertmanager_config(
        args.webhook, args.pagerduty_url, args.pagerduty_key_file, scale, pager_url
    )
    for option, port in ports:
        _check_port(port, option)

    os.makedirs(folder, mode=0o700, exist_ok=True)
    if args.pager and args.pagerduty_key_file is None:
        # PagerDuty receivers need a routing key; the sink takes any: a drill key of its own.
        key_file = os.path.join(folder, PAGER_KEY)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("freight-drill\n")
        am_config = alertmanager_config(args.webhook, None, key_file, scale, pager_url)
    am_url = f"http://127.0.0.1:{args.alertmanager_port}"
    prom_url = f"http://127.0.0.1:{args.prometheus_port}"
    rules = _rules(os.path.join(folder, "rules"), scale)
    prom_config = metrics_cmd.prometheus_config(info, False, args.scrape_interval)
    if scale != 1:  # every alert of a drill says so, wherever it goes
        prom_config["global"]["external_labels"] = {DRILL_LABEL: f"time-scale {scale:g}"}
    prom_config["rule_files"] = rules
    prom_config["alerting"] = {
        "alertmanagers": [
            {"static_configs": [{"targets": [f"127.0.0.1:{args.alertmanager_port}"]}]}
        ]
    }
    import yaml

    prom_file = os.path.join(folder, "prometheus.yml")
    am_file = os.path.join(folder, "alertmanager.yml")
    for path, doc in ((prom_file, prom_config), (am_file, am_config)):
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(doc, f, sort_keys=False)

    started = []
    if pager_url:  # first: Alertmanager may send as soon as it runs
        started.append(
            _start(
                "pager",
                [
                    sys.executable,
                    "-m",
                    "freight.chaos.pager",
                    "--port",
                    str(args.pager_port),
                    "--log",
                    os.path.join(folder, PAGER_LOG),
                ],
                pager_url,
                folder,
            )
        )
    try:
        started.append(
            _start(
                "alertmanager",
                [
                    alertmanager,
                    f"--config.file={am_file}",
                    f"--storage.path={os.path.join(folder, 'alertmanager-data')}",
                    f"--web.listen-address=127.0.0.1:{args.alertmanager_port}",
                    f"--web.external-url={am_url}",
                    "--cluster.listen-address=",
                ],  # a single server: no gossip port
                am_url,
                folder,
            )
        )
        started.append(
            _start(
                "prometheus",
                [
                    prometheus,
                    f"--config.file={prom_file}",
                    f"--storage.tsdb.path={os.path.join(folder, 'prometheus-data')}",
                    f"--web.listen-address=127.0.0.1:{args.prometheus_port}",
                    f"--web.external-url={prom_url}",
                    # Alerts that fire at the first evaluation go out before Prometheus has
                    # found Alertmanager, and are sent again only after the resend delay (1m by
                    # default): with a shorter interval, resend that often.
                    f"--rules.alert.resend-delay={_resend_delay(args.scrape_interval)}",
                ],
                prom_url,
                folder,
            )
        )
    except SystemExit:
        _stop(started)
        raise
    started = [replace(s, time_scale=scale) for s in started]
    with open(os.path.join(folder, STATE_FILE), "w", encoding="utf-8") as f:
        json.dump([asdict(s) for s in started], f, indent=2)
    print(f"prometheus:   {prom_url}  ({len(rules)} rule files, scraping {info['cluster_name']!r})")
    print(f"alertmanager: {am_url}")
    if pager_url:
        print(f"pager sink:   {pager_url}  (pages to {os.path.join(folder, PAGER_LOG)})")
    if scale != 1:
        print(f'{_drill(scale)}; alerts carry {DRILL_LABEL}="time-scale {scale:g}"')
    print(f"files and data: {folder}")
    if not rules:
        print("note: no alert rule files are installed; Prometheus runs without rules")
    return 0


def _stop(servers: list[Server]) -> list[str]:
    """SIGTERM each server still running as recorded, SIGKILL after STOP_TIMEOUT_S; their names."""
    stopped = []
    for s in servers:
        if not is_recorded_process(s.process):
            continue
        os.kill(s.process["pid"], signal.SIGTERM)
        stopped.append(s.name)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for s in servers:
        while is_recorded_process(s.process):
            if time.monotonic() > deadline:
                os.kill(s.process["pid"], signal.SIGKILL)
                break
            time.sleep(0.05)  # waiting for another process's exit, bounded by the deadline
    return stopped


def _drill(scale: float) -> str:
    return (
        f"drill: every alert duration divided by {scale:g} (each rule's for, Alertmanager's "
        "group_wait, group_interval, repeat_interval, resolve_timeout)"
    )


def pager_log(session_dir: str) -> str | None:
    """The log of the pager sink `freight monitoring up --pager` runs for ``session_dir``, if
    it runs one."""
    if any(s.name == "pager" for s in read_state(session_dir)):
        return os.path.join(_monitoring_dir(session_dir), PAGER_LOG)
    return None


def _resend_delay(interval: str) -> str:
    """Prometheus's alert resend delay for a scrape and evaluation ``interval``: that interval,
    up to Prometheus's default of 1m."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    seconds = sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h)", interval))
    return interval if 0 < seconds < 60 else "1m"


def _session_dir(address: str | None) -> str:
    """The session whose monitoring ``status``/``down`` mean: found without asking the head, so
    they work while the head is down (which is when the alerts matter)."""
    return access.resolve_session(address)


def cmd_status(args: argparse.Namespace) -> int:
    servers = read_state(_session_dir(args.address))
    if not servers:
        print("monitoring is not running for this cluster (`freight monitoring up` starts it)")
        return 1
    up = 0
    for s in servers:
        alive = is_recorded_process(s.process)
        up += alive
        state = f"running (pid {s.process['pid']})" if alive else "stopped"
        print(f"{s.name:<13} {s.url:<24} {state}")
    if servers[0].time_scale != 1:
        print(_drill(servers[0].time_scale))
    return 0 if up == len(servers) else 1


def stop_monitoring(session_dir: str) -> list[str]:
    """Stop the servers ``up`` started for ``session_dir``; the names of those that ran."""
    stopped = _stop(read_state(session_dir))
    try:
        os.remove(os.path.join(_monitoring_dir(session_dir), STATE_FILE))
    except FileNotFoundError:
        pass
    return stopped


def cmd_down(args: argparse.Namespace) -> int:
    stopped = stop_monitoring(_session_dir(args.address))
    print(f"stopped {', '.join(stopped)}" if stopped else "monitoring was not running")
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("monitoring", help="run Prometheus and Alertmanager for the cluster")
    msub = p.add_subparsers(dest="monitoring_command", metavar="SUBCOMMAND", required=True)
    up = msub.add_parser(
        "up",
        help="start Prometheus (rules loaded) and Alertmanager (shipped routing)",
        description="Start Prometheus, scraping the cluster through the head's file-SD document "
        "with the shipped alert rules, and Alertmanager with the shipped routing, both on "
        "127.0.0.1 with their data under <session>/monitoring/.",
    )
    up.add_argument("--prometheus-port", type=int, default=9090, help="default 9090")
    up.add_argument("--alertmanager-port", type=int, default=9093, help="default 9093")
    up.add_argument(
        "--webhook",
        action="append",
        default=[],
        metavar="[RECEIVER=]URL",
        help="send a receiver's notifications to this webhook (no RECEIVER: every receiver); "
        "repeatable",
    )
    up.add_argument(
        "--pagerduty-url",
        metavar="URL",
        help="PagerDuty Events API v2 endpoint the paging receivers send to (default: "
        "PagerDuty's; e.g. https://events.eu.pagerduty.com/v2/enqueue for an EU account)",
    )
    up.add_argument(
        "--pagerduty-key-file",
        metavar="FILE",
        help="read the PagerDuty routing key from FILE instead of the path the routing names",
    )
    up.add_argument(
        "--scrape-interval", default="15s", help="scrape and rule evaluation interval (default 15s)"
    )
    up.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="N",
        help="a drill: divide every alert duration by N (each rule's for, Alertmanager's group_wait, "
        "group_interval, repeat_interval, resolve_timeout); expressions, labels and routes stay. "
        "60: FreightHeadDown pages within seconds of the head's death (default 1)",
    )
    up.add_argument(
        "--pager",
        action="store_true",
        help="run the pager sink too (python -m freight.chaos.pager) and point the receivers at "
        "it (the paging one as PagerDuty events; --webhook ones excepted): pages go to "
        "<session>/monitoring/pages.jsonl, where the page_received probe reads them",
    )
    up.add_argument("--pager-port", type=int, default=9096, help="with --pager; default 9096")
    for q in (
        up,
        msub.add_parser("status", help="whether Prometheus and Alertmanager run"),
        msub.add_parser("down", help="stop Prometheus and Alertmanager"),
    ):
        common.add_address_option(q)
    up.set_defaults(func=cmd_up)
    msub.choices["status"].set_defaults(func=cmd_status)
    msub.choices["down"].set_defaults(func=cmd_down)
