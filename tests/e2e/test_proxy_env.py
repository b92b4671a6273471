"""A user's proxy settings never reach freight's own connections.

gRPC dials through ``grpc_proxy`` / ``https_proxy`` / ``http_proxy`` and urllib through
``http_proxy``. A freight process talks only to processes of its own cluster, which such a proxy
cannot reach; here every proxy variable points at a local port that refuses connections, and a
driver, a task, an actor call, ``freight status`` and the metrics targets must all still work.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from freight.testing import short_temp_dir

PROXY_VARIABLES = ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY")


@pytest.fixture
def dead_proxy() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` where nothing listens: the port is bound (so nobody else takes
    it) but never listened on, so every connection to it is refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


DRIVER = """
    import json, os, subprocess, sys
    import freight as ray
    from freight.cli.metrics_cmd import fetch_targets, metrics_info

    info = ray.init(num_cpus=1)

    @ray.remote
    def plus_one(x):
        return x + 1

    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def add(self, k):
            self.n += k
            return self.n

    task = ray.get(plus_one.remote(41), timeout=60)
    counter = Counter.remote()
    actor = ray.get(counter.add.remote(7), timeout=60)
    freight = os.path.join(os.path.dirname(sys.executable), "freight")
    status = subprocess.run(
        [freight, "status", "-o", "json", "--address", info["address"]],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    # Without the file-SD fallback, so that only the head's /sd over HTTP can answer.
    where = dict(metrics_info(info["address"]), file_sd="/nonexistent/freight-sd.json")
    targets = fetch_targets(where)
    print(json.dumps({
        "task": task,
        "actor": actor,
        "status_rc": status.returncode,
        "status_err": status.stderr[-2000:],
        "nodes": len(json.loads(status.stdout)["nodes"]) if status.returncode == 0 else None,
        "targets": len(targets),
    }))
    ray.shutdown()
"""


def test_driver_tasks_actors_and_cli_ignore_proxy_variables(dead_proxy: str) -> None:
    with short_temp_dir() as temp_dir:
        env = dict(os.environ, FREIGHT_TEMP_DIR=str(temp_dir), PYTHONUNBUFFERED="1")
        for name in ("FREIGHT_ADDRESS", "FREIGHT_TOKEN", "no_proxy", "NO_PROXY"):
            env.pop(name, None)
        env.update(dict.fromkeys(PROXY_VARIABLES, dead_proxy))
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(DRIVER)],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["status_rc"] == 0, result["status_err"]
        assert result["task"] == 42
        assert result["actor"] == 7
        assert result["nodes"] == 1
        assert result["targets"] >= 1


def test_every_grpc_channel_is_built_in_one_place() -> None:
    """Channel options (no proxy, message sizes, reconnect backoff, TLS) hold only for channels
    built by ``freight.util.grpc_auth``; a channel built anywhere else would miss them."""
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for folder in ("runtime", "observe", "tui", "chaos"):
        for path in (root / folder).rglob("*.py"):
            if "generated" in path.parts or path.name == "grpc_auth.py":
                continue
            text = path.read_text(encoding="utf-8")
            if "insecure_channel(" in text or "secure_channel(" in text:
                offenders.append(str(path.relative_to(root)))
    assert offenders == [], f"build channels with freight.util.grpc_auth instead: {offenders}"
