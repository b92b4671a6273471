"""Linux network namespaces as separate test hosts on one machine.

A :class:`NetworkLab` makes a bridge in the root namespace with a free private /24 and gives
the bridge the ``.1`` address: a head process in the root namespace binds there. Each
:meth:`NetworkLab.add_host` makes a namespace whose ``eth0`` (one end of a veth pair, the other
end a port of the bridge) has the next address, with ``lo`` up and a default route via the
bridge. :meth:`NetworkLab.isolate` sets the host's bridge port down, a real partition from every
other host and from the root namespace; :meth:`NetworkLab.rejoin` sets it up again. Commands run
inside a host through :meth:`Host.wrap` (``ip netns exec``: Python 3.11 has no ``os.setns``).

Stale labs: every lab keeps a state file ``/run/freight-netns/<lab id>.json`` naming its
creator (pid and the pid's start time, so a reused pid does not count as alive) and every
namespace and link it made. The file is written *before* each thing is made, so nothing exists
that the file does not name. :func:`sweep_stale` removes the labs whose creator is gone, and
also anything carrying the lab naming scheme whose lab has no state file at all. The state lives
under ``/run`` because namespaces and links live exactly as long as ``/run`` (until reboot),
whereas ``/tmp`` may be cleaned while they still exist.

Names: lab ids are 6 hex digits; the bridge is ``fr-<id>``, the bridge side of a host's veth
pair ``fr-<id>-<n>`` (``n`` is the last octet of the host's address, so at most 13 characters,
under Linux's 15), and the namespace ``freight-<id>-<host name>``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "STATE_DIR",
    "ForwardingError",
    "Host",
    "IpCommandError",
    "NetnsError",
    "NetworkLab",
    "sweep_stale",
    "unavailable_reason",
]

STATE_DIR = Path("/run/freight-netns")
_NETNS_DIR = Path("/run/netns")
_BRIDGE_NF = Path("/proc/sys/net/bridge")
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_LAB_NETNS = re.compile(r"freight-([0-9a-f]{6})-.+")
_LAB_LINK = re.compile(r"fr-([0-9a-f]{6})(-\d{1,3})?")
_PROBE_NETNS = re.compile(r"freight-probe-(\d+)-[0-9a-f]+")
_INNER_IF = "eth0"
_COMMAND_TIMEOUT = 30.0

# Connects to port 9 (discard) of each address and prints those it could not reach. A refused
# connection counts as reached: the SYN arrived and the RST came back.
_PROBE_SCRIPT = """
import json, socket, sys
failed = {}
for ip in json.loads(sys.argv[1]):
    s = socket.socket()
    s.settimeout(float(sys.argv[2]))
    try:
        s.connect((ip, 9))
    except ConnectionRefusedError:
        pass
    except OSError as e:
        failed[ip] = repr(e)
    finally:
        s.close()
print(json.dumps(failed))
"""


class NetnsError(RuntimeError):
    """A network namespace lab could not be set up, changed or removed."""


class IpCommandError(NetnsError):
    """An ``ip`` command failed; the message names the command and its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(
            f"`{' '.join(self.argv)}` failed with exit status {returncode}: "
            f"{self.stderr or '(no stderr)'}"
        )


class ForwardingError(NetnsError):
    """Traffic does not pass the lab's bridge; the message says what is likely in the way."""


# ---- running ip ---------------------------------------------------------------------------------


def _ip_path() -> str:
    path = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise NetnsError(
            "the `ip` command is not installed (Debian package iproute2; "
            "scripts/install-system-deps.sh installs it)"
        )
    return path


def _ip(*args: str) -> str:
    """Run ``ip args``; return its stdout, or raise :class:`IpCommandError`."""
    argv = [_ip_path(), *args]
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise IpCommandError(argv, -1, f"timed out after {_COMMAND_TIMEOUT} s") from None
    if done.returncode != 0:
        raise IpCommandError(argv, done.returncode, done.stderr)
    return done.stdout


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = _ip("-j", *args).strip()
    return list(json.loads(out)) if out else []


def _link_names() -> set[str]:
    return {link["ifname"] for link in _ip_json("link", "show") if "ifname" in link}


def _netns_names() -> set[str]:
    try:
        return set(os.listdir(_NETNS_DIR))
    except FileNotFoundError:
        return set()


def _delete_link(name: str) -> None:
    """Delete a link (both ends, for a veth pair); nothing to do if it is gone already."""
    try:
        _ip("link", "del", "dev", name)
    except IpCommandError:
        if name in _link_names():
            raise


def _delete_netns(name: str, kill_processes: bool = False) -> None:
    """Delete a namespace; nothing to do if it is gone already."""
    if not (_NETNS_DIR / name).exists():
        return
    if kill_processes:
        with contextlib.suppress(IpCommandError):
            for pid in _ip("netns", "pids", name).split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
    try:
        _ip("netns", "del", name)
    except IpCommandError:
        if (_NETNS_DIR / name).exists():
            raise


# ---- availability -------------------------------------------------------------------------------


@functools.cache
def unavailable_reason() -> str | None:
    """None when network namespace labs can be made here, else a sentence saying why not.

    Tries once (the answer is cached) to make a throwaway namespace with a bridge and a veth
    pair inside it, so the check leaves nothing in the root namespace.
    """
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return f"making network namespaces needs root (this process runs as uid {os.geteuid()})"
    try:
        _ip_path()
    except NetnsError as e:
        return str(e)
    name = f"freight-probe-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", name)
        try:
            _ip("-n", name, "link", "add", "name", "frprobe0", "type", "bridge")
            _ip("-n", name, "link", "add", "frprobe1", "type", "veth", "peer", "name", "frprobe2")
        finally:
            _delete_netns(name)
    except NetnsError as e:
        return f"network namespaces cannot be made here: {e}"
    return None


# ---- state files --------------------------------------------------------------------------------


def _start_time(pid: int) -> int | None:
    """The pid's start time in clock ticks since boot, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 2 (the command) is in parentheses and may contain spaces; field 22 is the start time.
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int, start_time: int | None) -> bool:
    current = _start_time(pid)
    return current is not None and (start_time is None or current == start_time)


@dataclass
class _LabState:
    """What a lab made, as written to its state file (enough for anyone to remove it)."""

    lab_id: str
    pid: int
    start_time: int | None
    subnet: str = ""
    bridge: str = ""
    namespaces: list[str] = field(default_factory=list)
    veths: list[str] = field(default_factory=list)
    closed: bool = False

    @property
    def path(self) -> Path:
        return STATE_DIR / f"{self.lab_id}.json"

    def save(self) -> None:
        record = {k: v for k, v in self.__dict__.items() if k != "closed"}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, self.path)

    @classmethod
    def load(cls, path: Path) -> _LabState | None:
        try:
            record = json.loads(path.read_text())
            known = {k: v for k, v in record.items() if k in cls.__dataclass_fields__}
            return cls(**known)
        except (OSError, ValueError, TypeError, AttributeError):
            return None


def _remove_lab(state: _LabState, kill_processes: bool = False) -> None:
    """Remove everything ``state`` names, then its state file; raise the first failure."""
    if state.closed:
        return
    errors: list[NetnsError] = []
    # Deleting either end of a veth pair deletes both, even while processes keep the namespace.
    for veth in state.veths:
        with _collect(errors):
            _delete_link(veth)
    for ns in state.namespaces:
        with _collect(errors):
            _delete_netns(ns, kill_processes)
    if state.bridge:
        with _collect(errors):
            _delete_link(state.bridge)
    if errors:
        raise errors[0]
    state.path.unlink(missing_ok=True)
    state.closed = True


@contextlib.contextmanager
def _collect(errors: list[NetnsError]) -> Iterator[None]:
    """Note a failure and go on: removal does as much as it can before it raises."""
    try:
        yield
    except NetnsError as e:
        errors.append(e)


def _close_if_creator(state: _LabState) -> None:
    # A forked child inherits the lab object; only the creator removes the lab.
    if os.getpid() == state.pid:
        _remove_lab(state)


@contextlib.contextmanager
def _state_lock() -> Iterator[None]:
    """Serialise subnet choice between labs made at the same time by different processes."""
    STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(STATE_DIR / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def sweep_stale() -> list[str]:
    """Remove the labs whose creating process has died; return their lab ids.

    Processes still running inside a stale lab's namespaces are killed (they are cut off from
    everything anyway). Links and namespaces named like a lab's but without any state file are
    removed too, as are throwaway namespaces of :func:`unavailable_reason` whose process died.
    """
    # Things are listed before state files: a lab writes its state file before it makes
    # anything, so whatever is listed here either has a state file below or is an orphan.
    namespaces = _netns_names()
    links = _link_names()
    states: dict[str, _LabState | None] = {}
    if STATE_DIR.is_dir():
        for path in STATE_DIR.glob("*.json"):
            # An unreadable file (another version's?) still marks its lab as not an orphan.
            state = _LabState.load(path)
            states[path.stem] = state if state is not None and state.lab_id == path.stem else None
    stale = {
        lab_id: state
        for lab_id, state in states.items()
        if state is not None and not _alive(state.pid, state.start_time)
    }
    orphans: dict[str, _LabState] = {}
    for name in namespaces | links:
        ns_match = _LAB_NETNS.fullmatch(name) if name in namespaces else None
        link_match = _LAB_LINK.fullmatch(name) if name in links else None
        match = ns_match or link_match
        if match is None or match.group(1) in states:
            continue
        orphan = orphans.setdefault(match.group(1), _LabState(match.group(1), 0, None))
        if ns_match:
            orphan.namespaces.append(name)
        if link_match and link_match.group(2):
            orphan.veths.append(name)
        elif link_match:
            orphan.bridge = name
    removed = []
    for lab_id, state in [*stale.items(), *orphans.items()]:
        _remove_lab(state, kill_processes=True)
        removed.append(lab_id)
    for name in namespaces:
        match = _PROBE_NETNS.fullmatch(name)
        if match is not None and _start_time(int(match.group(1))) is None:
            _delete_netns(name)
    return sorted(removed)


# ---- the lab ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """One test host: a network namespace with its own address on the lab's bridge."""

    name: str
    ip: str
    netns: str
    veth: str = field(repr=False)  # the bridge-side end of the host's veth pair

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` inside this host's namespace."""
        if isinstance(argv, str) or not all(isinstance(a, str) for a in argv):
            raise TypeError(f"argv must be a list of strings, not {argv!r}")
        if not argv:
            raise ValueError("argv must name a command to run")
        return [_ip_path(), "netns", "exec", self.netns, *argv]


def _used_networks() -> list[ipaddress.IPv4Network]:
    used = []
    for link in _ip_json("-4", "addr", "show"):
        for info in link.get("addr_info", []):
            with contextlib.suppress(KeyError, ValueError):
                used.append(
                    ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False)
                )
    for route in _ip_json("-4", "route", "show", "table", "all"):
        destination = route.get("dst", "default")
        if destination != "default":
            with contextlib.suppress(ValueError):
                used.append(ipaddress.IPv4Network(destination, strict=False))
    return used


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    for second in range(203, 255):
        for third in range(256):
            candidate = ipaddress.IPv4Network(f"10.{second}.{third}.0/24")
            if not any(candidate.overlaps(network) for network in used):
                return candidate
    raise NetnsError("no free /24 between 10.203.0.0 and 10.254.255.0 for a network lab")


def _bridge_nf_explanation() -> str:
    """Why bridged traffic may be dropped here, from what /proc shows."""
    ports = "`bridge -d link` shows the state of the bridge's ports"
    if not _BRIDGE_NF.is_dir():
        return f"br_netfilter is not loaded, so no firewall sees bridged traffic; {ports}"
    settings = {
        path.name: path.read_text().strip()
        for path in sorted(_BRIDGE_NF.glob("bridge-nf-call-*"))
        if path.is_file()
    }
    shown = ", ".join(f"net.bridge.{k}={v}" for k, v in settings.items())
    if settings.get("bridge-nf-call-iptables") != "1":
        return f"no firewall sees bridged IPv4 traffic here ({shown}); {ports}"
    tables = Path("/proc/net/ip_tables_names")
    loaded = tables.read_text().split() if tables.is_file() else []
    return (
        f"{shown}: bridged IPv4 traffic passes the root namespace's FORWARD chain, where a DROP "
        f"policy or rule (Docker sets one) drops it (iptables tables loaded: "
        f"{', '.join(loaded) or 'none'}; nftables rules are not visible from here). Accept it "
        "(`iptables -I FORWARD -m physdev --physdev-is-bridged -j ACCEPT`) or keep bridged "
        f"traffic out of iptables (`sysctl -w net.bridge.bridge-nf-call-iptables=0`); {ports}"
    )


class NetworkLab:
    """A bridge in the root namespace and hosts (network namespaces) attached to it.

    Use as a context manager, or call :meth:`close`; a lab still open when the interpreter
    exits is removed then, and one whose process died is removed by :func:`sweep_stale`.
    With ``verify`` (the default), :meth:`add_host` checks that the new host reaches the
    bridge address and another host, and raises :class:`ForwardingError` saying why if not.
    """

    def __init__(self, verify: bool = True, probe_timeout: float = 2.0) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise NetnsError(reason)
        if probe_timeout <= 0:
            raise ValueError(f"probe_timeout must be positive seconds, not {probe_timeout!r}")
        self._verify = verify
        self._probe_timeout = probe_timeout
        self._hosts: dict[str, Host] = {}
        self._isolated: set[str] = set()
        with _state_lock():
            # The id only has to be unique on this machine, not reproducible: not a seeded draw.
            lab_id = secrets.token_hex(3)
            while (STATE_DIR / f"{lab_id}.json").exists():
                lab_id = secrets.token_hex(3)
            pid = os.getpid()
            self._state = _LabState(lab_id, pid, _start_time(pid))
            # Removes the lab at interpreter exit if nobody closed it; holds no reference to self.
            self._finalizer = weakref.finalize(self, _close_if_creator, self._state)
            try:
                self.subnet = _free_subnet()
                self._state.subnet = str(self.subnet)
                self._state.bridge = f"fr-{lab_id}"
                self._state.save()
                self._make_bridge()
            except BaseException:
                # Raise what went wrong; sweep_stale() removes whatever this leaves behind.
                with contextlib.suppress(NetnsError):
                    self.close()
                raise
        self.lab_id = lab_id
        self.bridge = self._state.bridge
        self.bridge_ip = str(self.subnet.network_address + 1)

    def _make_bridge(self) -> None:
        bridge, subnet = self._state.bridge, self.subnet
        # A fixed MAC: otherwise the bridge takes its lowest port's, which changes as hosts
        # join, and the hosts' ARP entries for the bridge address go stale.
        mac = "02:66:72:" + ":".join(self._state.lab_id[i : i + 2] for i in (0, 2, 4))
        _ip("link", "add", "name", bridge, "address", mac, "type", "bridge", "forward_delay", "0")
        _ip("addr", "add", f"{subnet.network_address + 1}/{subnet.prefixlen}", "dev", bridge)
        _ip("link", "set", "dev", bridge, "up")

    @property
    def hosts(self) -> tuple[Host, ...]:
        """The hosts added so far, in order."""
        return tuple(self._hosts.values())

    def add_host(self, name: str) -> Host:
        """Make a host: a namespace with the next address of the lab's /24 on the bridge."""
        if not isinstance(name, str):
            raise TypeError(f"host name must be a str, not {type(name).__name__}")
        if not _HOST_NAME.fullmatch(name):
            raise ValueError(
                f"host name {name!r} must be 1 to 32 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
        if name in self._hosts:
            raise ValueError(f"this lab has a host named {name!r} already")
        if self._state.closed:
            raise NetnsError(f"lab {self._state.lab_id} is closed")
        octet = len(self._hosts) + 2
        if octet > 254:
            raise NetnsError(f"lab {self._state.lab_id} is full: a /24 holds 253 hosts")
        host = Host(
            name=name,
            ip=str(self.subnet.network_address + octet),
            netns=f"freight-{self._state.lab_id}-{name}",
            veth=f"{self._state.bridge}-{octet}",
        )
        self._state.namespaces.append(host.netns)
        self._state.veths.append(host.veth)
        self._state.save()
        self._hosts[name] = host
        ns = host.netns
        _ip("netns", "add", ns)
        # The peer is made inside the namespace, so its name (eth0) cannot clash with the root's.
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", _INNER_IF, "netns", ns)
        _ip("link", "set", "dev", host.veth, "master", self.bridge, "up")
        _ip("-n", ns, "addr", "add", f"{host.ip}/{self.subnet.prefixlen}", "dev", _INNER_IF)
        _ip("-n", ns, "link", "set", "dev", "lo", "up")
        _ip("-n", ns, "link", "set", "dev", _INNER_IF, "up")
        _ip("-n", ns, "route", "add", "default", "via", self.bridge_ip)
        if self._verify:
            self._check_forwarding(host)
        return host

    def _check_forwarding(self, host: Host) -> None:
        peers = [h for h in self._hosts.values() if h != host and h.name not in self._isolated]
        targets = [self.bridge_ip, *(h.ip for h in peers[:1])]
        script = [sys.executable, "-I", "-S", "-c", _PROBE_SCRIPT]
        argv = host.wrap([*script, json.dumps(targets), str(self._probe_timeout)])
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=self._probe_timeout * len(targets) + _COMMAND_TIMEOUT,
        )
        if done.returncode != 0:
            raise NetnsError(f"probe `{' '.join(argv[:5])} ...` failed: {done.stderr.strip()}")
        failed: dict[str, str] = json.loads(done.stdout)
        if self.bridge_ip in failed:
            raise ForwardingError(
                f"host {host.name} ({host.ip}) cannot reach the bridge address "
                f"{self.bridge_ip} on {self.bridge}: {failed[self.bridge_ip]}. The root "
                "namespace's INPUT firewall may drop it; " + _bridge_nf_explanation()
            )
        if failed:
            peer = peers[0]
            raise ForwardingError(
                f"host {host.name} ({host.ip}) cannot reach host {peer.name} ({peer.ip}) "
                f"through bridge {self.bridge}: {failed[peer.ip]}. " + _bridge_nf_explanation()
            )

    def _own(self, host: Host) -> Host:
        if not isinstance(host, Host):
            raise TypeError(f"expected a Host from add_host(), not {type(host).__name__}")
        if self._hosts.get(host.name) != host:
            raise ValueError(f"host {host.name!r} is not a host of lab {self._state.lab_id}")
        return host

    def is_isolated(self, host: Host) -> bool:
        """Whether ``host`` is cut off by :meth:`isolate` (and not rejoined since)."""
        return self._own(host).name in self._isolated

    def isolate(self, host: Host) -> None:
        """Cut ``host`` off from every other host and from the root namespace.

        Its bridge port goes down: packets are dropped both ways, and open TCP connections
        stall rather than close, as in a real partition.
        """
        _ip("link", "set", "dev", self._own(host).veth, "down")
        self._isolated.add(host.name)

    def rejoin(self, host: Host, timeout: float = 5.0) -> None:
        """Undo :meth:`isolate`: set the port up and wait until both ends of the link are up."""
        _ip("link", "set", "dev", self._own(host).veth, "up")
        self._isolated.discard(host.name)
        deadline = time.monotonic() + timeout
        while True:
            outer = _ip_json("link", "show", "dev", host.veth)
            inner = _ip_json("-n", host.netns, "link", "show", "dev", _INNER_IF)
            states = [link.get("operstate") for link in (*outer, *inner)]
            if states == ["UP", "UP"]:
                return
            if time.monotonic() > deadline:
                raise NetnsError(
                    f"host {host.name}'s link did not come up within {timeout} s "
                    f"(operstate bridge side, host side: {states})"
                )
            time.sleep(0.01)  # poll interval; the deadline above bounds the wait

    def close(self) -> None:
        """Remove every namespace, link and file this lab made; calling it again does nothing.

        Processes still running inside a host keep running, without a network: stop them first.
        """
        _close_if_creator(self._state)
        self._finalizer.detach()

    def __enter__(self) -> NetworkLab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._state.closed else f"{len(self._hosts)} hosts"
        return f"<NetworkLab {self._state.lab_id} {self._state.subnet} {state}>"
