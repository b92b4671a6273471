"""Chaos Toolkit actions: process faults on a freight cluster.

Each names its target through the state API (the fields `freight list` filters on), proves the
pid is that process before signalling it, writes the fault and its revert to the write-ahead
journal first (``freight_fault_journal`` in the experiment's configuration, else
``$FREIGHT_TEMP_DIR/chaos/faults.jsonl``), is time-boxed and undoes itself: a pause ends with
SIGCONT at expiry, a kill waits for the process to go (SIGKILL after ``grace`` seconds of an
ignored SIGTERM) and leaves the replacement to the runtime. A fault on the cluster's last
healthy node, or on the head without ``allow_head``, is refused and nothing is done.

The cluster is the configuration's ``freight_address``, else ``FREIGHT_ADDRESS``, else the
newest cluster on this machine. Faults act on processes of the machine the harness runs on.

Type hints are real types here (no postponed annotations): Chaos Toolkit's discovery reads
them to describe each argument.
"""

from typing import Any

from . import faults, targets
from .rpc import rpc_fault

__all__ = [
    "delay_rpc",
    "fail_rpc",
    "kill_actor",
    "kill_head",
    "kill_node_agent",
    "kill_worker",
    "pause_node_agent",
    "pause_worker",
    "revert_faults",
]

Configuration = dict[str, Any]


def kill_worker(
    worker_id: str = "",
    node_id: str = "",
    actor_id: str = "",
    state: str = "",
    signal: str = "SIGKILL",
    grace: float = 10.0,
    configuration: Configuration | None = None,
) -> dict:
    """Kill a worker process (SIGKILL, or SIGTERM then SIGKILL after `grace` s): the first
    worker the state API lists with every given field (`state`: IDLE, LEASED (running a task),
    ACTOR, ...). Its tasks are retried and the pool starts another, as after a crash."""
    cluster = targets.cluster(configuration)
    target = targets.worker(cluster, worker_id, node_id, actor_id, state)
    path = faults.journal_path(configuration)
    return faults.kill("kill_worker", target, signal, path, grace).as_dict()


def kill_actor(
    name: str = "",
    class_name: str = "",
    actor_id: str = "",
    namespace: str = "",
    signal: str = "SIGKILL",
    grace: float = 10.0,
    configuration: Configuration | None = None,
) -> dict:
    """Kill the process of a live actor named by `name`, `class_name`, `actor_id` (a prefix
    will do) and `namespace`: it restarts under its max_restarts, as after a crash."""
    cluster = targets.cluster(configuration)
    target = targets.actor(cluster, name, class_name, actor_id, namespace)
    path = faults.journal_path(configuration)
    return faults.kill("kill_actor", target, signal, path, grace).as_dict()


def pause_worker(
    duration: float = 10.0,
    worker_id: str = "",
    node_id: str = "",
    actor_id: str = "",
    state: str = "",
    configuration: Configuration | None = None,
) -> dict:
    """Stop a worker process (SIGSTOP) for `duration` seconds, then continue it (SIGCONT):
    a task or actor that hangs. Returns once it runs again."""
    cluster = targets.cluster(configuration)
    target = targets.worker(cluster, worker_id, node_id, actor_id, state)
    path = faults.journal_path(configuration)
    return faults.pause("pause_worker", target, duration, path).as_dict()


def pause_node_agent(
    duration: float = 10.0,
    node_id: str = "",
    hostname: str = "",
    configuration: Configuration | None = None,
) -> dict:
    """Stop a node's agent (SIGSTOP) for `duration` seconds, then continue it (SIGCONT): a gray
    failure, a node that holds its connections and answers nothing. Refused on the last healthy
    node. Returns once the agent runs again."""
    cluster = targets.cluster(configuration)
    path = faults.journal_path(configuration)
    target = targets.node_agent(cluster, node_id, hostname)
    faults.refuse_last_healthy_node(cluster, target.node_id, path)
    return faults.pause("pause_node_agent", target, duration, path).as_dict()


def kill_node_agent(
    node_id: str = "",
    hostname: str = "",
    signal: str = "SIGKILL",
    grace: float = 10.0,
    configuration: Configuration | None = None,
) -> dict:
    """Kill a node's agent (its workers stop with it): the head finds the node dead by its
    health checks. Refused on the last healthy node."""
    cluster = targets.cluster(configuration)
    path = faults.journal_path(configuration)
    target = targets.node_agent(cluster, node_id, hostname)
    faults.refuse_last_healthy_node(cluster, target.node_id, path)
    return faults.kill("kill_node_agent", target, signal, path, grace).as_dict()


def kill_head(
    allow_head: bool = False,
    signal: str = "SIGKILL",
    grace: float = 10.0,
    configuration: Configuration | None = None,
) -> dict:
    """Kill the head process (nodes, workers and drivers live on; a head started again on its
    control store carries the cluster on). Refused unless `allow_head` is true."""
    if allow_head is not True:
        raise targets.FaultRefused(
            "kill_head is refused unless the experiment says allow_head: true (the head is the "
            "cluster's single point of control: kill it only on purpose)"
        )
    cluster = targets.cluster(configuration)
    target = targets.head(cluster)
    return faults.kill(
        "kill_head", target, signal, faults.journal_path(configuration), grace
    ).as_dict()


def revert_faults(configuration: Configuration | None = None) -> list:
    """Revert every fault of the journal still in force (for an experiment's rollbacks): what
    `freight chaos recover` does."""
    return [
        {"injection_id": r.injection.id, "fault": r.injection.fault, "result": r.result}
        for r in faults.recover(faults.journal_path(configuration))
    ]


# ---- RPC faults (freight.chaos.rpc): through the runtime's fault hooks, with the admin token


def fail_rpc(
    method: str,
    fraction: float = 1.0,
    duration: float = 10.0,
    code: str = "UNAVAILABLE",
    node_id: str = "",
    hostname: str = "",
    target: str = "",
    seed: int = -1,
    configuration: Configuration | None = None,
) -> dict:
    """Make `fraction` of the calls of one gRPC method (`freight.v1.HeadService/Heartbeat`,
    or `HeadService/Heartbeat`) fail with the gRPC status `code` for `duration` seconds; or,
    for a data-plane message kind a node agent receives (`data/RequestLease`), close the
    connection each hit message came on. `target` is "head" or "node" (empty: where the method
    is served); a node is chosen by `node_id` (a prefix will do) and `hostname`, never the last
    healthy one. Which calls the fraction hits follows `seed` (-1: the run's `freight_seed`, else
    0). Returns once the fault expired and was cleared, with the calls it saw and hit."""
    return rpc_fault(
        "fail_rpc",
        method,
        fraction=fraction,
        duration=duration,
        code=code,
        delay=0.0,
        node_id=node_id,
        hostname=hostname,
        target=target,
        seed=seed,
        configuration=configuration,
    )


def delay_rpc(
    method: str,
    delay: float,
    fraction: float = 1.0,
    duration: float = 10.0,
    node_id: str = "",
    hostname: str = "",
    target: str = "",
    seed: int = -1,
    configuration: Configuration | None = None,
) -> dict:
    """Hold `fraction` of the calls of one gRPC method (or of the messages of one data-plane
    kind a node agent receives: later messages of that connection wait behind it) for `delay`
    seconds before they are handled, for `duration` seconds: freight's latency fault. Target,
    node and seed as for fail_rpc. Returns once the fault expired and was cleared."""
    return rpc_fault(
        "delay_rpc",
        method,
        fraction=fraction,
        duration=duration,
        code="",
        delay=delay,
        node_id=node_id,
        hostname=hostname,
        target=target,
        seed=seed,
        configuration=configuration,
    )
