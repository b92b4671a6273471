"""Where a game day runs: the plan's own cluster (started with :class:`freight.testing.Cluster`
and stopped after, with a head a step started again), and the on-call pack watching it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from freight.client import access

from .plan import ClusterSpec, MonitoringSpec
from .watch import Oncall


@contextlib.contextmanager
def cluster(spec: ClusterSpec | None, address: str | None) -> Iterator[str]:
    """The address of the cluster a run acts on: the one ``address`` names (or the one found
    the usual way) when given or when the plan brings none, else the plan's own, started here
    and stopped after."""
    if spec is None or address:
        yield access.resolve(address).address
        return
    from freight.testing import Cluster

    try:
        own = Cluster(network_namespaces=spec.network_namespaces)
    except RuntimeError as e:  # network namespaces need root
        raise access.CommandFailed(f"the plan's cluster cannot start: {e}") from None
    try:
        for _ in range(spec.nodes):
            try:
                own.add_node(
                    num_cpus=spec.cpus, object_store_memory=spec.object_store_mb * 1024 * 1024
                )
            except (RuntimeError, TimeoutError) as e:  # a process that failed to start
                raise access.CommandFailed(f"the plan's cluster cannot start: {e}") from None
        yield own.address
    finally:
        _stop_cluster(own)


@contextlib.contextmanager
def monitoring(spec: MonitoringSpec, address: str, out_dir: str) -> Iterator[Oncall]:
    """The on-call pack's view of the run: `freight monitoring up` for it (stopped after) unless
    the plan names an Alertmanager already watching."""
    oncall = Oncall(spec.alertmanager_url)
    started = False
    try:
        if spec.up and not spec.alertmanager_url:
            oncall.alertmanager_url = _monitoring_up(address, oncall, out_dir, spec.time_scale)
            started = True
        yield oncall
    finally:
        if started:
            _freight("monitoring", "down", "--address", address)
        oncall.stop()


def _freight(*argv: str) -> subprocess.CompletedProcess[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "freight")
    return subprocess.run([exe, *argv], capture_output=True, text=True, timeout=300)


def _monitoring_up(address: str, oncall: Oncall, out_dir: str, time_scale: float) -> str:
    """`freight monitoring up` for the cluster, its paging receiver pointed at the sink; the
    Alertmanager URL."""
    import socket

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    key = os.path.join(out_dir, "pager-routing-key")
    with open(key, "w", encoding="utf-8") as f:
        f.write("gameday\n")
    am_port = free_port()
    out = _freight(
        "monitoring",
        "up",
        "--address",
        address,
        "--prometheus-port",
        str(free_port()),
        "--alertmanager-port",
        str(am_port),
        "--pagerduty-url",
        oncall.page_url,
        "--pagerduty-key-file",
        key,
        "--webhook",
        oncall.sink.url + "/hook",
        "--scrape-interval",
        "1s",
        "--time-scale",
        f"{time_scale:g}",
    )
    if out.returncode != 0:
        raise access.CommandFailed(
            f"`freight monitoring up` failed, so nothing watches the alerts: {out.stderr.strip()}"
        )
    return f"http://127.0.0.1:{am_port}"


def _stop_cluster(cluster: Any) -> None:
    """Stop the game day's own cluster, and a head a step started again in its place."""
    cluster.shutdown()
