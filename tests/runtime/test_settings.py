"""The FREIGHT_* settings: one declaration each, validated wherever they are read.

A value that is not valid is an error naming the variable, the value and what is accepted: on
access, from check_settings(), from the CLI (exit 2, one line), from init() and from the head,
agent and worker processes before they start.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import freight
from freight.config import SETTINGS, SettingsError, check_settings, settings
from freight.testing import short_temp_dir

FREIGHT = str(Path(sys.executable).with_name("freight"))

# (variable, value, the message's end): one of each kind of mistake.
INVALID = [
    (
        "FREIGHT_USE_TLS",
        "ture",
        "is not valid: expected a boolean: 1/true/yes/on or 0/false/no/off",
    ),
    ("FREIGHT_INLINE_MAX_BYTES", "100k", "is not valid: expected an integer >= 0"),
    ("FREIGHT_LEASE_PIPELINE", "0", "is not valid: expected an integer >= 1"),
    (
        "FREIGHT_MAX_FRAME_BYTES",
        "1000",
        "is not valid: expected an integer >= 1048576 and < 4294967296",
    ),
    ("FREIGHT_MEMORY_USAGE_THRESHOLD", "1.5", "is not valid: expected a number > 0 and <= 1"),
    ("FREIGHT_START_TIMEOUT_S", "soon", "is not valid: expected a number > 0"),
    ("FREIGHT_TRACING", "sometimes", "is not one of auto, on, off"),
    ("FREIGHT_SLO_SCHEDULING_LATENCY_S", "0.3", "is not one of 0.0005, 0.001, 0.0025"),
    ("FREIGHT_PRICE_CURRENCY", "euros", "is not valid: expected text matching [A-Z]{3}"),
]


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("FREIGHT_")}


@pytest.fixture
def no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith("FREIGHT_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize(("env", "value", "reason"), INVALID)
def test_a_value_that_is_not_valid_names_the_variable_the_value_and_what_is_accepted(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, reason: str
) -> None:
    monkeypatch.setenv(env, value)
    expected = f"{env}={value!r} {reason}"
    with pytest.raises(SettingsError) as on_access:
        getattr(settings, env.removeprefix("FREIGHT_").lower())
    assert str(on_access.value).startswith(expected)
    with pytest.raises(SettingsError) as checked:
        check_settings()
    assert str(checked.value).startswith(expected)


def test_check_settings_names_every_bad_variable_on_one_line(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FREIGHT_USE_TLS", "ture")
    monkeypatch.setenv("FREIGHT_EVENTS_MAX", "-5")
    with pytest.raises(SettingsError) as refused:
        check_settings()
    message = str(refused.value)
    assert "\n" not in message
    assert "FREIGHT_USE_TLS='ture'" in message and "FREIGHT_EVENTS_MAX='-5'" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("true", True), ("Yes", True), ("ON", True), ("0", False), ("off", False)],
)
def test_booleans_take_the_usual_spellings(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("FREIGHT_USE_TLS", value)
    check_settings()
    assert settings.use_tls is expected


def test_each_access_reads_the_environment_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FREIGHT_INLINE_MAX_BYTES", "10")
    assert settings.inline_max_bytes == 10
    monkeypatch.setenv("FREIGHT_INLINE_MAX_BYTES", "20")
    assert settings.inline_max_bytes == 20
    monkeypatch.setenv("FREIGHT_INLINE_MAX_BYTES", "")  # empty: the default
    assert settings.inline_max_bytes == SETTINGS["inline_max_bytes"].default
    monkeypatch.setenv("FREIGHT_INLINE_MAX_BYTES", "lots")
    with pytest.raises(SettingsError, match="FREIGHT_INLINE_MAX_BYTES='lots'"):
        _ = settings.inline_max_bytes


@pytest.mark.usefixtures("no_settings")
def test_every_default_is_valid_and_is_what_an_access_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check_settings()
    for name, setting in SETTINGS.items():
        assert getattr(settings, name) == setting.default, name
    # Each default, written into its variable, passes its own constraints.
    for setting in SETTINGS.values():
        text = {True: "1", False: "0"}.get(setting.default, str(setting.default))
        monkeypatch.setenv(setting.env, text)
    check_settings()
    for name, setting in SETTINGS.items():
        assert getattr(settings, name) == setting.default, name


def test_without_a_variable_to_validate_pydantic_is_not_loaded() -> None:
    # The CLI and the processes of a cluster start faster without it: an unset variable is its
    # default and a plain text one its text.
    code = (
        "import sys\n"
        "from freight.config import check_settings, settings\n"
        "check_settings()\n"
        "assert settings.token == 't' and settings.inline_max_bytes > 0\n"
        "print('pydantic' in sys.modules)\n"
    )
    out = _run([sys.executable, "-c", code], FREIGHT_TOKEN="t", FREIGHT_TEMP_DIR="/tmp/x")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "False\n"
    out = _run([sys.executable, "-c", code], FREIGHT_TOKEN="t", FREIGHT_LEASE_PIPELINE="4")
    assert out.stdout == "True\n"


def test_every_setting_is_declared_with_its_meaning_and_what_it_accepts() -> None:
    for name, setting in SETTINGS.items():
        assert setting.env == "FREIGHT_" + name.upper()
        assert setting.help and setting.accepted, name
    with pytest.raises(AttributeError, match="no freight setting 'inline_max_byte'"):
        _ = settings.inline_max_byte


@pytest.mark.usefixtures("no_settings")
def test_init_refuses_a_bad_value_before_it_starts_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FREIGHT_TEMP_DIR", str(tmp_path))
    monkeypatch.setenv("FREIGHT_USE_TLS", "ture")
    with pytest.raises(SettingsError, match="FREIGHT_USE_TLS='ture' is not valid"):
        freight.init()
    assert not freight.is_initialized()
    assert list(tmp_path.iterdir()) == []  # no session, so no process was started


def _run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        env={**_clean_environ(), **env},
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    "command",
    [["status"], ["list", "nodes"], ["memory"], ["demo"], ["settings"], ["start", "--head"]],
)
def test_the_cli_says_what_is_wrong_in_one_line_and_exits_2(command: list[str]) -> None:
    with short_temp_dir() as temp:
        env = {"FREIGHT_TEMP_DIR": str(temp), "FREIGHT_START_TIMEOUT_S": "-1"}
        # Read as the modules of some commands load, too: reported the same way.
        env["FREIGHT_MAX_FRAME_BYTES"] = "5"
        out = _run([FREIGHT, *command], **env)
        assert out.returncode == 2, out
        assert out.stderr == (
            "freight: FREIGHT_MAX_FRAME_BYTES='5' is not valid: expected an integer >= 1048576 "
            "and < 4294967296; FREIGHT_START_TIMEOUT_S='-1' is not valid: expected a number > 0\n"
        )
        assert out.stdout == ""
        # `freight start` stopped before it made a session, so it started no process.
        assert not temp.exists() or list(temp.iterdir()) == []


HEAD = ["-m", "freight.head", "--session-dir", "{dir}"]
AGENT = ["-m", "freight.node", "--session-dir", "{dir}", "--node-id", "n1"]
WORKER = ["-m", "freight.worker", "{dir}", "n1", "{dir}/agent.sock", "w1"]
BAD_BOOL = ("ture", "is not valid: expected a boolean")
BAD_FRAME = ("5", "is not valid: expected an integer >= 1048576")  # read as modules load


@pytest.mark.parametrize(
    ("argv", "env", "bad", "name"),
    [
        (HEAD, "FREIGHT_USE_TLS", BAD_BOOL, "freight head"),
        (HEAD, "FREIGHT_MAX_FRAME_BYTES", BAD_FRAME, "freight head"),
        (AGENT, "FREIGHT_FORK_SERVER", BAD_BOOL, "freight node agent"),
        (AGENT, "FREIGHT_MAX_FRAME_BYTES", BAD_FRAME, "freight node agent"),
        (WORKER, "FREIGHT_USE_TLS", BAD_BOOL, "freight worker"),
    ],
)
def test_the_processes_freight_starts_refuse_a_bad_value_before_they_serve(
    tmp_path: Path, argv: list[str], env: str, bad: tuple[str, str], name: str
) -> None:
    args = [a.replace("{dir}", str(tmp_path)) for a in argv]
    value, reason = bad
    out = _run([sys.executable, *args], **{env: value})
    assert out.returncode == 2, out
    assert f"{name}: {env}={value!r} {reason}" in out.stderr
    assert "Traceback" not in out.stderr
