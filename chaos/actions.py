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

from . import faults, network, resources, seed, targets
from .rpc import rpc_fault

__all__ = [
    "delay_rpc",
    "drop_packets",
    "fail_rpc",
    "fill_object_store",
    "fill_spill_disk",
    "hog_cpu",
    "hog_memory",
    "kill_actor",
    "kill_driver",
    "kill_head",
    "kill_node_agent",
    "kill_worker",
    "limit_bandwidth",
    "partition_node",
    "pause_node_agent",
    "pause_worker",
    "pin_objects",
    "restart_head",
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
    target = targets.worker(
        cluster, worker_id, node_id, actor_id, state, seed.rng(configuration, "targets")
    )
    if faults.dry_run(configuration):
        return faults.planned(
            cluster, "kill_worker", target.describe(), signal=faults.signal_name(signal)
        )
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
    target = targets.actor(
        cluster, name, class_name, actor_id, namespace, seed.rng(configuration, "targets")
    )
    if faults.dry_run(configuration):
        return faults.planned(
            cluster, "kill_actor", target.describe(), signal=faults.signal_name(signal)
        )
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
    target = targets.worker(
        cluster, worker_id, node_id, actor_id, state, seed.rng(configuration, "targets")
    )
    if faults.dry_run(configuration):
        duration = faults.check_duration(duration)
        return faults.planned(cluster, "pause_worker", target.describe(), duration=duration)
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
    target = targets.node_agent(cluster, node_id, hostname, seed.rng(configuration, "targets"))
    faults.refuse_last_healthy_node(cluster, target.node_id, path)
    if faults.dry_run(configuration):
        duration = faults.check_duration(duration)
        return faults.planned(cluster, "pause_node_agent", target.describe(), duration=duration)
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
    target = targets.node_agent(cluster, node_id, hostname, seed.rng(configuration, "targets"))
    faults.refuse_last_healthy_node(cluster, target.node_id, path)
    if faults.dry_run(configuration):
        return faults.planned(
            cluster, "kill_node_agent", target.describe(), signal=faults.signal_name(signal)
        )
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
    if faults.dry_run(configuration):
        return faults.planned(
            cluster, "kill_head", target.describe(), signal=faults.signal_name(signal)
        )
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


# -- resource faults (freight.chaos.resources): each holds a resource of one node, chosen as
# pause_node_agent chooses it, for `duration` seconds, then frees it --


def fill_object_store(
    level: float = 0.9,
    duration: float = 30.0,
    node_id: str = "",
    hostname: str = "",
    configuration: Configuration | None = None,
) -> dict:
    """Fill a node's object store to `level` (a fraction of its capacity, 0.9 for 90 %) with
    objects a driver of the harness holds, for `duration` seconds; freed at expiry. Above the
    spilling threshold (FREIGHT_OBJECT_SPILLING_THRESHOLD) the node spills to disk."""
    cluster = targets.cluster(configuration)
    node = targets.node_agent(cluster, node_id, hostname, seed.rng(configuration, "targets"))
    return resources.fill_object_store(
        cluster,
        node,
        level,
        duration,
        faults.journal_path(configuration),
        faults.dry_run(configuration),
    )


def pin_objects(
    count: int = 8,
    size: int = 1048576,
    duration: float = 30.0,
    node_id: str = "",
    hostname: str = "",
    configuration: Configuration | None = None,
) -> dict:
    """Place `count` objects of `size` bytes in a node's object store and hold them referenced
    for `duration` seconds: pinned, they may be spilled but never evicted. Freed at expiry."""
    cluster = targets.cluster(configuration)
    node = targets.node_agent(cluster, node_id, hostname, seed.rng(configuration, "targets"))
    return resources.pin_objects(
        cluster,
        node,
        count,
        size,
        duration,
        faults.journal_path(configuration),
        faults.dry_run(configuration),
    )


def hog_cpu(
    cores: int = 1,
    duration: float = 30.0,
    node_id: str = "",
    hostname: str = "",
    configuration: Configuration | None = None,
) -> dict:
    """Keep `cores` cores of a node's host busy, one spinning process each, for `duration`
    seconds. The processes end at expiry, with the harness, or by `freight chaos recover`."""
    cluster = targets.cluster(configuration)
    node = targets.node_agent(cluster, node_id, hostname, seed.rng(configuration, "targets"))
    return resources.hog_cpu(
        cluster,
        node,
        cores,
        duration,
        faults.journal_path(configuration),
        faults.dry_run(configuration),
    )


def hog_memory(
    bytes: int = 0,
    fraction: float = 0.0,
    duration: float = 30.0,
    node_id: str = "",
    hostname: str = "",
    configuration: Configuration | None = None,
) -> dict:
    """Hold `bytes` of memory (or `fraction` of the host's) resident in one process on a node's
    host for `duration` seconds; refused above what the host has available. The process ends
    at expiry, with the harness, or by `freight chaos recover`."""
    cluster = targets.cluster(configuration)
    node = targets.node_agent(cluster, node_id, hostname, seed.rng(configuration, "targets"))
    return resources.hog_memory(
        cluster,
        node,
        fraction,
        bytes,
        duration,
        faults.journal_path(configuration),
        faults.dry_run(configuration),
    )


def fill_spill_disk(
    level: float = 0.0,
    bytes: int = 0,
    duration: float = 30.0,
    node_id: str = "",
    hostname: str = "",
    configuration: Configuration | None = None,
) -> dict:
    """Take `bytes` of the disk a node spills objects to (or fill its file system up to
    `level`, a fraction of its size) with one file in its spill folder, for `duration`
    seconds; removed at expiry or by `freight chaos recover`."""
    cluster = targets.cluster(configuration)
    node = targets.node_agent(cluster, node_id, hostname, seed.rng(configuration, "targets"))
    return resources.fill_spill_disk(
        cluster,
        node,
        level,
        bytes,
        duration,
        faults.journal_path(configuration),
        faults.dry_run(configuration),
    )


def restart_head(
    storage: str = "", timeout: float = 60.0, configuration: Configuration | None = None
) -> dict:
    """Start a dead head again as runbooks/FreightHeadDown.md says (`freight start --head
    --storage FILE`, on `storage` or the store it ran on, with the options it ran with) and wait
    up to `timeout` s until every node is ALIVE. Journalled; nothing is done while the head
    runs, so it is also a safe rollback."""
    from . import oncall

    return oncall.restart_head(storage, timeout, configuration)


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
