"""Network faults: cut a node off, drop a share of its packets, cap its bandwidth, with iptables
rules in the node's own network namespace.

A node's network namespace is its agent's (``/proc/PID/ns/net``). Each fault writes its rules
into one chain of its own, ``FREIGHT-<first 8 hex of the injection id>``, jumped to from the
namespace's INPUT and OUTPUT (a node's namespace forwards nothing), loaded in one
``iptables-restore --noflush`` so a fault is all there or not at all. Loopback traffic returns
first: the agent keeps talking to its own workers. A node that shares the harness's network
namespace is refused: rules there would cut the whole host.

Reverted three ways, all the same code (:func:`undo_rules`, the journal's ``iptables`` kind):
by the harness at expiry (also when the run is interrupted), by whoever reverts open
injections (`freight chaos recover`, halt, the watchdog) when the harness died, and by the
kernel itself: every rule carries the ``time`` match ``--datestop`` (UTC) of the fault's
expiry, so it stops matching then even if nothing runs; the empty chain stays until a revert
removes it.

Latency is not here: this kernel has no netem, and delays go through the runtime's RPC fault
hooks instead.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from freight import state
from freight.client import access
from freight.util.process import is_recorded_process

from . import faults, journal, targets
from .journal import Injection, JournalError
from .targets import FaultRefused, ProcessTarget

PEERS = ("head", "nodes", "all")
MIN_RATE = 1000  # bytes per second: below this hashlimit's byte counting rounds to nothing
MAX_RATE = 1_000_000_000  # bytes per second (8 gbit): the most hashlimit counts exactly
CHAIN = re.compile(r"FREIGHT-[0-9a-f]{8}")
COMMAND_TIMEOUT_S = 30.0
# How often a holding harness looks at the journal for a revert someone else made (halt,
# recover): it then returns at once instead of holding a fault that is gone.
JOURNAL_POLL_S = 0.5
RATE_UNITS = {  # tc's units: "bit" ones count bits, "bps" ones bytes, each per second
    "bit": 1 / 8,
    "kbit": 1000 / 8,
    "mbit": 1000**2 / 8,
    "gbit": 1000**3 / 8,
    "bps": 1,
    "kbps": 1000,
    "mbps": 1000**2,
}
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*")


@dataclass(frozen=True)
class Netns:
    """How a revert finds a node's network namespace again: through its agent (pid, start time
    and command line, so a later process given the pid is never entered), else through the name
    it is bound to under /run/netns; either way only if it is still the namespace with
    ``inode``."""

    process: dict[str, Any]
    inode: int
    path: str  # /run/netns/NAME bound to the same namespace, "" when none

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: Any) -> Netns:
        if not isinstance(record, dict) or not isinstance(record.get("inode"), int):
            raise JournalError(
                f"the journal's network namespace record {record!r} lacks its inode; find the "
                "node's namespace by hand (`ip netns list`) and delete its FREIGHT- chain"
            )
        return cls(dict(record.get("process") or {}), record["inode"], str(record.get("path", "")))


@dataclass(frozen=True)
class Counters:
    """What a fault's chain counted: packets that reached it, and those its rules dropped."""

    packets: int
    dropped: int
    dropped_bytes: int


# ---- commands -----------------------------------------------------------------------------


def _tool(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise FaultRefused(
            f"network faults need the `{name}` command (Debian package {package}; "
            "scripts/install-system-deps.sh installs it)"
        )
    return path


def _run(fd: int, argv: list[str], stdin: str = "") -> str:
    """Run ``argv`` inside the network namespace open at ``fd``; its stdout."""
    full = [_tool("nsenter", "util-linux"), f"--net=/proc/self/fd/{fd}", *argv]
    try:
        done = subprocess.run(
            full,
            input=stdin,
            capture_output=True,
            text=True,
            pass_fds=(fd,),
            timeout=COMMAND_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise access.CommandFailed(
            f"`{' '.join(argv)}` timed out after {COMMAND_TIMEOUT_S:g} s"
        ) from None
    if done.returncode != 0:
        raise access.CommandFailed(
            f"`{' '.join(argv)}` in the node's network namespace failed "
            f"(exit {done.returncode}): {done.stderr.strip() or '(no stderr)'}"
        )
    return done.stdout


def _save(fd: int) -> str:
    return _run(fd, [_tool("iptables-save", "iptables"), "-c", "-t", "filter"])


def _restore(fd: int, lines: list[str]) -> None:
    script = "\n".join(["*filter", *lines, "COMMIT", ""])
    _run(fd, [_tool("iptables-restore", "iptables"), "--noflush", "--wait"], script)


# ---- the node's namespace -----------------------------------------------------------------


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def node_netns(target: ProcessTarget) -> Netns:
    """The network namespace of ``target``'s agent; refused when it is the harness's own."""
    if os.geteuid() != 0:
        raise FaultRefused(
            f"network faults change iptables rules and need root (this harness runs as uid "
            f"{os.geteuid()})"
        )
    inode = _inode(f"/proc/{target.pid}/ns/net")
    if inode is None or not is_recorded_process(target.process):
        raise FaultRefused(f"the agent of node {target.node_id} (pid {target.pid}) has ended")
    if inode == _inode("/proc/self/ns/net"):
        raise FaultRefused(
            f"node {target.node_id} shares this harness's network namespace (it is not isolated): "
            "rules there would cut the whole host. Network faults need nodes in network "
            "namespaces of their own, e.g. freight.testing.Cluster(network_namespaces=True)"
        )
    named = ""
    try:
        names = sorted(os.listdir("/run/netns"))
    except OSError:
        names = []
    for name in names:
        if _inode(os.path.join("/run/netns", name)) == inode:
            named = os.path.join("/run/netns", name)
            break
    return Netns(dict(target.process), inode, named)


@contextmanager
def _entered(ns: Netns) -> Iterator[int | None]:
    """An open descriptor of the namespace ``ns`` records (None when it is gone): held open
    while commands run in it, so it is the namespace checked, whatever happens to the pid."""
    for path, proven in (
        (f"/proc/{ns.process.get('pid')}/ns/net", lambda: is_recorded_process(ns.process)),
        (ns.path, lambda: True),
    ):
        if not path:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if os.fstat(fd).st_ino == ns.inode and proven():
                yield fd
                return
        finally:
            os.close(fd)
    yield None


# ---- rules --------------------------------------------------------------------------------


def chain_name(injection_id: str) -> str:
    return f"FREIGHT-{injection_id[:8]}"


def check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise access.UsageError(f"fraction must be a number from 0 to 1, got {fraction!r}")
    if not 0 < fraction <= 1:
        raise access.UsageError(
            f"fraction must be more than 0 and at most 1 (0.2 drops one packet in five), got "
            f"{fraction!r}"
        )
    return float(fraction)


def parse_rate(rate: str | int | float) -> int:
    """Bytes per second from ``rate``: a number of bytes per second, or a string with tc's units
    ("800kbit", "1mbit": bits per second; "100kbps": bytes per second; k = 1000)."""
    units = ", ".join(RATE_UNITS)
    if isinstance(rate, bool) or not isinstance(rate, int | float | str):
        raise access.UsageError(
            f"rate must be bytes per second or a string like '1mbit', got {rate!r}"
        )
    if isinstance(rate, str):
        match = _RATE.fullmatch(rate.lower())
        if match is None or (match.group(2) or "bps") not in RATE_UNITS:
            raise access.UsageError(
                f"rate {rate!r} is not a number with a unit ({units}; bit units count bits per "
                "second, bps units bytes per second), e.g. '1mbit'"
            )
        value = float(match.group(1)) * RATE_UNITS[match.group(2) or "bps"]
    else:
        value = float(rate)
    if not MIN_RATE <= value <= MAX_RATE:
        raise access.UsageError(
            f"rate must be from {MIN_RATE} bytes/s (8kbit) to {MAX_RATE} bytes/s (8gbit), got "
            f"{rate!r} = {value:g} bytes/s"
        )
    return int(value)


def check_peers(peers: str) -> str:
    if peers not in PEERS:
        raise access.UsageError(
            f"peers must be one of {', '.join(PEERS)} (head: cut the node from the head; nodes: "
            f"from every other node with an address of its own; all: from everything), got "
            f"{peers!r}"
        )
    return peers


def head_ip(cluster: access.Target) -> str:
    import socket

    host = cluster.address.rpartition(":")[0].strip("[]")
    try:
        return socket.gethostbyname(host)
    except OSError as e:
        raise FaultRefused(f"the head's address {cluster.address} does not resolve: {e}") from None


def partition_addresses(cluster: access.Target, node_id: str, peers: str) -> list[str]:
    """The addresses a partition of ``node_id`` from ``peers`` cuts ([] for everything)."""
    if peers == "all":
        return []
    head = head_ip(cluster)
    if peers == "head":
        return [head]
    others = sorted(
        {
            str(n.get("node_ip") or "")
            for n in targets.alive_nodes(cluster)
            if n["node_id"] != node_id and n.get("node_ip")
        }
        - {head, ""}
    )
    if not others:
        raise FaultRefused(
            f"no other node has an address of its own to cut node {node_id} from (the head "
            "node shares the head's address): use peers=head or peers=all"
        )
    return others


def partition_rules(addresses: list[str]) -> list[str]:
    """Drop everything to and from ``addresses`` (every address when empty)."""
    if not addresses:
        return ["-j DROP"]
    return [r for a in addresses for r in (f"-s {a}/32 -j DROP", f"-d {a}/32 -j DROP")]


def drop_rules(fraction: float) -> list[str]:
    # statistic's probability has 31 bits: 1.0 is written as plain DROP, which it means.
    if fraction >= 1:
        return ["-j DROP"]
    return [f"-m statistic --mode random --probability {fraction:.8f} -j DROP"]


def bandwidth_rules(chain: str, node_ip: str, rate: int) -> list[str]:
    """A cap of ``rate`` bytes/s each way; packets over it are dropped (a policer: TCP slows
    down to it)."""
    tag = chain.removeprefix("FREIGHT-")
    limit = f"-m hashlimit --hashlimit-above {rate}b/s"  # hashlimit picks a burst that fits
    return [
        f"-d {node_ip}/32 {limit} --hashlimit-name fr{tag}in -j DROP",
        f"-s {node_ip}/32 {limit} --hashlimit-name fr{tag}out -j DROP",
    ]


def chain_lines(chain: str, rules: list[str], expires: float) -> list[str]:
    """The iptables-restore lines of a fault's chain: loopback returns, a counting rule (every
    packet that reaches the fault), ``rules``, each matching only until ``expires``."""
    # The time match compares whole seconds and matches through the --datestop second: the
    # rules stop matching within a second after ``expires``.
    stop = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(math.floor(expires)))
    until = f"-m time --datestop {stop}"
    return [
        f":{chain} - [0:0]",
        f"-A {chain} -i lo -j RETURN",
        f"-A {chain} -o lo -j RETURN",
        f"-A {chain} {until} -m comment --comment seen",
        *(f"-A {chain} {until} {rule}" for rule in rules),
        f"-I INPUT 1 -j {chain}",
        f"-I OUTPUT 1 -j {chain}",
    ]


def _counters(saved: str, chain: str) -> Counters:
    """Packets that reached ``chain`` and those it dropped, from ``iptables-save -c`` lines
    (``[packets:bytes] -A CHAIN ...``)."""
    packets = dropped = dropped_bytes = 0
    for line in saved.splitlines():
        match = re.fullmatch(rf"\[(\d+):(\d+)\] -A {chain} (.*)", line.strip())
        if match is None:
            continue
        count, size, rule = int(match.group(1)), int(match.group(2)), match.group(3)
        if "--comment seen" in rule:
            packets += count
        elif rule.endswith("-j DROP"):
            dropped, dropped_bytes = dropped + count, dropped_bytes + size
    return Counters(packets, dropped, dropped_bytes)


def remove_chain(ns: Netns, chain: str) -> str:
    """Delete ``chain`` and the jumps to it in the namespace ``ns`` records, in one
    iptables-restore; what it did. Idempotent: a second call finds nothing left."""
    if CHAIN.fullmatch(chain) is None:
        raise JournalError(
            f"the journal names the chain {chain!r}, which is not a freight fault's chain "
            "(FREIGHT- and 8 hex digits): nothing was deleted; look at the node's rules by hand"
        )
    with _entered(ns) as fd:
        if fd is None:
            return "its network namespace is gone (the node ended): nothing to revert"
        # Two reverts may meet (the harness at expiry, recover): the one whose restore fails
        # because the other removed the chain first looks again and finds nothing left.
        for attempt in (1, 2):
            saved = _save(fd)
            jumps = [
                f"-D {line.split('] ', 1)[-1].removeprefix('-A ')}"
                for line in saved.splitlines()
                if line.endswith(f" -j {chain}")
            ]
            exists = f":{chain} " in saved
            if not jumps and not exists:
                return f"nothing left of chain {chain}"
            found = _counters(saved, chain)
            try:
                _restore(fd, [*jumps, *((f"-F {chain}", f"-X {chain}") if exists else ())])
                break
            except access.CommandFailed:
                if attempt == 2:
                    raise
    return (
        f"removed chain {chain} (it dropped {found.dropped} of {found.packets} packets, "
        f"{found.dropped_bytes} bytes)"
    )


def undo_rules(injection: Injection) -> str:
    """The journal's ``iptables`` revert: remove the injection's chain from the node's network
    namespace, if both are still there."""
    assert injection.undo is not None
    return remove_chain(
        Netns.from_dict(injection.undo.get("netns")), str(injection.undo.get("chain"))
    )


# ---- a fault, from start to revert ---------------------------------------------------------

RuleMaker = Callable[[str], list[str]]  # the fault's chain name -> its rules
# (cluster, target) -> the rules' maker and what the fault does, for results and dry runs
Plan = Callable[[access.Target, ProcessTarget], tuple[RuleMaker, dict[str, Any]]]


def _still_open(path: str, injection_id: str) -> bool:
    return any(i.id == injection_id for i in journal.open_injections(path))


def _end_result(path: str, injection_id: str) -> str:
    ends = [r for r in journal.read(path) if r["op"] == "end" and r.get("id") == injection_id]
    return str(ends[-1].get("result", "")) if ends else ""


def hold_rules(
    fault: str,
    target: ProcessTarget,
    ns: Netns,
    duration: float,
    path: str,
    make_rules: RuleMaker,
) -> faults.FaultResult:
    """Journal the fault, load its chain, hold it for ``duration`` seconds (or until someone
    else reverted it) and remove it."""
    injection_id = uuid.uuid4().hex
    chain = chain_name(injection_id)
    expires = time.time() + duration
    undo = {"kind": "iptables", "netns": ns.as_dict(), "chain": chain}
    injection = Injection(
        fault, target.describe(), target.process, "iptables", undo, expires, id=injection_id
    )
    rules = chain_lines(chain, make_rules(chain), expires)
    journal.write_injection(path, injection)
    started = time.monotonic()
    result = "not applied"
    try:
        with _entered(ns) as fd:
            if fd is None:
                raise FaultRefused(f"the network namespace of node {target.node_id} is gone")
            _restore(fd, rules)
        # The fault itself: the rules stay this long, unless a revert by someone else (halt,
        # recover) ended the injection first.
        while (left := expires - time.time()) > 0 and _still_open(path, injection_id):
            time.sleep(min(left, JOURNAL_POLL_S))
    finally:
        if _still_open(path, injection_id):
            result = remove_chain(ns, chain)
            journal.write_end(path, injection_id, result)
        else:
            result = "reverted by another: " + _end_result(path, injection_id)
    return faults.FaultResult(
        fault,
        target.describe(),
        target.pid,
        "iptables",
        time.monotonic() - started,
        result,
        injection_id,
    )


def network_fault(
    fault: str,
    configuration: dict[str, Any] | None,
    node_id: str,
    hostname: str,
    duration: float,
    plan: Plan,
) -> dict[str, Any]:
    """A network fault on the node named by ``node_id``/``hostname`` with the rules ``plan``
    makes, under the rules every fault follows: time-boxed, never the last healthy node, a node
    in a namespace of its own, only planned in a dry run. Returns once reverted."""
    duration = faults.check_duration(duration)
    cluster = targets.cluster(configuration)
    path = faults.journal_path(configuration)
    target = targets.node_agent(cluster, node_id, hostname)
    ns = node_netns(target)
    make_rules, details = plan(cluster, target)
    faults.refuse_last_healthy_node(cluster, target.node_id, path)
    if faults.dry_run(configuration):
        return faults.planned(cluster, fault, target.describe(), duration=duration, **details)
    done = hold_rules(fault, target, ns, duration, path, make_rules)
    return {**done.as_dict(), "chain": chain_name(done.injection_id), **details}


def node_ip(cluster: access.Target, target: ProcessTarget) -> str:
    row = state.get_state("nodes", target.node_id, address=cluster) or {}
    address = str(row.get("node_ip") or "")
    if not address:
        raise FaultRefused(f"the head lists no address for node {target.node_id}")
    return address


def partition(
    configuration: dict[str, Any] | None,
    node_id: str,
    hostname: str,
    duration: float,
    peers: str,
) -> dict[str, Any]:
    """Cut the node off from ``peers`` (every packet either way dropped)."""
    check_peers(peers)

    def plan(cluster: access.Target, target: ProcessTarget) -> tuple[RuleMaker, dict[str, Any]]:
        addresses = partition_addresses(cluster, target.node_id, peers)
        cut = {"peers": peers, "cut_from": ",".join(addresses) or "everything"}
        return (lambda chain: partition_rules(addresses)), cut

    return network_fault("partition_node", configuration, node_id, hostname, duration, plan)


def drop(
    configuration: dict[str, Any] | None,
    node_id: str,
    hostname: str,
    duration: float,
    fraction: float,
) -> dict[str, Any]:
    """Drop each packet to or from the node with probability ``fraction``."""
    fraction = check_fraction(fraction)

    def plan(cluster: access.Target, target: ProcessTarget) -> tuple[RuleMaker, dict[str, Any]]:
        return (lambda chain: drop_rules(fraction)), {"fraction": fraction}

    return network_fault("drop_packets", configuration, node_id, hostname, duration, plan)


def limit(
    configuration: dict[str, Any] | None,
    node_id: str,
    hostname: str,
    duration: float,
    rate: str | int | float,
) -> dict[str, Any]:
    """Cap the node's traffic at ``rate`` each way."""
    per_second = parse_rate(rate)

    def plan(cluster: access.Target, target: ProcessTarget) -> tuple[RuleMaker, dict[str, Any]]:
        address = node_ip(cluster, target)
        details = {"rate_bytes_per_s": per_second, "node_ip": address}
        return (lambda chain: bandwidth_rules(chain, address, per_second)), details

    return network_fault("limit_bandwidth", configuration, node_id, hostname, duration, plan)
