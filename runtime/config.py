"""Every ``FREIGHT_*`` environment setting, declared once: name, type, default, meaning and the
values it accepts (bounds, choices, a pattern).

Code reads settings through :data:`settings` (``settings.inline_max_bytes``): each access reads
the variable again, so a process that changes its environment (tests do, between clusters) sees
the new value, and a value that is not valid raises :class:`SettingsError` naming the variable,
the value and what is accepted. :func:`check_settings` validates every variable at once; the
CLI and every process freight starts call it first, so none runs with a wrong value. The docs
table and ``freight settings`` read :data:`SETTINGS`.

Values are validated by a pydantic-settings model built from the declarations below. It is
built, and pydantic imported, only when a variable that needs validating is set: an unset
variable is its default and a plain text setting is its text, so the CLI and the processes of
a cluster with no such variable start without loading pydantic (docs/decisions/0056-settings-
on-pydantic-settings.md).
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from freight.observe.catalogue import FAST_BUCKETS, LATENCY_BUCKETS

# How often each node agent sends the head a heartbeat. Fixed rather than a setting: the head
# judges every agent's lag against it.
HEARTBEAT_INTERVAL_S = 1.0

# The base the shipped alert rules write their runbook_url with; FREIGHT_RUNBOOK_BASE_URL moves
# it (`freight monitoring up` rewrites the rules it loads).
DEFAULT_RUNBOOK_BASE_URL = "https://freight.example.invalid/runbooks"

ENV_PREFIX = "FREIGHT_"
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class SettingsError(ValueError):
    """One or more ``FREIGHT_*`` variables hold a value that is not valid."""


def _switch(value: str) -> str:
    """FREIGHT_TRACING: on/off also as the spellings of a boolean, in any case."""
    word = value.strip().lower()
    return "on" if word in _TRUE else "off" if word in _FALSE else word


def _upper(value: str) -> str:
    return value.strip().upper()


@dataclass(frozen=True)
class Setting:
    """One environment setting: what it is, and the values it accepts."""

    env: str
    type: type
    default: Any
    help: str
    shown: str = ""  # the default as the docs show it, when it depends on the machine
    choices: tuple[Any, ...] = ()  # when set, the only values accepted
    pattern: str = ""  # when set, a regular expression the whole value must match
    ge: float | None = None  # bounds, when set
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    normalize: Callable[[str], str] | None = None  # applied to the text before validation
    secret: bool = False  # never shown (`freight settings` says whether it is set)

    @property
    def name(self) -> str:
        return self.env.removeprefix(ENV_PREFIX).lower()

    @property
    def plain(self) -> bool:
        """Any text is this setting's value as it is: nothing to validate."""
        return self.type is str and not (self.choices or self.pattern or self.normalize)

    @property
    def accepted(self) -> str:
        """The values accepted, in words ("an integer >= 1")."""
        if self.choices:
            return "one of " + ", ".join(_show(c) for c in self.choices)
        if self.type is bool:
            return "a boolean: " + "/".join(_TRUE) + " or " + "/".join(_FALSE)
        if self.pattern:
            return f"text matching {self.pattern.strip('^$')}"
        noun = {int: "an integer", float: "a number", str: "text"}[self.type]
        bounds = [
            f"{sign} {_show(bound)}"
            for sign, bound in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
            if bound is not None
        ]
        return " ".join([noun, " and ".join(bounds)]).strip()


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        Setting(
            "FREIGHT_TOKEN",
            str,
            "",
            "Cluster token; when unset, read from the session dir.",
            secret=True,
        ),
        Setting(
            "FREIGHT_CLUSTER_NAME",
            str,
            "",
            "The name of the cluster this process belongs to, for its traces; set by freight for "
            "the processes it starts beside a head. When unset, read from the session dir.",
        ),
        Setting(
            "FREIGHT_ADDRESS",
            str,
            "",
            "Head address that init() joins when called without one ('auto' or HOST:PORT).",
        ),
        Setting(
            "FREIGHT_USE_TLS",
            bool,
            False,
            "Encrypt the gRPC control plane (head, node agents, drivers, CLI) with TLS, in addition "
            "to the token; every process of the cluster needs the same FREIGHT_TLS_* settings. The "
            "TCP data plane stays unencrypted (docs/decisions/0019-tls-for-grpc.md).",
        ),
        Setting(
            "FREIGHT_TLS_SERVER_CERT",
            str,
            "",
            "PEM certificate (chain) every process presents, as server and as client, when "
            "FREIGHT_USE_TLS is on. It must name the addresses clients dial (IP SANs such as "
            "127.0.0.1 and the node IPs), unless FREIGHT_TLS_SERVER_NAME is set.",
        ),
        Setting(
            "FREIGHT_TLS_SERVER_KEY",
            str,
            "",
            "PEM private key (unencrypted) of FREIGHT_TLS_SERVER_CERT.",
        ),
        Setting(
            "FREIGHT_TLS_CA_CERT",
            str,
            "",
            "PEM CA certificate(s): clients verify servers against them, and servers require a "
            "client certificate signed by them (mutual TLS). Unset: gRPC's default roots, and no "
            "client certificate is asked for.",
        ),
        Setting(
            "FREIGHT_TLS_SERVER_NAME",
            str,
            "",
            "Host name clients expect in the servers' certificate instead of the host they dial "
            "(grpc.ssl_target_name_override), so that one certificate with a DNS name serves every "
            "node.",
        ),
        Setting(
            "FREIGHT_TEMP_DIR",
            str,
            os.path.join(tempfile.gettempdir(), "freight-sessions"),
            "Root folder of session directories.",
            shown="<system temp dir>/freight-sessions",
        ),
        Setting(
            "FREIGHT_INLINE_MAX_BYTES",
            int,
            100 * 1024,
            "Objects up to this size travel inline; larger ones go to the shared-memory store.",
            ge=0,
        ),
        Setting(
            "FREIGHT_MAX_FRAME_BYTES",
            int,
            1 << 30,
            "Largest data-plane message (a task pushed to a worker, its reply). Task arguments over "
            "FREIGHT_INLINE_MAX_BYTES go through the object store whatever their size; a call whose "
            "message would still be larger fails at once. Every process of a cluster must use the "
            "same value; at least 1 MiB.",
            ge=1 << 20,
            lt=1 << 32,
        ),
        Setting(
            "FREIGHT_OBJECT_STORE_FRACTION",
            float,
            0.3,
            "Default object store capacity as a fraction of RAM (bounded by /dev/shm).",
            gt=0,
        ),
        Setting(
            "FREIGHT_SHM_DIR",
            str,
            "/dev/shm",
            "Folder whose tmpfs backs the object store.",
        ),
        Setting(
            "FREIGHT_SEGMENT_POOL_FRACTION",
            float,
            0.25,
            "Share of the object store capacity that freed segment files may keep for reuse by "
            "later objects (writing over existing pages is about twice as fast); 0 turns reuse off.",
            ge=0,
            le=1,
        ),
        Setting(
            "FREIGHT_OBJECT_SPILLING_THRESHOLD",
            float,
            0.8,
            "Share of the object store capacity above which the agent spills sealed primary objects "
            "to disk (least recently used first, after evicting copies pulled from other nodes); "
            "readers get them back transparently. A reservation that does not fit waits for "
            "spilling; ObjectStoreFullError only when spilling cannot help.",
            gt=0,
            le=1,
        ),
        Setting(
            "FREIGHT_OBJECT_RESERVE_TIMEOUT_S",
            float,
            60.0,
            "How long a worker or driver waits for its node agent to reserve room for an object "
            "over FREIGHT_INLINE_MAX_BYTES. When a task's return value times out (a stalled agent) "
            "the attempt fails as a system error and is retried under max_retries; a put() raises "
            "TimeoutError.",
            gt=0,
        ),
        Setting(
            "FREIGHT_OBJECT_SPILLING_DIR",
            str,
            "",
            "Folder spilled objects are written to; each node uses a subfolder named after its "
            "store. Unset: a `spill` folder in the node's session directory.",
            shown="<session dir>/spill",
        ),
        Setting(
            "FREIGHT_PRESTART_WORKERS",
            int,
            -1,
            "Workers each agent starts before the first task (-1: one per CPU).",
            ge=-1,
        ),
        Setting(
            "FREIGHT_MAXIMUM_STARTUP_CONCURRENCY",
            int,
            0,
            "Worker processes a node agent starts at once (Ray's maximum_startup_concurrency); more "
            "wait their turn, shown as 'waiting for a worker to start'. 0: one per CPU (at least "
            "one).",
            shown="0 (one per CPU)",
            ge=0,
        ),
        Setting(
            "FREIGHT_FORK_SERVER",
            bool,
            True,
            "Start workers by forking a process that has imported the worker's modules once "
            "(Linux); off: each worker is a new interpreter.",
        ),
        Setting(
            "FREIGHT_WORKER_IDLE_TIMEOUT_S",
            float,
            300.0,
            "Idle workers beyond the CPU count are stopped after this many seconds.",
            ge=0,
        ),
        Setting(
            "FREIGHT_LEASE_PIPELINE",
            int,
            16,
            "Tasks an owner keeps in flight on one leased worker.",
            ge=1,
        ),
        Setting(
            "FREIGHT_VALIDATE_STATE",
            bool,
            False,
            "Run validate() on the lifecycle state machines after every transition (tests).",
        ),
        Setting(
            "FREIGHT_START_TIMEOUT_S",
            float,
            30.0,
            "How long init() and `freight start` wait for the head and agent to come up.",
            gt=0,
        ),
        Setting(
            "FREIGHT_LOG_LEVEL",
            str,
            "INFO",
            "Log level of head, agent and worker log files.",
            choices=LOG_LEVELS,
            normalize=_upper,
        ),
        Setting(
            "FREIGHT_INSTRUMENTATION",
            bool,
            True,
            "Record metrics, task events and trace spans (off: for overhead measurements).",
        ),
        Setting(
            "FREIGHT_TRACING",
            str,
            "auto",
            "Trace spans: auto (on when OTEL_EXPORTER_OTLP_ENDPOINT, "
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_TRACES_EXPORTER=otlp is set), on or off. "
            "Export and sampling follow the standard OTEL_* variables.",
            choices=("auto", "on", "off"),
            normalize=_switch,
        ),
        Setting(
            "FREIGHT_METRICS_TOP_N",
            int,
            50,
            "Distinct function/class names a metric label keeps before folding into 'other'.",
            ge=1,
        ),
        Setting(
            "FREIGHT_SLO_SCHEDULING_LATENCY_S",
            float,
            0.2,
            "Scheduling-latency SLO threshold in seconds (submission to start of a task, placement "
            "of an actor or placement group): one of the bucket bounds of "
            "freight_task_scheduling_latency_seconds, so the SLO is counted exactly.",
            choices=LATENCY_BUCKETS,
        ),
        Setting(
            "FREIGHT_SLO_CONTROL_STORE_LATENCY_S",
            float,
            0.1,
            "Control-store latency SLO threshold in seconds: one of the bucket bounds of "
            "freight_control_store_operation_seconds.",
            choices=FAST_BUCKETS,
        ),
        Setting(
            "FREIGHT_TELEMETRY_INTERVAL_S",
            float,
            1.0,
            "How often workers and drivers report metrics and task events to their agent.",
            gt=0,
        ),
        Setting(
            "FREIGHT_TASK_EVENTS_BUFFER",
            int,
            100_000,
            "Task events a process buffers between reports; beyond it the oldest are dropped (and "
            "counted).",
            ge=1,
        ),
        Setting(
            "FREIGHT_TASK_ROWS_SAMPLE",
            int,
            100,
            "Successful tasks whose whole life falls within one telemetry report each get a "
            "state-API record up to this many per report and process; beyond it an evenly "
            "spread sample of this many is kept and the rest only counted (by job and name), so "
            "summaries stay exact; sampling is not counted as loss. Failed, retried and long "
            "tasks are always kept, and metrics count every task. 0: keep all.",
            ge=0,
        ),
        Setting(
            "FREIGHT_JOB_LABELS",
            str,
            "",
            "Labels of the job a driver starts, as 'team=ml,owner=alice' (cost and alerts group by "
            "team and owner).",
        ),
        Setting(
            "FREIGHT_JOB_ID",
            str,
            "",
            "Job id init() registers the driver under; the head sets it for drivers started by "
            "`freight job submit`, so the submission and its driver are one job.",
        ),
        Setting(
            "FREIGHT_JOB_STOP_GRACE_S",
            float,
            3.0,
            "How long `freight job stop` (and a stopping head) waits after SIGTERM before it sends "
            "SIGKILL to a submitted job's process group.",
            ge=0,
        ),
        Setting(
            "FREIGHT_LINEAGE_MAX_BYTES",
            int,
            1024**3,
            "How much memory an owner spends on the lineage of its objects (the specs of the tasks "
            "that made them, kept to rebuild objects lost with a node). Over it the oldest go "
            "first, and their objects can no longer be rebuilt.",
            ge=0,
        ),
        Setting(
            "FREIGHT_TASK_RETRY_DELAY_MS",
            int,
            50,
            "A task that failed and is retried waits this long before its second attempt, doubling "
            "with each attempt after (at most 5 s); 0 retries at once.",
            ge=0,
        ),
        Setting(
            "FREIGHT_ACTOR_CHECKPOINT_DIR",
            str,
            "",
            "Where actors that define __freight_checkpoint__ keep their checkpoints (one file per "
            "actor). Empty: 'checkpoints' in the node's session directory, which survives the "
            "actor's process; point it at storage every node sees to survive a node's loss.",
        ),
        Setting(
            "FREIGHT_ACTOR_CHECKPOINT_CALLS",
            int,
            100,
            "A checkpointing actor saves its state after this many calls (a class attribute "
            "__freight_checkpoint_calls__ overrides it).",
            ge=1,
        ),
        Setting(
            "FREIGHT_ACTOR_CHECKPOINT_INTERVAL_S",
            float,
            10.0,
            "... or after its first call once this many seconds have passed since the last save "
            "(class attribute __freight_checkpoint_interval_s__).",
            gt=0,
        ),
        Setting(
            "FREIGHT_RECORD_CALL_SITES",
            bool,
            False,
            "Remember where each object was created (put or task call), for `freight memory "
            "--group-by callsite` (costs a stack walk per object).",
        ),
        Setting(
            "FREIGHT_PRICE_CPU_HOUR",
            float,
            0.0,
            "Price of one CPU for one hour, for freight_job_cost_total.",
            ge=0,
        ),
        Setting(
            "FREIGHT_PRICE_GPU_HOUR",
            float,
            0.0,
            "Price of one GPU for one hour, for freight_job_cost_total.",
            ge=0,
        ),
        Setting(
            "FREIGHT_PRICE_CURRENCY",
            str,
            "USD",
            "The currency of FREIGHT_PRICE_CPU_HOUR and FREIGHT_PRICE_GPU_HOUR, as an ISO 4217 code "
            "(USD, EUR, ...); freight_job_cost_total's help text names it.",
            pattern=r"^[A-Z]{3}$",
        ),
        Setting(
            "FREIGHT_STATE_TASKS_MAX",
            int,
            100_000,
            "Successful task records the head's state API keeps; the oldest are evicted first and "
            "counted as dropped (live ones are capped at the sum of both bounds).",
            ge=0,
        ),
        Setting(
            "FREIGHT_STATE_FAILED_TASKS_MAX",
            int,
            100_000,
            "Failed and cancelled task records the state API keeps (kept apart from successful "
            "ones, so failures outlive them).",
            ge=0,
        ),
        Setting(
            "FREIGHT_STATE_AGENT_TIMEOUT_S",
            float,
            3.0,
            "How long the state API, `freight logs` and `freight memory` wait for each node agent "
            "(workers, objects, log lines, references) before they answer without that node and "
            "mark the answer partial.",
            gt=0,
        ),
        Setting(
            "FREIGHT_HEAD_RECONNECT_TIMEOUT_S",
            float,
            60.0,
            "How long drivers and workers wait for an unreachable head (a restart) before an actor "
            "creation or an actor's address lookup fails; they wait through the channel's "
            "reconnection backoff and repeat a call the head's death broke off.",
            ge=0,
        ),
        Setting(
            "FREIGHT_HEALTH_CHECK_PERIOD_S",
            float,
            3.0,
            "How often the head health-checks each node agent (CheckHealth); a node's next check "
            "waits for its previous one.",
            gt=0,
        ),
        Setting(
            "FREIGHT_HEALTH_CHECK_TIMEOUT_S",
            float,
            10.0,
            "How long the head waits for an agent's answer to one health check before it counts the "
            "check as failed.",
            gt=0,
        ),
        Setting(
            "FREIGHT_HEALTH_CHECK_FAILURE_THRESHOLD",
            int,
            5,
            "Failed health checks in a row after which the head marks a node dead (an answer resets "
            "the count).",
            ge=1,
        ),
        Setting(
            "FREIGHT_NODE_TIMEOUT_S",
            float,
            0.0,
            "A node that sends the head no heartbeat for this many seconds (of the head's own "
            "running time) is marked dead; 0: twice what the health checks take to find an "
            "unresponsive node dead, at least 30 s. The head's --node-timeout-s overrides it.",
            ge=0,
        ),
        Setting(
            "FREIGHT_MEMORY_USAGE_THRESHOLD",
            float,
            0.95,
            "Fraction of the node's memory (or of its cgroup limit, when that is lower) above which "
            "the node agent's memory monitor kills the worker of the most recently started "
            "retriable task (docs/decisions/0022-memory-monitor.md); in (0, 1].",
            gt=0,
            le=1,
        ),
        Setting(
            "FREIGHT_MEMORY_MONITOR_REFRESH_MS",
            int,
            250,
            "How often, in milliseconds, each node agent checks the node's memory usage; 0 turns "
            "the memory monitor off.",
            ge=0,
        ),
        Setting(
            "FREIGHT_RUNBOOK_BASE_URL",
            str,
            DEFAULT_RUNBOOK_BASE_URL,
            "Where the runbooks are served: each alert's runbook_url is <base>/<AlertName>.md "
            "(`freight monitoring up` loads the rules with this base). `freight runbook NAME` "
            "prints the same page in the terminal.",
        ),
        Setting(
            "FREIGHT_ONCALL_DIR",
            str,
            "",
            "A folder with runbooks/ and alerts/ (rules/*.yml, alertmanager.yml) to use instead of "
            "those installed with freight, for a site's own pack.",
        ),
        Setting(
            "FREIGHT_EVENTS_MAX",
            int,
            10_000,
            "Cluster events the head keeps (`freight events`); older ones are evicted and counted "
            'in freight_telemetry_dropped_total{kind="events"}.',
            ge=1,
        ),
        Setting(
            "FREIGHT_WATCH_BUFFER",
            int,
            10_000,
            "Changes the head keeps per watched kind (`freight list --watch`, "
            "freight.state.watch): how far back a reconnecting watcher resumes from its "
            "cursor, and how far a slow watcher may fall behind before it is told to list again.",
        ),
    ]
}


# ---- validation (pydantic-settings, loaded on first need) ---------------------------------------


def _annotation(setting: Setting, env: str | None = None) -> Any:
    """The pydantic type of ``setting``: its type with its constraints (read from the
    variable ``env``, as a field of the model)."""
    from typing import Annotated

    from pydantic import AfterValidator, BeforeValidator, Field

    def one_of(value: Any) -> Any:
        if value not in setting.choices:
            raise ValueError("not one of the accepted values")  # worded by _error()
        return value

    def normalize(value: Any) -> Any:
        return setting.normalize(value) if setting.normalize and isinstance(value, str) else value

    field = Field(
        setting.default,
        description=setting.help,
        validation_alias=env,
        pattern=setting.pattern or None,
        ge=setting.ge,
        gt=setting.gt,
        le=setting.le,
        lt=setting.lt,
    )
    checks = [BeforeValidator(normalize), AfterValidator(one_of)] if setting.choices else []
    return Annotated[setting.type, field, *checks]


@functools.cache
def _model() -> Any:
    """The pydantic-settings model of every setting (built once, on first need)."""
    from pydantic import create_model
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class _Base(BaseSettings):
        # Exactly the variable names declared (FREIGHT_ + the name in capitals); an empty
        # variable means the default, as everywhere in freight.
        model_config = SettingsConfigDict(
            case_sensitive=True, env_ignore_empty=True, extra="ignore"
        )

    fields: dict[str, Any] = {name: _annotation(s, s.env) for name, s in SETTINGS.items()}
    return create_model("FreightSettings", __base__=_Base, **fields)


@functools.cache
def _validator(name: str) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(_annotation(SETTINGS[name]))


def _error(setting: Setting, raw: str, error: Any) -> str:
    """What is wrong with a value, in words that name what is accepted."""
    if setting.choices and error["type"] in ("literal_error", "value_error"):
        return f"{setting.env}={raw!r} is not one of {', '.join(_show(c) for c in setting.choices)}"
    return f"{setting.env}={raw!r} is not valid: expected {setting.accepted}"


def _parse(setting: Setting, raw: str) -> Any:
    from pydantic import ValidationError

    try:
        return _validator(setting.name).validate_python(raw)
    except ValidationError as e:
        raise SettingsError(_error(setting, raw, e.errors()[0])) from None


class _Settings:
    """Attribute access to the current value of each setting, read from the environment.

    Each access reads the variable; a value is validated once and kept while the variable
    holds the same text.
    """

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, Any]] = {}

    def __getattr__(self, name: str) -> Any:
        try:
            setting = SETTINGS[name]
        except KeyError:
            raise AttributeError(f"no freight setting {name!r}") from None
        raw = os.environ.get(setting.env)
        if raw is None or raw == "":
            return setting.default
        if setting.plain:
            return raw
        seen = self._seen.get(name)
        if seen is not None and seen[0] == raw:
            return seen[1]
        value = _parse(setting, raw)
        self._seen[name] = (raw, value)
        return value


settings: Any = _Settings()


def check_settings() -> None:
    """Validate every ``FREIGHT_*`` variable of this process's environment at once.

    Raises :class:`SettingsError` naming each variable whose value is not valid, with the value
    and what is accepted, on one line.
    """
    if not any(
        os.environ.get(s.env) for s in SETTINGS.values() if not s.plain
    ):  # every setting that needs validating is at its default
        return
    from pydantic import ValidationError

    try:
        _model()()
    except ValidationError as e:
        by_env = {s.env: s for s in SETTINGS.values()}
        problems = []
        for error in e.errors():
            setting = by_env.get(str(error["loc"][0]) if error["loc"] else "")
            if setting is None:
                problems.append(str(error["msg"]))
            else:
                problems.append(_error(setting, os.environ.get(setting.env, ""), error))
        raise SettingsError("; ".join(problems)) from None


def settings_table() -> str:
    """A Markdown table of all settings, for the docs."""
    rows = ["| variable | type | default | accepted | meaning |", "|---|---|---|---|---|"]
    for s in SETTINGS.values():
        default = s.shown or repr(s.default)
        rows.append(f"| `{s.env}` | {s.type.__name__} | `{default}` | {s.accepted} | {s.help} |")
    return "\n".join(rows)
