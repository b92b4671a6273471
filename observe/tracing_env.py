"""Which tracing configuration a process follows, and what a driver is told when it differs.

The cluster's processes take the tracing configuration of the cluster they belong to: the head
and the node agents from the environment of ``freight start`` (or of the driver that started a
private cluster), workers from their agent. The head publishes its configuration; a driver that
joins a cluster compares its own with it (:func:`reconcile`):

- a driver with no tracing setting of its own follows the cluster (so a cluster started with
  ``OTEL_*`` variables traces the tasks of every driver, whose spans start the traces);
- a driver whose own setting differs keeps it for its own spans and gets one warning line
  saying what is in effect where and how to change it.

``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` name a process, so they are never
compared or taken over. This module only reads environments; it imports nothing of the runtime.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .tracing import wanted

IDENTITY = frozenset({"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"})
MODE_VARIABLE = "FREIGHT_TRACING"
_DEFAULT_ENDPOINT = "localhost:4317 (the OTLP default)"


@dataclass(frozen=True)
class TracingConfig:
    """Whether a process exports spans, and the variables that say where and how."""

    enabled: bool
    env: dict[str, str] = field(default_factory=dict)  # OTEL_* (but identity) and FREIGHT_TRACING

    @property
    def endpoint(self) -> str:
        return (
            self.env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or self.env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or _DEFAULT_ENDPOINT
        )

    def describe(self) -> str:
        return f"exports spans to {self.endpoint}" if self.enabled else "has tracing off"

    def to_json(self) -> str:
        return json.dumps({"enabled": self.enabled, "env": self.env}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> TracingConfig:
        """Read what :meth:`to_json` wrote; ValueError when it is not that."""
        doc: Any = json.loads(text)
        env = doc.get("env") if isinstance(doc, dict) else None
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise ValueError(f"not a tracing configuration: {str(text)[:80]!r}")
        return cls(bool(doc.get("enabled")), env)


def tracing_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The tracing variables of an environment that a cluster shares (no process identity)."""
    out = {k: v for k, v in environ.items() if k.startswith("OTEL_") and k not in IDENTITY}
    mode = environ.get(MODE_VARIABLE, "").strip()
    if mode and mode.lower() != "auto":
        out[MODE_VARIABLE] = mode
    return out


def current(environ: Mapping[str, str], instrumentation: bool = True) -> TracingConfig:
    """The tracing configuration an environment gives a process."""
    env = tracing_env(environ)
    try:
        enabled = wanted(environ.get(MODE_VARIABLE, "auto"), instrumentation, environ)
    except ValueError:
        enabled = False  # a bad FREIGHT_TRACING is reported by tracing.configure
    return TracingConfig(enabled, env)


@dataclass(frozen=True)
class Reconciled:
    """What a driver does about its cluster's tracing configuration."""

    adopt: dict[str, str]  # variables to take over from the cluster (none of the driver's own)
    warning: str | None  # one line for the driver's user, when the two differ


def reconcile(
    driver_environ: Mapping[str, str],
    cluster: TracingConfig,
    cluster_name: str,
    instrumentation: bool = True,
) -> Reconciled:
    """Compare a driver's tracing configuration with its cluster's (see the module docstring)."""
    own = tracing_env(driver_environ)
    if not own:
        return Reconciled(dict(cluster.env) if cluster.enabled else {}, None)
    driver = current(driver_environ, instrumentation)
    if driver.enabled == cluster.enabled and (not driver.enabled or driver.env == cluster.env):
        return Reconciled({}, None)
    name = f"cluster {cluster_name!r}" if cluster_name else "its cluster"
    names = ", ".join(sorted(own))
    if driver.enabled and not cluster.enabled:
        change = (
            "to trace its tasks too, set these variables in the environment of `freight start` "
            "on every node and restart the cluster"
        )
    elif cluster.enabled and not driver.enabled:
        change = (
            f"the tasks this driver submits start no trace; unset {names} in the driver to "
            "follow the cluster"
        )
    else:
        change = (
            f"unset {names} in the driver to follow the cluster, or restart the cluster with "
            "the driver's settings"
        )
    warning = (
        f"freight: tracing: this driver {driver.describe()} ({names}), but {name} "
        f"{cluster.describe()} (its head, agents and workers follow the environment of "
        f"`freight start`); {change}."
    )
    return Reconciled({}, warning)
