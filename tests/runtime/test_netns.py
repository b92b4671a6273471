"""Network namespaces as test hosts: real namespaces, a real bridge, real TCP connections.

Servers and clients inside a host are separate Python processes started through
``Host.wrap``; the root namespace connects from this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from freight.testing import wait_for_condition as wait_until
from freight.util import netns
from freight.util.netns import ForwardingError, Host, IpCommandError, NetworkLab

CONNECT_TIMEOUT = 0.5

# Serves one greeting per connection, naming the address it is bound to; prints its port.
SERVER = """
import socket, sys
server = socket.create_server((sys.argv[1], 0))
print(server.getsockname()[1], flush=True)
while True:
    conn, _ = server.accept()
    conn.sendall(b"hello from " + sys.argv[1].encode())
    conn.close()
"""

# Exits 0 after reading the greeting, 1 when the connection fails.
CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as s:
        sys.stdout.write(s.recv(100).decode())
except OSError as e:
    sys.stdout.write(repr(e))
    sys.exit(1)
"""

# Makes a lab with one host, prints what it made, and waits to be killed.
ABANDONED_LAB = """
import json, sys
from freight.util.netns import NetworkLab
lab = NetworkLab()
host = lab.add_host("orphan")
print(json.dumps({"lab_id": lab.lab_id, "bridge": lab.bridge, "netns": host.netns}), flush=True)
sys.stdin.read()
"""


# Labs of one machine share /run/freight-netns and sweep_stale(): one lab-making file at a time.
pytestmark = pytest.mark.xdist_group("netns")


# ---- helpers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _namespaces_available() -> None:
    reason = netns.unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def lab() -> Iterator[NetworkLab]:
    with NetworkLab() as lab:
        yield lab


@pytest.fixture(scope="module")
def a(lab: NetworkLab) -> Host:
    return lab.add_host("a")


@pytest.fixture(scope="module")
def b(lab: NetworkLab) -> Host:
    return lab.add_host("b")


@contextlib.contextmanager
def serving(ip: str, host: Host | None = None) -> Iterator[int]:
    """A greeting server bound to ``ip`` inside ``host`` (the root namespace if None); its port."""
    argv = [sys.executable, "-I", "-S", "-c", SERVER, ip]
    proc = subprocess.Popen(
        host.wrap(argv) if host else argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the port, once it listens; "" if it died
        assert line.strip().isdigit(), f"server did not start (exit status {proc.poll()})"
        yield int(line)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture(scope="module")
def server_on_a(a: Host) -> Iterator[int]:
    with serving(a.ip, a) as port:
        yield port


def greeting_from(host: Host, ip: str, port: int) -> str:
    """What a client inside ``host`` reads from ``ip:port`` ("" when it cannot connect)."""
    done = subprocess.run(
        host.wrap([sys.executable, "-I", "-S", "-c", CLIENT, ip, str(port), str(CONNECT_TIMEOUT)]),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    return done.stdout if done.returncode == 0 else ""


def greeting_from_root(ip: str, port: int) -> str:
    """What this process, in the root namespace, reads from ``ip:port`` ("" when it cannot)."""
    try:
        with socket.create_connection((ip, port), timeout=CONNECT_TIMEOUT) as s:
            return s.recv(100).decode()
    except OSError:
        return ""


def link_names() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True)
    return {link["ifname"] for link in json.loads(out.stdout)}


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


# ---- tests --------------------------------------------------------------------------------------


def test_two_hosts_get_distinct_addresses_in_the_lab_subnet(
    lab: NetworkLab, a: Host, b: Host
) -> None:
    addresses = {a.ip, b.ip, lab.bridge_ip}
    assert len(addresses) == 3
    assert {a.ip, b.ip} <= {str(address) for address in lab.subnet.hosts()}
    for host in (a, b):
        out = subprocess.run(
            ["ip", "-n", host.netns, "-j", "-4", "addr", "show", "dev", "eth0"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert [info["local"] for info in json.loads(out.stdout)[0]["addr_info"]] == [host.ip]


def test_a_server_in_one_host_is_reachable_from_another_host_and_from_the_root(
    a: Host, b: Host, server_on_a: int
) -> None:
    assert greeting_from(b, a.ip, server_on_a) == f"hello from {a.ip}"
    assert greeting_from_root(a.ip, server_on_a) == f"hello from {a.ip}"


def test_a_host_reaches_a_server_on_the_bridge_address(lab: NetworkLab, a: Host) -> None:
    with serving(lab.bridge_ip) as port:
        assert greeting_from(a, lab.bridge_ip, port) == f"hello from {lab.bridge_ip}"


def test_isolate_cuts_a_host_off_from_the_other_hosts_and_the_root(
    lab: NetworkLab, a: Host, b: Host, server_on_a: int
) -> None:
    assert greeting_from(b, a.ip, server_on_a)  # reachable before
    lab.isolate(a)
    try:
        assert lab.is_isolated(a)
        assert greeting_from(b, a.ip, server_on_a) == ""
        assert greeting_from_root(a.ip, server_on_a) == ""
    finally:
        lab.rejoin(a)


def test_rejoin_makes_an_isolated_host_reachable_again(
    lab: NetworkLab, a: Host, b: Host, server_on_a: int
) -> None:
    lab.isolate(a)
    assert greeting_from(b, a.ip, server_on_a) == ""
    lab.rejoin(a)
    assert not lab.is_isolated(a)
    wait_until(lambda: greeting_from(b, a.ip, server_on_a), timeout=10, what="b to reach a")
    wait_until(lambda: greeting_from_root(a.ip, server_on_a), timeout=10, what="root to reach a")


def test_close_leaves_no_namespace_bridge_or_veth_behind() -> None:
    lab = NetworkLab()
    hosts = [lab.add_host("x"), lab.add_host("y")]
    made_links = {link for link in link_names() if link.startswith(lab.bridge)}
    assert made_links == {lab.bridge, *(host.veth for host in hosts)}
    assert all(len(link) <= 15 for link in made_links)
    lab.close()
    assert not {host.netns for host in hosts} & netns_names()
    assert not made_links & link_names()
    assert not (netns.STATE_DIR / f"{lab.lab_id}.json").exists()
    lab.close()  # a second close does nothing


def test_sweep_stale_removes_a_lab_whose_creator_was_killed() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", ABANDONED_LAB],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        made = json.loads(proc.stdout.readline())
    finally:
        proc.kill()  # SIGKILL: the lab gets no chance to clean up
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
    assert made["netns"] in netns_names() and made["bridge"] in link_names()
    removed = netns.sweep_stale()
    assert made["lab_id"] in removed
    assert made["netns"] not in netns_names()
    assert not {link for link in link_names() if link.startswith(made["bridge"])}
    assert not (netns.STATE_DIR / f"{made['lab_id']}.json").exists()


def test_sweep_stale_leaves_a_live_lab_alone(lab: NetworkLab, a: Host, server_on_a: int) -> None:
    assert lab.lab_id not in netns.sweep_stale()
    assert greeting_from_root(a.ip, server_on_a) == f"hello from {a.ip}"


def test_a_failing_ip_command_names_the_command_and_its_stderr(lab: NetworkLab) -> None:
    host = lab.add_host("gone")
    subprocess.run(["ip", "link", "del", "dev", host.veth], check=True)
    with pytest.raises(IpCommandError, match=rf"`\S*ip link set dev {host.veth} down` failed") as e:
        lab.isolate(host)
    assert "Cannot find device" in str(e.value)


def test_add_host_says_why_when_hosts_cannot_reach_each_other_through_the_bridge() -> None:
    with NetworkLab(probe_timeout=0.3) as lab:
        a = lab.add_host("a")
        # The bridge no longer floods broadcasts to a, so ARP for a's address goes unanswered.
        no_flooding = ["flood", "off", "bcast_flood", "off"]
        subprocess.run(
            ["ip", "link", "set", "dev", a.veth, "type", "bridge_slave", *no_flooding], check=True
        )
        with pytest.raises(ForwardingError, match=rf"cannot reach host a \({a.ip}\)") as e:
            lab.add_host("b")
    assert "bridge-nf-call-iptables" in str(e.value) or "br_netfilter" in str(e.value)


@pytest.mark.parametrize("name", ["", "-a", "a b", "x" * 33, "a/b"])
def test_add_host_rejects_a_bad_name(lab: NetworkLab, name: str) -> None:
    with pytest.raises(ValueError, match="host name"):
        lab.add_host(name)


def test_add_host_rejects_a_name_taken_in_the_lab(lab: NetworkLab, a: Host) -> None:
    with pytest.raises(ValueError, match="already"):
        lab.add_host(a.name)
