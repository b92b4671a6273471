"""The pager sink: an HTTP server that stands in for the on-call's pager during a drill.

It answers every JSON POST with 200 ``{}`` (as a webhook receiver and PagerDuty's Events API v2
answer Alertmanager), keeps it with its arrival time and, given a log file, appends it there as
one JSON line (``{"time", "path", "body"}``, unix time) under a lock, flushed, so that another
process (the ``page_received`` probe of an experiment) reads what arrived. The path of a post
names the receiver that sent it (`freight monitoring up --pager` points the ``page`` receiver at
``/page``, every other receiver at ``/<its name>``). ``GET /-/ready`` answers 200, so the sink is
started and waited for like Prometheus and Alertmanager.

Run it in a thread (:class:`PagerSink`, as tests do) or as its own process
(``python -m freight.chaos.pager --port N --log FILE``, as `freight monitoring up --pager` does).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from freight.util.private_files import check_owned

MAX_BODY = 4 * 1024 * 1024  # Alertmanager's posts are a few kB; a bigger one is no page


@dataclass(frozen=True)
class Post:
    """One POST the sink received."""

    at: float  # time.monotonic() on arrival (for waits in this process)
    path: str
    authorization: str  # the Authorization header, "" when there is none
    body: Any  # the JSON body
    time: float = 0.0  # unix time on arrival (what the log keeps, for other processes)


class PagerSink:
    """The sink as a thread of this process, on ``host``:``port`` (0: a free port); with
    ``log``, every post is appended to that JSONL file too. A context manager."""

    def __init__(self, log: str | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self._posts: list[Post] = []
        self._lock = threading.Lock()
        self.log = os.path.abspath(log) if log else None
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/-/ready":
                    self._answer(200, {})
                else:
                    self._answer(404, {"error": "the pager sink takes POSTs; GET /-/ready only"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._answer(413, {"error": f"a post is at most {MAX_BODY} bytes"})
                    return
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"null")
                except ValueError as e:
                    self._answer(
                        400,
                        {
                            "error": f"the body is not JSON ({e}); the pager sink takes "
                            "Alertmanager webhook posts and PagerDuty Events v2 events"
                        },
                    )
                    return
                sink._keep(
                    Post(
                        time.monotonic(),
                        self.path,
                        self.headers.get("Authorization", ""),
                        body,
                        time.time(),
                    )
                )
                self._answer(200, {})

            def _answer(self, status: int, doc: dict[str, Any]) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass  # the posts are the record; no access log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _keep(self, post: Post) -> None:
        with self._lock:
            self._posts.append(post)
            if self.log is not None:
                append(self.log, post)

    def posts(self, path: str | None = None, since: float = 0.0) -> list[Post]:
        """The posts received so far (to ``path``, if given; arrived at or after ``since``, a
        time.monotonic())."""
        with self._lock:
            return [p for p in self._posts if (path is None or p.path == path) and p.at >= since]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> PagerSink:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def append(path: str, post: Post) -> None:
    """Append ``post`` to the log at ``path`` (created 0600), whole lines only."""
    line = json.dumps({"time": post.time, "path": post.path, "body": post.body}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a reader never sees half a line of two writers
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Logged:
    """One post as the log keeps it."""

    time: float  # unix time it arrived
    path: str
    body: Any


def read(path: str) -> list[Logged]:
    """The posts of the log at ``path``, oldest first; FileNotFoundError when there is none. A
    last line cut short (the sink was writing it) is left for the next read."""
    check_owned(path, "the pager sink's log")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = []
    for line in text.split("\n")[:-1]:  # the part after the last newline is not written yet
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            out.append(Logged(float(record["time"]), str(record["path"]), record["body"]))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"{path} is not a pager sink's log (a line is not a post: {e}); point "
                "freight_pager_log at the file the sink writes"
            ) from None
    return out


@dataclass(frozen=True)
class Page:
    """A notification for one alert, read from an Alertmanager webhook post or a PagerDuty
    Events v2 event."""

    alertname: str
    firing: bool  # a trigger (PagerDuty) or a firing alert (webhook); False: resolved
    runbook_url: str  # the link the page carries, "" when none


_ALERTNAME = re.compile(r"^\s*-\s*alertname\s*=\s*(\S+)\s*$", re.MULTILINE)


def pages(body: Any) -> Iterator[Page]:
    """The alerts a post notifies: every alert of an Alertmanager webhook post; the alert of a
    PagerDuty event (its ``alertname`` detail, else the alert names Alertmanager's default
    ``firing`` detail lists). Anything else notifies nothing."""
    if not isinstance(body, dict):
        return
    if isinstance(body.get("alerts"), list):  # Alertmanager's webhook
        common = body.get("commonAnnotations") or {}
        for alert in body["alerts"]:
            if not isinstance(alert, dict):
                continue
            labels, notes = alert.get("labels") or {}, alert.get("annotations") or {}
            yield Page(
                str(labels.get("alertname", "")),
                alert.get("status", body.get("status")) == "firing",
                str(notes.get("runbook_url") or common.get("runbook_url") or ""),
            )
    elif "event_action" in body:  # PagerDuty Events v2
        details = (body.get("payload") or {}).get("custom_details") or {}
        if not isinstance(details, dict):
            return
        names = [str(details["alertname"])] if details.get("alertname") else []
        names = names or _ALERTNAME.findall(str(details.get("firing") or ""))
        for name in dict.fromkeys(names):
            yield Page(
                name, body["event_action"] == "trigger", str(details.get("runbook_url") or "")
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m freight.chaos.pager",
        description="Receive Alertmanager's webhook posts and PagerDuty events on HOST:PORT and "
        "append each, with its arrival time, to LOG (JSONL). Stops on SIGTERM or SIGINT.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    p.add_argument("--log", required=True, help="the JSONL file the posts are appended to")
    args = p.parse_args(argv)
    sink = PagerSink(args.log, args.host, args.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"pager sink: {sink.url}, posts to {sink.log}", flush=True)
    stop.wait()
    sink.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
