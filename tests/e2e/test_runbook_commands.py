"""Every `freight ...` command a runbook tells on-call to type works on a real cluster.

The commands come from the ```sh blocks and the inline code of ``runbooks/*.md``. What to fill
in is written between angle brackets (``<node-id>``, ``<job-id>``, ...: runbooks/README.md); the
test fills them with the ids of one cluster that runs a workload (a driver holding an actor that
crashed and restarted, an object, finished, failed and infeasible tasks). Commands that only read
the cluster run for real on a terminal (a pty, so the tables on-call sees are what renders) and
must exit 0 with no traceback. Commands that change the cluster (start, stop, job stop,
monitoring up and down, ...) must parse with the CLI's own parser and run with ``--help``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import shlex
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from freight.cli.main import build_parser
from freight.testing import short_temp_dir
from freight.testing import wait_for_condition as wait_until

FREIGHT = str(Path(sys.executable).with_name("freight"))
RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"
_BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
_INLINE = re.compile(r"`(freight [^`]*)`")
PLACEHOLDER = re.compile(r"<([a-z][a-z0-9-]*)>")
# What a runbook may ask on-call to fill in, with a stand-in for the parser-only check.
PLACEHOLDERS = {
    "node-id": "0123456789abcdef0123456789abcdef",
    "job-id": "00000001",
    "actor-id": "0123456789abcdef01234567",
    "worker-id": "0123456789abcdef",
    "head-address": "127.0.0.1:6390",
    "control-store-file": "/var/lib/freight/control.db",
}
# Every command of the CLI by its leading words: those that only read the cluster run for real,
# those that change it run with --help. A command in neither set fails the test until it is
# classified here.
READS = {
    ("status",),
    ("memory",),
    ("logs",),
    ("events",),
    ("list",),
    ("get",),
    ("summary",),
    ("explain",),
    ("top",),
    ("timeline",),
    ("metrics", "prometheus-config"),
    ("metrics", "targets"),
    ("job", "list"),
    ("job", "status"),
    ("job", "logs"),
    ("runbook",),
    ("settings",),
    ("monitoring", "status"),
    ("chaos", "discover"),
    ("chaos", "status"),
}
CHANGES = {
    ("start",),
    ("stop",),
    ("cancel",),
    ("kill", "actor"),
    ("kill", "worker"),
    ("drain",),
    ("undrain",),
    ("demo",),
    ("job", "submit"),
    ("job", "stop"),
    ("monitoring", "up"),
    ("monitoring", "down"),
    ("chaos", "run"),
    ("chaos", "recover"),
    ("chaos", "halt"),
    ("chaos", "replay"),
    ("gameday", "run"),
    ("gameday", "note"),
}
FOLLOW = {"--follow", "-f"}  # a command that never ends on its own is checked with --help
TIMEOUT_S = 120.0


def runbook_commands() -> dict[str, list[str]]:
    """Each distinct `freight ...` command line of the runbooks -> the pages that give it."""
    out: dict[str, list[str]] = {}
    for page in sorted(RUNBOOKS.glob("*.md")):
        text = page.read_text()
        lines = [ln.strip() for b in _BLOCK.findall(text) for ln in b.splitlines()]
        lines += _INLINE.findall(text)
        for line in lines:
            if line.startswith("freight "):
                out.setdefault(line, []).append(page.stem)
    return out


COMMANDS = runbook_commands()


def argv_of(line: str, values: dict[str, str]) -> list[str]:
    """The arguments after `freight`, a trailing `# comment` dropped, placeholders filled."""
    return [
        PLACEHOLDER.sub(lambda m: values[m.group(1)], a)
        for a in shlex.split(line, comments=True)[1:]
    ]


def command_of(argv: list[str]) -> tuple[str, ...]:
    """The classified command ``argv`` runs: its longest leading words in READS or CHANGES."""
    words = [a for a in argv if not a.startswith("-")]
    for n in (2, 1):
        if tuple(words[:n]) in READS | CHANGES:
            return tuple(words[:n])
    return ()


def reads_only(argv: list[str]) -> bool:
    return command_of(argv) in READS and not FOLLOW & set(argv)


# ---- the commands, without a cluster -------------------------------------------------------------


def test_runbooks_give_commands() -> None:
    pages = {page for pages in COMMANDS.values() for page in pages}
    assert pages >= {p.stem for p in RUNBOOKS.glob("Freight*.md")}


def test_every_cli_command_is_classified() -> None:
    """A new command of the CLI must say whether it changes the cluster before a runbook uses it."""
    parser = build_parser()
    (top,) = [a for a in parser._actions if a.dest == "command"]
    found = set()
    for name, sub in top.choices.items():
        subs = [a for a in sub._actions if getattr(a, "choices", None) and a.dest != "help"]
        nested = [c for a in subs if a.nargs == "A..." for c in a.choices]
        found |= {(name, c) for c in nested} if nested else {(name,)}
    assert found == READS | CHANGES


@pytest.mark.parametrize("line", sorted(COMMANDS))
def test_runbook_command_parses_and_fills_known_placeholders(line: str) -> None:
    where = ", ".join(f"runbooks/{p}.md" for p in COMMANDS[line])
    unknown = set(PLACEHOLDER.findall(line)) - set(PLACEHOLDERS)
    assert not unknown, f"{where}: `{line}` names {unknown}; known: {sorted(PLACEHOLDERS)}"
    argv = argv_of(line, PLACEHOLDERS)
    assert not re.search(r"<[^>]*>|\b(ID|HEAD|FILE)\b", " ".join(argv)), (
        f"{where}: `{line}` has a placeholder not between angle brackets"
    )
    assert command_of(argv), f"{where}: `{line}` is no freight command"
    try:
        build_parser().parse_args(argv)
    except SystemExit as e:  # argparse's way to say the command is wrong
        pytest.fail(f"{where}: `{line}` does not parse (exit {e.code})")


# ---- the commands on a cluster ---------------------------------------------------------------------

WORKLOAD = """
import os
import sys

import freight

freight.init(address="auto")


@freight.remote
def square(i):
    return i * i


@freight.remote
def fails():
    raise ValueError("fails on purpose")


@freight.remote(num_cpus=64)
def never_fits():
    return 0


@freight.remote(max_restarts=1)
class Holder:
    def whoami(self):
        return freight.get_runtime_context().get_actor_id()

    def worker(self):
        return freight.get_runtime_context().get_worker_id()

    def crash(self):
        os._exit(1)


assert sum(freight.get([square.remote(i) for i in range(20)])) == 2470
try:
    freight.get(fails.remote())
except Exception:
    pass
pending = never_fits.remote()
holder = Holder.remote()
actor_id = freight.get(holder.whoami.remote())
crashed_worker = freight.get(holder.worker.remote())
try:
    freight.get(holder.crash.remote())
except Exception:
    pass
assert freight.get(holder.whoami.remote()) == actor_id  # restarted
held = freight.put(b"x" * (2 << 20))
print("job", freight.get_runtime_context().get_job_id())
print("actor", actor_id)
print("worker", crashed_worker)
print("ready", flush=True)
sys.stdin.read()
"""


def cli_env(temp_dir: Path) -> dict[str, str]:
    env = dict(os.environ, FREIGHT_TEMP_DIR=str(temp_dir), NO_COLOR="1", COLUMNS="200")
    for key in ("FREIGHT_TOKEN", "FREIGHT_ADDRESS", "FREIGHT_ONCALL_DIR"):
        env.pop(key, None)
    return env


def on_terminal(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run ``freight argv`` with its stdout on a terminal (200 columns), as on-call types it.
    Returns (exit code, what the terminal showed, stderr)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    err_path = cwd / "stderr"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [FREIGHT, *argv], stdin=subprocess.DEVNULL, stdout=slave, stderr=err, env=env, cwd=cwd
        )
    os.close(slave)
    shown = bytearray()
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"`freight {shlex.join(argv)}` did not end in {TIMEOUT_S:.0f} s")
            ready, _, _ = select.select([master], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the command closed the terminal (it exited)
                break
            if not chunk:
                break
            shown += chunk
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, shown.decode(errors="replace"), err_path.read_text()


def piped(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FREIGHT, *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    with short_temp_dir() as temp_dir:
        env = cli_env(temp_dir)
        started = piped(["start", "--head", "--port", "0", "--num-cpus", "2"], env)
        out = temp_dir / "driver.out"
        driver: subprocess.Popen[bytes] | None = None
        try:
            assert started.returncode == 0, started.stderr
            found = {
                key: re.search(rf"{key}:\s+(\S+)", started.stdout)
                for key in ("address", "node", "session dir")
            }
            assert all(found.values()), started.stdout
            address, node_id, session = (m.group(1) for m in found.values() if m)
            with open(out, "w") as f:
                driver = subprocess.Popen(
                    [sys.executable, "-c", textwrap.dedent(WORKLOAD)],
                    stdin=subprocess.PIPE,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    env=dict(env, PYTHONUNBUFFERED="1"),
                )

            def ready() -> bool:
                assert driver is not None
                if driver.poll() is not None:
                    pytest.fail(f"the workload exited ({driver.returncode}):\n{out.read_text()}")
                return "ready" in out.read_text()

            wait_until(ready, 120, "the workload to hold its actor, object and tasks")
            ids = dict(ln.split(maxsplit=1) for ln in out.read_text().splitlines() if " " in ln)
            yield {
                "env": env,
                "values": {
                    "node-id": node_id,
                    "job-id": ids["job"],
                    "actor-id": ids["actor"],
                    "worker-id": ids["worker"],
                    "head-address": address,
                    "control-store-file": str(Path(session) / "control.db"),
                },
            }
        finally:
            if driver is not None:
                assert driver.stdin is not None
                driver.stdin.close()
                try:
                    driver.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    driver.kill()
                    driver.wait()
            piped(["stop"], env)
            prefix = str(temp_dir) + os.sep
            for p in psutil.process_iter(["cmdline"]):
                if any(a.startswith(prefix) for a in p.info["cmdline"] or ()):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        p.send_signal(signal.SIGKILL)


@pytest.mark.parametrize("line", sorted(COMMANDS))
def test_runbook_command_works_on_a_cluster(
    cluster: dict[str, Any], line: str, tmp_path: Path
) -> None:
    where = ", ".join(f"runbooks/{p}.md" for p in COMMANDS[line])
    argv = argv_of(line, cluster["values"])
    if reads_only(argv):
        code, shown, err = on_terminal(argv, cluster["env"], tmp_path)
    else:
        proc = piped([*argv, "--help"], cluster["env"])
        code, shown, err = proc.returncode, proc.stdout, proc.stderr
        assert "usage: freight" in shown, f"{where}: `{line} --help` printed no usage"
    said = f"{where}: `freight {shlex.join(argv)}` exited {code}\n{shown[-3000:]}\n{err[-3000:]}"
    assert code == 0, said
    # The command itself did not crash (log lines may carry the tracebacks of failed tasks).
    assert not re.search(r'File "[^"]*/(runtime|freight)/cli/', shown + err), said


def test_list_nodes_shows_the_last_heartbeat_the_runbook_points_at(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    # FreightNodeHeartbeatAgeHigh: "`freight list nodes` shows each node's `last_heartbeat`"
    code, shown, err = on_terminal(["list", "nodes"], cluster["env"], tmp_path)
    assert code == 0, err
    assert "last heartbeat" in shown, shown
    assert cluster["values"]["node-id"][:12] in shown, shown
