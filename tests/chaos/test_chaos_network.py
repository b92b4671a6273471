"""Network faults of freight.chaos.actions against a real cluster whose nodes after the head run
in network namespaces of their own: each fault's chain appears in the node's namespace only, it
takes effect (a partition makes the head find the node dead, dropped packets and a bandwidth cap
show in the chain's own counters), and it is removed at expiry, by a revert, or, after a harness
was SIGKILLed, stops matching at expiry in the kernel and is removed by `freight chaos recover`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from freight.chaos import actions, journal, reverts
from freight.chaos.targets import FaultRefused
from freight.testing import Cluster, ClusterNode, connected_cluster, wait_for_condition
from freight.util import netns

REASON = netns.unavailable_reason()
# Labs of one machine share /run/freight-netns and sweep_stale(): one lab-making file at a time.
pytestmark = pytest.mark.xdist_group("netns")
if REASON is not None and os.environ.get("CI") != "true":
    pytest.skip(f"network namespaces: {REASON}", allow_module_level=True)

FREIGHT = str(Path(sys.executable).with_name("freight"))
QUICK_CHECKS = {  # so that a partition is noticed within seconds
    "FREIGHT_HEALTH_CHECK_PERIOD_S": "0.3",
    "FREIGHT_HEALTH_CHECK_TIMEOUT_S": "0.5",
    "FREIGHT_HEALTH_CHECK_FAILURE_THRESHOLD": "3",
}
# Sends UDP datagrams to port 9 (discard) of an address: traffic that crosses the node's link.
SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    try:
        s.sendto(b"x" * int(sys.argv[3]), (sys.argv[1], 9))
    except OSError:  # EPERM: a DROP rule in OUTPUT refused it
        pass
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    assert REASON is None, f"CI must run the network tests: {REASON}"
    nodes = ({"num_cpus": 1}, {"num_cpus": 0}, {"num_cpus": 0})
    with connected_cluster(*nodes, env=QUICK_CHECKS, network_namespaces=True) as c:
        yield c


@pytest.fixture
def config(cluster: Cluster, tmp_path: Path) -> dict[str, Any]:
    cluster.wait_for_nodes(60)  # a node an earlier fault cut off is back
    return {"freight_address": cluster.address, "freight_fault_journal": str(tmp_path / "f.jsonl")}


def rules(node: ClusterNode | None) -> str:
    """``iptables -S`` of the node's namespace (of the root namespace for None)."""
    argv = ["iptables", "-w", "-S"]
    argv = node.host.wrap(argv) if node is not None else argv
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def counts(node: ClusterNode, chain: str) -> dict[str, int]:
    """The chain's counters as ``iptables -L -v -x`` shows them: packets that reached the fault
    (its `seen` rule) and packets and bytes its DROP rules dropped."""
    argv = node.host.wrap(["iptables", "-w", "-L", chain, "-v", "-x", "-n"])
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    got = {"seen": 0, "dropped": 0, "dropped_bytes": 0}
    for line in out.splitlines():
        fields = line.split()
        if not fields or not fields[0].isdigit():
            continue
        if "/* seen */" in line:
            got["seen"] += int(fields[0])
        elif fields[2] == "DROP":
            got["dropped"] += int(fields[0])
            got["dropped_bytes"] += int(fields[1])
    return got


def send(node: ClusterNode, address: str, count: int, size: int = 64) -> None:
    argv = node.host.wrap([sys.executable, "-c", SEND, address, str(count), str(size)])
    subprocess.run(argv, check=True, timeout=120)


def open_chain(config: dict[str, Any], node: ClusterNode) -> str:
    """The chain of the one open injection, once it is loaded in the node's namespace."""
    found: list[str] = []

    def loaded() -> bool:
        chains = [
            str(i.undo["chain"])
            for i in journal.open_injections(config["freight_fault_journal"])
            if i.undo and i.undo["kind"] == "iptables"
        ]
        found.extend(c for c in chains if f"-N {c}" in rules(node))
        return bool(found)

    wait_for_condition(loaded, 60, "the fault's chain in the node's namespace")
    return found[0]


def in_thread(fn: Any, **kwargs: Any) -> tuple[threading.Thread, list[dict[str, Any]]]:
    done: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: done.append(fn(**kwargs)))
    thread.start()
    return thread, done


def test_partition_from_the_head_marks_the_node_dead_and_it_comes_back(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    far = cluster.nodes[1]
    root = rules(None)
    thread, done = in_thread(
        actions.partition_node, duration=300, node_id=far.node_id, configuration=config
    )
    try:
        chain = open_chain(config, far)
        cut = time.monotonic()
        assert f"-A INPUT -j {chain}" in rules(far) and f"-A OUTPUT -j {chain}" in rules(far)
        assert rules(None) == root  # the harness's own namespace is untouched
        wait_for_condition(
            lambda: far.node_id not in cluster.alive_node_ids(),
            60,
            "the head to find the cut-off node dead",
        )
        print(f"node dead {time.monotonic() - cut:.3f} s after its chain was loaded")
    finally:
        (reverted,) = actions.revert_faults(configuration=config)
        healed = time.monotonic()
        thread.join(60)
    assert reverted["result"].startswith(f"removed chain {chain} (it dropped ")
    assert done and done[0]["result"] == f"reverted by another: recovered: {reverted['result']}"
    assert (done[0]["peers"], done[0]["cut_from"]) == ("head", cluster.address.rpartition(":")[0])
    assert "FREIGHT-" not in rules(far)
    wait_for_condition(
        lambda: far.node_id in cluster.alive_node_ids(), 60, "the node to be ALIVE again"
    )
    print(f"node ALIVE again {time.monotonic() - healed:.3f} s after the revert")


def test_drop_packets_drops_about_that_fraction(cluster: Cluster, config: dict[str, Any]) -> None:
    node = cluster.nodes[2]
    thread, done = in_thread(
        actions.drop_packets, duration=300, fraction=0.5, node_id=node.node_id, configuration=config
    )
    try:
        chain = open_chain(config, node)
        send(node, cluster.nodes[1].ip, 4000)
        got = counts(node, chain)
    finally:
        actions.revert_faults(configuration=config)
        thread.join(60)
    assert got["seen"] >= 4000
    assert 0.4 < got["dropped"] / got["seen"] < 0.6, got
    assert done and "FREIGHT-" not in rules(node)


def test_limit_bandwidth_drops_what_is_over_the_rate(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    node = cluster.nodes[2]
    thread, done = in_thread(
        actions.limit_bandwidth,
        duration=300,
        rate="800kbit",
        node_id=node.node_id,
        configuration=config,
    )
    try:
        chain = open_chain(config, node)
        sent = 3000 * 1200  # 3.6 MB at once: at 100 kB/s, most of it is over the cap
        send(node, cluster.nodes[1].ip, 3000, 1200)
        got = counts(node, chain)
    finally:
        actions.revert_faults(configuration=config)
        thread.join(60)
    assert got["dropped_bytes"] > sent / 2, got
    assert done and done[0]["rate_bytes_per_s"] == 100_000
    assert "FREIGHT-" not in rules(node)


def test_a_fault_removes_its_chain_at_expiry(cluster: Cluster, config: dict[str, Any]) -> None:
    node = cluster.nodes[2]
    result = actions.drop_packets(
        duration=0.5, fraction=1.0, node_id=node.node_id, configuration=config
    )
    chain = result["chain"]
    assert re.fullmatch(r"FREIGHT-[0-9a-f]{8}", chain)
    assert result["result"].startswith(f"removed chain {chain} (it dropped ")
    assert "FREIGHT-" not in rules(node)
    inject, end = journal.read(config["freight_fault_journal"])
    assert (inject["op"], inject["signal"], inject["target"]["kind"]) == (
        "inject",
        "iptables",
        "node",
    )
    assert inject["undo"]["kind"] == "iptables" and inject["undo"]["chain"] == chain
    assert inject["undo"]["netns"]["process"]["pid"] == node.process.pid
    assert (end["op"], end["result"]) == ("end", result["result"])
    again = journal.Injection("drop_packets", {}, {}, "iptables", inject["undo"], 0.0)
    assert reverts.undo(again) == f"nothing left of chain {chain}"  # a second revert is harmless


def test_a_dry_run_names_what_a_partition_would_cut(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    plan = actions.partition_node(
        node_id=cluster.nodes[1].node_id,
        peers="nodes",
        configuration={**config, "freight_dry_run": True},
    )
    assert plan["dry_run"] is True and plan["target_node_id"] == cluster.nodes[1].node_id
    assert (plan["peers"], plan["cut_from"]) == ("nodes", cluster.nodes[2].ip)
    assert list(journal.read(config["freight_fault_journal"])) == []
    assert "FREIGHT-" not in rules(cluster.nodes[1])


def drops_to(node: ClusterNode, chain: str) -> dict[str, int]:
    """Packets each DROP rule of the chain dropped, by the address it names (its destination)."""
    argv = node.host.wrap(["iptables", "-w", "-L", chain, "-v", "-x", "-n"])
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return {
        f[8]: int(f[0])
        for f in (line.split() for line in out.splitlines())
        if len(f) > 8 and f[0].isdigit() and f[2] == "DROP" and f[8] != "0.0.0.0/0"
    }


def test_a_partition_from_the_other_nodes_spares_the_head(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    node, other = cluster.nodes[1], cluster.nodes[2]
    head = cluster.address.rpartition(":")[0]
    thread, done = in_thread(
        actions.partition_node,
        duration=300,
        node_id=node.node_id,
        peers="nodes",
        configuration=config,
    )
    try:
        chain = open_chain(config, node)
        before = drops_to(node, chain)
        send(node, other.ip, 50)
        send(node, head, 50)
        after = drops_to(node, chain)
        assert node.node_id in cluster.alive_node_ids()  # the head still hears it
    finally:
        actions.revert_faults(configuration=config)
        thread.join(60)
    assert set(after) == {f"{other.ip}"}  # one rule cuts the other node, none the head
    assert after[other.ip] >= before[other.ip] + 50
    assert done and done[0]["cut_from"] == other.ip and "FREIGHT-" not in rules(node)


HARNESS = """
import json, sys
from freight.chaos import actions
actions.drop_packets(duration=float(sys.argv[3]), fraction=1.0, node_id=sys.argv[2],
                     configuration=json.loads(sys.argv[1]))
"""


def test_a_killed_harness_s_rules_stop_at_expiry_and_recover_removes_them(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    node, peer = cluster.nodes[2], cluster.nodes[1]
    path = config["freight_fault_journal"]
    argv = [sys.executable, "-c", HARNESS, json.dumps(config), node.node_id, "15"]
    harness = subprocess.Popen(argv)
    try:
        chain = open_chain(config, node)
    finally:
        harness.kill()
        harness.wait()
    (left,) = journal.open_injections(path)
    before = counts(node, chain)["dropped"]
    send(node, peer.ip, 100)
    assert counts(node, chain)["dropped"] >= before + 100  # the rules hold, nobody reverts them
    wait_for_condition(lambda: time.time() > left.expires + 1, 60, "the fault's expiry")
    expired = time.monotonic()
    after = counts(node, chain)["dropped"]
    send(node, peer.ip, 100)
    assert counts(node, chain)["dropped"] == after  # the kernel stopped matching at expiry
    wait_for_condition(
        lambda: node.node_id in cluster.alive_node_ids(), 60, "the node to be ALIVE again"
    )
    print(f"node ALIVE again {time.monotonic() - expired:.3f} s after expiry + 1 s, no revert")
    assert f"-N {chain}" in rules(node)  # nobody removed the chain: its rules just expired

    out = subprocess.run([FREIGHT, "chaos", "recover", path], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"removed chain {chain}" in out.stdout and "1 fault(s)" in out.stdout
    assert "FREIGHT-" not in rules(node)
    again = subprocess.run([FREIGHT, "chaos", "recover", path], capture_output=True, text=True)
    assert again.returncode == 0 and "0 fault(s)" in again.stdout, again.stderr


def test_a_revert_of_a_namespace_that_is_gone_has_nothing_to_do() -> None:
    gone = {"process": {"pid": 1, "create_time": 0.0, "cmdline": ["x"]}, "inode": 1, "path": ""}
    undo = {"kind": "iptables", "netns": gone, "chain": "FREIGHT-0123abcd"}
    injection = journal.Injection("partition_node", {}, {}, "iptables", undo, 0.0)
    assert (
        reverts.undo(injection)
        == "its network namespace is gone (the node ended): nothing to revert"
    )
    bad = journal.Injection("partition_node", {}, {}, "iptables", {**undo, "chain": "INPUT"}, 0.0)
    with pytest.raises(journal.JournalError, match="not a freight fault's chain"):
        reverts.undo(bad)


def test_bad_arguments_and_a_node_without_its_own_namespace_are_refused(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    node = cluster.nodes[1].node_id
    with pytest.raises(FaultRefused, match="shares this harness's network namespace"):
        actions.partition_node(node_id=cluster.nodes[0].node_id, configuration=config)
    for fraction in (0, 1.5, "half"):
        with pytest.raises(ValueError, match="fraction must be"):
            actions.drop_packets(fraction=fraction, node_id=node, configuration=config)  # type: ignore[arg-type]
    for rate in ("fast", "1 parsec", 10, "100gbit"):
        with pytest.raises(ValueError, match="rate"):
            actions.limit_bandwidth(rate=rate, node_id=node, configuration=config)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="peers must be one of head, nodes, all"):
        actions.partition_node(peers="everyone", node_id=node, configuration=config)
    assert list(journal.read(config["freight_fault_journal"])) == []


PAUSE = """
import json, sys
from freight.chaos import actions
actions.pause_node_agent(duration=300, node_id=sys.argv[2], configuration=json.loads(sys.argv[1]))
"""


def stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def test_the_last_healthy_node_is_refused(cluster: Cluster, config: dict[str, Any]) -> None:
    """With the head node's agent paused and one node held by a network fault, the third node
    is the last healthy one: a partition of it is refused and nothing is done."""
    head_node, held, last = cluster.nodes
    pause = subprocess.Popen([sys.executable, "-c", PAUSE, json.dumps(config), head_node.node_id])
    thread: threading.Thread | None = None
    try:
        wait_for_condition(lambda: stopped(head_node.process.pid), 60, "the head node paused")
        thread, _ = in_thread(
            actions.drop_packets,
            duration=300,
            fraction=0.01,
            node_id=held.node_id,
            configuration=config,
        )
        open_chain(config, held)
        with pytest.raises(FaultRefused, match="last healthy node"):
            actions.partition_node(duration=300, node_id=last.node_id, configuration=config)
        assert "FREIGHT-" not in rules(last)
    finally:
        actions.revert_faults(configuration=config)  # continues the agent, removes the chain
        pause.kill()
        pause.wait()
        if thread is not None:
            thread.join(60)
    assert not stopped(head_node.process.pid) and "FREIGHT-" not in rules(held)
    faults = [
        r["fault"] for r in journal.read(config["freight_fault_journal"]) if r["op"] == "inject"
    ]
    assert faults == ["pause_node_agent", "drop_packets"]
    cluster.wait_for_nodes(60)
