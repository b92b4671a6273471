"""Every command finds the cluster the same way, fails the same way and prints the same shapes.

One program starts a private cluster with ``freight.init()`` and runs a workload; the commands run
from "another terminal" (subprocesses with only the session root in common), as an on-call
engineer would: found with no address, with ``--address``, with ``FREIGHT_ADDRESS``; and refused
with a clear message and the documented exit code when no cluster runs, when the address does not
answer, and when the token is wrong (docs/cli.md).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from freight.testing import head_counter, short_temp_dir
from freight.testing import wait_for_condition as wait_until
from freight.util.tokens import readonly_token

FREIGHT = str(Path(sys.executable).with_name("freight"))
TASKS = 600  # enough rows that `list tasks -o json` overflows a pipe's buffer

# Commands that read the cluster, with the arguments that make each print records.
READERS: dict[str, tuple[str, ...]] = {
    "status": ("status",),
    "memory": ("memory",),
    "events": ("events",),
    "list": ("list", "tasks", "--limit", "5"),
    "get": ("get", "nodes", "0"),  # replaced by the node's id in the fixture
    "summary": ("summary", "tasks"),
    "metrics targets": ("metrics", "targets"),
    "job list": ("job", "list"),
}
ASKS_THE_HEAD = [*READERS, "timeline"]

PROGRAM = f"""
import sys
import freight

freight.init(num_cpus=2)

@freight.remote
def noop(i):
    return i

@freight.remote(max_retries=0)
def fails():
    raise ValueError("on purpose")

freight.get([noop.remote(i) for i in range({TASKS})])
try:
    freight.get(fails.remote())
except Exception:
    pass
print(freight.get_runtime_context().get_node_id(), flush=True)
sys.stdin.read()  # until the test is done
"""


def env_for(temp_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, FREIGHT_TEMP_DIR=str(temp_dir), COLUMNS="200", NO_COLOR="1")
    env.pop("FREIGHT_TOKEN", None)
    env.pop("FREIGHT_ADDRESS", None)
    return {**env, **extra}


def cli(temp_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FREIGHT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env_for(temp_dir, **env),
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def program() -> Iterator[dict[str, Any]]:
    """A program's private init() cluster, with 600 tasks done and one failed."""
    with short_temp_dir() as temp_dir, open(Path(temp_dir) / "program.err", "w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(PROGRAM)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env_for(temp_dir),
        )
        try:
            assert proc.stdout is not None and proc.stdin is not None
            node_id = proc.stdout.readline().strip()
            assert node_id, Path(err.name).read_text()
            (session,) = Path(temp_dir).glob("session_2*")
            address = json.loads((session / "head.json").read_text())["address"]
            READERS["get"] = ("get", "node", node_id[:8])

            def recorded() -> bool:  # task events reach the head a moment after the tasks end
                out = cli(Path(temp_dir), "summary", "tasks", "-o", "json")
                by_name = json.loads(out.stdout)["by_name"] if out.returncode == 0 else {}
                return bool(
                    by_name.get("noop", {}).get("total") == TASKS
                    and by_name.get("fails", {}).get("states", {}).get("FAILED") == 1
                )

            wait_until(recorded, 60, "the head to have every task's record")
            yield {"temp_dir": temp_dir, "address": address, "node_id": node_id}
        finally:
            if proc.stdin:
                proc.stdin.close()  # the program ends, and its cluster with it
            proc.wait(timeout=60)
            if proc.stdout:
                proc.stdout.close()


def _ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("how", ["newest", "--address", "FREIGHT_ADDRESS"])
@pytest.mark.parametrize("command", list(READERS))
def test_every_command_finds_a_programs_private_cluster(
    program: dict[str, Any], command: str, how: str
) -> None:
    args = READERS[command]
    if how == "--address":
        proc = cli(program["temp_dir"], *args, "--address", program["address"])
    elif how == "FREIGHT_ADDRESS":
        proc = cli(program["temp_dir"], *args, FREIGHT_ADDRESS=program["address"])
    else:
        proc = cli(program["temp_dir"], *args)
    _ok(proc)


@pytest.mark.parametrize("command", list(READERS))
def test_every_command_prints_json_and_yaml_of_one_shape(
    program: dict[str, Any], command: str
) -> None:
    as_json = cli(program["temp_dir"], *READERS[command], "-o", "json")
    _ok(as_json)
    data = json.loads(as_json.stdout)
    as_yaml = cli(program["temp_dir"], *READERS[command], "-o", "yaml")
    _ok(as_yaml)
    assert set(yaml.safe_load(as_yaml.stdout)) == set(data)
    if "items" in data:  # a list: the one envelope
        assert {"kind", "items", "returned", "warnings"} <= set(data), sorted(data)
        assert data["returned"] == len(data["items"])
    text = json.dumps(data)
    assert not any(f'"{k}"' in text for k in ("isHeadNode", "objectStoreUsed", "numObjects"))
    _ok(cli(program["temp_dir"], *READERS[command], "-o", "wide"))


def test_status_json_has_numbers_not_strings(program: dict[str, Any]) -> None:
    data = json.loads(cli(program["temp_dir"], "status", "-o", "json").stdout)
    (node,) = data["nodes"]
    assert node["node_id"] == program["node_id"] and node["is_head_node"] is True
    assert isinstance(node["stats"]["object_store_capacity"], int)
    assert node["stats"]["object_store_capacity"] > 0


@pytest.mark.parametrize("command", [*ASKS_THE_HEAD, "logs"])
def test_with_no_cluster_every_command_says_the_same_and_exits_3(command: str) -> None:
    args = READERS.get(command) or (command, "--file", "/dev/null")
    if command == "logs":
        args = ("logs",)
    with short_temp_dir() as empty:
        proc = cli(empty, *args)
    assert proc.returncode == 3, proc.stderr
    assert "no running freight cluster found" in proc.stderr, proc.stderr
    assert "freight start --head" in proc.stderr and "--address" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("via", ["--address", "FREIGHT_ADDRESS"])
@pytest.mark.parametrize("command", ASKS_THE_HEAD)
def test_an_address_that_does_not_answer_is_said_never_another_cluster_shown(
    program: dict[str, Any], command: str, via: str
) -> None:
    """With a live cluster on the machine, a named address that does not answer is an error:
    not a silent answer from the local cluster; one taken from FREIGHT_ADDRESS says so, as the
    user may not know it is set."""
    args = READERS.get(command) or (command, "--file", "/dev/null")
    dead = "127.0.0.1:1"
    if via == "--address":
        proc = cli(program["temp_dir"], *args, "--address", dead)
    else:
        proc = cli(program["temp_dir"], *args, FREIGHT_ADDRESS=dead)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"the freight cluster at {dead}" in proc.stderr and "did not answer" in proc.stderr
    if via == "FREIGHT_ADDRESS":
        assert f"{dead} (FREIGHT_ADDRESS)" in proc.stderr, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("command", ASKS_THE_HEAD)
def test_a_wrong_token_is_refused_by_every_command(program: dict[str, Any], command: str) -> None:
    args = READERS.get(command) or (command, "--file", "/dev/null")
    proc = cli(program["temp_dir"], *args, FREIGHT_TOKEN="0" * 64)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "refused" in proc.stderr and "FREIGHT_TOKEN" in proc.stderr, proc.stderr
    assert proc.stdout == ""  # nothing that looks like an (empty) answer


def test_a_malformed_address_is_a_usage_error(program: dict[str, Any]) -> None:
    proc = cli(program["temp_dir"], "status", "--address", "nonsense")
    assert proc.returncode == 2 and "HOST:PORT" in proc.stderr, proc.stderr


@pytest.mark.parametrize("fmt", ["table", "json", "yaml"])
def test_a_closed_pipe_ends_the_listing_quietly(program: dict[str, Any], fmt: str) -> None:
    """`freight list tasks --limit 600 -o FORMAT | head -1`."""
    wait_until(
        lambda: (
            json.loads(cli(program["temp_dir"], "list", "tasks", "-o", "json").stdout)["returned"]
            >= 50
        ),
        30,
        "the workload's task records at the head",
    )  # each row is some 500 bytes of JSON: the listing outgrows the pipe
    proc = subprocess.Popen(
        [FREIGHT, "list", "tasks", "--limit", str(TASKS), "-o", fmt],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env_for(program["temp_dir"]),
        pipesize=4096,  # the listing outgrows the pipe, so the writer meets the closed end
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does once it has its line
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_kinds_may_be_singular_and_times_written_as_the_help_shows(
    program: dict[str, Any], tmp_path: Path
) -> None:
    listing = json.loads(cli(program["temp_dir"], "list", "task", "-o", "json").stdout)
    assert listing["kind"] == "tasks" and listing["items"]
    drawn = []
    for since in ("-5m", "5m", "-1s"):
        trace = tmp_path / f"trace{since}.json"
        _ok(cli(program["temp_dir"], "timeline", "--file", str(trace), "--since", since))
        drawn.append(json.loads(trace.read_text())["otherData"]["freight"]["tasks_drawn"])
    assert drawn[0] == drawn[1] > 0  # "-5m" and "5m" both mean five minutes ago
    assert drawn[2] == 0  # and "-1s" one second ago: the workload ended before that
    # `events` takes the same times, and filters like `list`.
    recent = json.loads(cli(program["temp_dir"], "events", "--since", "-5m", "-o", "json").stdout)
    assert [e["kind"] for e in recent["items"]].count("JOB_STARTED") == 1, recent
    future = cli(program["temp_dir"], "events", "--since", str(time.time() + 3600), "-o", "json")
    assert json.loads(future.stdout)["items"] == []
    joined = cli(program["temp_dir"], "events", "--filter", "kind=NODE_JOINED", "-o", "json")
    assert {e["kind"] for e in json.loads(joined.stdout)["items"]} == {"NODE_JOINED"}
    for bad in (("--since", "yesterday"), ("--filter", "kind")):
        refused = cli(program["temp_dir"], "events", *bad)
        assert refused.returncode == 2 and bad[1] in refused.stderr, refused.stderr


def test_the_summary_counts_the_failed_task(program: dict[str, Any]) -> None:
    summary = json.loads(cli(program["temp_dir"], "summary", "tasks", "-o", "json").stdout)
    assert summary["by_name"]["fails"]["states"]["FAILED"] == 1
    assert summary["by_name"]["noop"]["total"] == TASKS  # exact, though records are sampled


# -- roles: the admin token and the read-only token -------------------------------------------


def _tokens(program: dict[str, Any]) -> tuple[str, str, Path]:
    (session,) = Path(program["temp_dir"]).glob("session_2*")
    admin = (session / "token").read_text().strip()
    return admin, (session / "token.readonly").read_text().strip(), session


def test_a_cluster_has_a_read_only_token_only_its_user_can_read(program: dict[str, Any]) -> None:
    admin, readonly, session = _tokens(program)
    assert readonly == readonly_token(admin) and readonly != admin
    assert stat.S_IMODE((session / "token.readonly").stat().st_mode) == 0o600


@pytest.mark.parametrize("command", list(READERS))
def test_the_read_only_token_reads_state_events_jobs_targets_and_memory(
    program: dict[str, Any], command: str
) -> None:
    _, readonly, _ = _tokens(program)
    _ok(cli(program["temp_dir"], *READERS[command], FREIGHT_TOKEN=readonly))


def test_the_read_only_token_changes_nothing(program: dict[str, Any], tmp_path: Path) -> None:
    _, readonly, session = _tokens(program)
    refused_before = head_counter(session, "freight_auth_refused_total")
    jobs_before = json.loads(cli(program["temp_dir"], "job", "list", "-o", "json").stdout)
    marker = tmp_path / "ran"
    proc = cli(
        program["temp_dir"], "job", "submit", "--no-wait", "--", sys.executable, "-c",
        f"open({str(marker)!r}, 'w').close()", FREIGHT_TOKEN=readonly,
    )  # fmt: skip
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "read-only token" in proc.stderr and "admin token" in proc.stderr, proc.stderr
    jobs_after = json.loads(cli(program["temp_dir"], "job", "list", "-o", "json").stdout)
    assert jobs_after["items"] == jobs_before["items"] and not marker.exists()
    # A program cannot join (and run code) with it either.
    joined = subprocess.run(
        [sys.executable, "-c", f"import freight; freight.init(address={program['address']!r})"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env_for(program["temp_dir"], FREIGHT_TOKEN=readonly),
    )
    assert joined.returncode != 0 and "read-only token" in joined.stderr, joined.stderr
    assert head_counter(session, "freight_auth_refused_total") >= refused_before + 2


def test_the_client_side_loads_none_of_the_heads_modules(program: dict[str, Any]) -> None:
    """The CLI's reading commands, the state API and the client layer stand on their own: a
    client machine needs none of the head's code (and a change there cannot break them)."""
    script = textwrap.dedent(
        f"""
        import contextlib, io, sys
        from freight.cli.main import main
        import freight.state, freight.client.access
        for args in {[list(a) for c, a in READERS.items() if c != "get"]!r}:
            with contextlib.redirect_stdout(io.StringIO()):
                assert main(args) == 0, args
        print(sorted(m for m in sys.modules if m.startswith("freight.head")))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=env_for(program["temp_dir"]),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
