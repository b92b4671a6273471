"""What a game day watches across its run: the probes sampled on a clock (for the timeline
chart), and, with the on-call pack, the alerts Alertmanager fires and the pages that reach the
game day's pager sink (with their arrival times).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from .. import probes

SAMPLE_EVERY_S = 1.0
SERIES = ("nodes_alive", "tasks_pending")


@dataclass(frozen=True)
class Sample:
    """One reading of the probes; None where the probe failed (the head away, say)."""

    time: float
    values: dict[str, float | None]


class Sampler:
    """Reads :data:`SERIES` every :data:`SAMPLE_EVERY_S` seconds in a thread of its own."""

    def __init__(self, address: str) -> None:
        self._configuration = {"freight_address": address}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._samples: list[Sample] = []
        self._thread = threading.Thread(target=self._run, name="gameday-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def _read(self, name: str) -> float | None:
        try:
            return float(getattr(probes, name)(configuration=self._configuration))
        except Exception:  # a probe that cannot answer is a gap in the chart, not an error
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = Sample(time.time(), {name: self._read(name) for name in SERIES})
            with self._lock:
                self._samples.append(sample)
            self._stop.wait(SAMPLE_EVERY_S)  # the sampling clock, not a synchronisation

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


class Oncall:
    """The on-call pack's view of the run: when each alert first fired in Alertmanager, and
    when each page reached the pager sink (a :class:`freight.testing.WebhookReceiver`)."""

    PAGE_PATH = "/page"

    def __init__(self, alertmanager_url: str) -> None:
        from freight.testing import WebhookReceiver

        self.alertmanager_url = alertmanager_url.rstrip("/")
        self.sink = WebhookReceiver()
        # The sink stamps arrivals on the monotonic clock; the report speaks wall-clock time.
        self._wall_offset = time.time() - time.monotonic()

    @property
    def page_url(self) -> str:
        return self.sink.url + self.PAGE_PATH

    def alert_started(self, alert: str) -> float | None:
        """When Alertmanager says ``alert`` started firing (unix time), if it fires now."""
        if not self.alertmanager_url:
            return None
        query = urllib.parse.urlencode({"filter": f'alertname="{alert}"', "active": "true"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{self.alertmanager_url}/api/v2/alerts?{query}", timeout=5) as r:
                alerts = json.loads(r.read())
        except (OSError, ValueError):
            return None
        from datetime import datetime

        starts = [
            datetime.fromisoformat(str(a["startsAt"]).replace("Z", "+00:00")).timestamp()
            for a in alerts
            if a.get("startsAt")
        ]
        return min(starts) if starts else None

    def page_received(self, alert: str, since: float) -> tuple[float, str] | None:
        """When the first page naming ``alert`` reached the sink at or after ``since``, and
        the runbook link it carries ("" for none)."""
        for post in self.sink.posts(self.PAGE_PATH):
            at = post.at + self._wall_offset
            if at >= since and alert in json.dumps(post.body):
                return at, runbook_url(post.body)
        return None

    def pages(self) -> list[tuple[float, Any]]:
        return [(p.at + self._wall_offset, p.body) for p in self.sink.posts()]

    def stop(self) -> None:
        self.sink.stop()


def runbook_url(body: Any) -> str:
    """The runbook link of a page (a PagerDuty event from Alertmanager carries it in its
    details), or ""."""
    payload = body.get("payload") if isinstance(body, dict) else None
    details = payload.get("custom_details") if isinstance(payload, dict) else None
    url = details.get("runbook_url") if isinstance(details, dict) else None
    return str(url or "")
