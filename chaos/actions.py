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

__all__ = [
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


# Network faults: iptables rules in the node's own network namespace (freight.chaos.network).

from . import network  # noqa: E402  (here, with the block it serves)

__all__ += ["drop_packets", "limit_bandwidth", "partition_node"]


def partition_node(
    duration: float = 10.0,
    node_id: str = "",
    hostname: str = "",
    peers: str = "head",
    configuration: Configuration | None = None,
) -> dict:
    """Cut a node off for `duration` seconds: every packet between it and `peers` is dropped
    (`head`: the head and the head node, which share an address; `nodes`: every other node
    with an address of its own; `all`: everything). The node must run in a network namespace
    of its own. Refused on the last healthy node. Returns once the rules are removed."""
    return network.partition(configuration, node_id, hostname, duration, peers)


def drop_packets(
    duration: float = 10.0,
    fraction: float = 0.1,
    node_id: str = "",
    hostname: str = "",
    configuration: Configuration | None = None,
) -> dict:
    """Drop each packet to or from a node with probability `fraction` (0 to 1) for `duration`
    seconds: a lossy link. Refused on the last healthy node. Returns once reverted."""
    return network.drop(configuration, node_id, hostname, duration, fraction)


def limit_bandwidth(
    duration: float = 10.0,
    rate: str = "1mbit",
    node_id: str = "",
    hostname: str = "",
    configuration: Configuration | None = None,
) -> dict:
    """Cap a node's traffic at `rate` each way for `duration` seconds; packets over it are
    dropped. `rate` is bytes per second, or a string in tc's units: "800kbit", "1mbit" (bits
    per second), "100kbps" (bytes per second); k = 1000. Refused on the last healthy node.
    Returns once reverted."""
    return network.limit(configuration, node_id, hostname, duration, rate)


__all__ += ["kill_driver", "restart_head"]  # game days (chaos/gameday)


def kill_driver(
    job_id: str = "",
    signal: str = "SIGKILL",
    grace: float = 10.0,
    configuration: Configuration | None = None,
) -> dict:
    """Kill a driver (a program connected to the cluster) of job `job_id` (a prefix will do;
    else the first running driver that is not this harness): the cluster must free what it
    held (its leased workers, its actors) and take a new driver."""
    from .gameday import processes

    cluster = targets.cluster(configuration)
    target = processes.driver(cluster, job_id)
    if faults.dry_run(configuration):
        return faults.planned(
            cluster, "kill_driver", target.describe(), pid=target.pid, signal=signal
        )
    path = faults.journal_path(configuration)
    return faults.kill("kill_driver", target, signal, path, grace).as_dict()


def restart_head(configuration: Configuration | None = None) -> dict:
    """Start the head again in its session folder on its control store, port and metrics port
    after it died (`freight start --head --storage FILE`, as runbooks/FreightHeadDown.md says);
    returns once it serves. Nothing to do when the head runs."""
    from .gameday import processes

    cluster = targets.cluster(configuration)
    if faults.dry_run(configuration):
        info = processes.head_down(cluster)
        return faults.planned(
            cluster,
            "restart_head",
            {"kind": "head", "id": cluster.address, "node_id": ""},
            session_dir=info["session_dir"],
            storage=info["storage"],
        )
    return processes.restart_head(cluster)
