"""`freight runbook` and the on-call pack inside the installed package (no cluster)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest

FREIGHT = str(Path(sys.executable).with_name("freight"))
REPO = Path(__file__).resolve().parents[2]
PACK = REPO / "tests" / "fixtures" / "oncall"


def runbook(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NO_COLOR="1", FREIGHT_ONCALL_DIR=str(PACK))
    env.pop("FREIGHT_RUNBOOK_BASE_URL", None)
    env.update(extra)
    return subprocess.run(
        [FREIGHT, "runbook", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_lists_the_runbooks_with_their_urls_under_the_configured_base() -> None:
    out = runbook(FREIGHT_RUNBOOK_BASE_URL="https://wiki.example.test/rb/")
    assert out.returncode == 0, out.stderr
    lines = [line.split() for line in out.stdout.splitlines()]
    assert lines == [
        ["FreightHeadDown", "https://wiki.example.test/rb/FreightHeadDown.md"],
        ["FreightWatchdog", "https://wiki.example.test/rb/FreightWatchdog.md"],
    ]


def test_the_default_base_url_is_documented() -> None:
    from freight.config import DEFAULT_RUNBOOK_BASE_URL

    out = runbook()
    assert f"{DEFAULT_RUNBOOK_BASE_URL}/FreightHeadDown.md" in out.stdout
    settings_doc = (REPO / "docs" / "settings.md").read_text()
    assert "`FREIGHT_RUNBOOK_BASE_URL`" in settings_doc and DEFAULT_RUNBOOK_BASE_URL in settings_doc


def test_prints_a_runbook_as_plain_markdown_when_not_a_terminal() -> None:
    out = runbook("FreightHeadDown")
    assert out.returncode == 0, out.stderr
    assert out.stdout == (PACK / "runbooks" / "FreightHeadDown.md").read_text()


def test_renders_a_runbook_on_a_terminal() -> None:
    # A pseudo-terminal makes stdout a tty: rich renders the headings (no '#' left).
    import pty

    env = dict(os.environ, FREIGHT_ONCALL_DIR=str(PACK), NO_COLOR="1", COLUMNS="100")
    main, sub = pty.openpty()
    try:
        proc = subprocess.run(
            [FREIGHT, "runbook", "FreightHeadDown"],
            stdout=sub,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            timeout=60,
        )
        os.close(sub)
        chunks = []
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the writer side is closed and everything was read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(main)
    assert proc.returncode == 0, proc.stderr
    shown = b"".join(chunks).decode()
    assert "Meaning" in shown and "freight status" in shown
    assert "## Meaning" not in shown


def test_an_unknown_name_gives_the_close_matches_and_fails() -> None:
    out = runbook("FreightHeadDwn")
    assert out.returncode == 1
    assert "there is no runbook 'FreightHeadDwn'; did you mean FreightHeadDown" in out.stderr
    assert "`freight runbook` lists them all" in out.stderr


@pytest.mark.parametrize("name", ["../README", "/etc/passwd", "Freight HeadDown"])
def test_a_name_is_never_a_path(name: str) -> None:
    out = runbook(name)
    assert out.returncode == 1 and "there is no runbook" in out.stderr


def test_an_empty_pack_says_so(tmp_path: Path) -> None:
    out = runbook(FREIGHT_ONCALL_DIR=str(tmp_path))
    assert out.returncode == 1 and "no runbooks are installed" in out.stderr


def test_without_a_site_pack_the_shipped_runbooks_are_listed() -> None:
    shipped = sorted(p.stem for p in (REPO / "runbooks").glob("*.md") if p.name != "README.md")
    out = runbook(FREIGHT_ONCALL_DIR="")
    if shipped:
        assert out.returncode == 0, out.stderr
        assert [line.split()[0] for line in out.stdout.splitlines()] == shipped
    else:
        assert out.returncode == 1 and "no runbooks are installed" in out.stderr


def test_the_package_maps_the_top_level_folders() -> None:
    # The installed (here: editable) freight finds runbooks/ and alerts/ as package resources.
    assert Path(str(resources.files("freight.runbooks"))) == REPO / "runbooks"
    assert Path(str(resources.files("freight.alerts"))) == REPO / "alerts"


def test_a_built_wheel_carries_the_runbooks_and_alerts(tmp_path: Path) -> None:
    """Build a wheel from a copy of the source with a pack in it; install it apart; read back."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns(".venv", ".git", "*.egg-info", "build", "__pycache__", "tests")
    shutil.copytree(REPO, src, ignore=ignore)
    shutil.copytree(PACK / "runbooks", src / "runbooks", dirs_exist_ok=True)
    shutil.copytree(PACK / "alerts", src / "alerts", dirs_exist_ok=True)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("freight-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
    for member in (
        "freight/runbooks/FreightHeadDown.md",
        "freight/runbooks/FreightWatchdog.md",
        "freight/alerts/alertmanager.yml",
        "freight/alerts/rules/freight-alerts.yml",
        "freight/alerts/rules/freight-recording.yml",
    ):
        assert member in names, sorted(n for n in names if "/runbooks/" in n or "/alerts/" in n)
    # From the unpacked wheel alone (not the source), the pack locator finds them. -S: no .pth
    # files, so the editable install's finder does not map freight to the source.
    import sysconfig

    probe = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            "import sys; sys.path[:0] = sys.argv[1:]; "
            "from freight.cli import oncall_pack as p; "
            "print(p.runbook_names(), [f.name for f in p.rule_files()], "
            "p.alertmanager_file() is not None, p.pack_dir('runbooks'))",
            str(tmp_path / "site"),
            sysconfig.get_paths()["purelib"],
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("FREIGHT_")},
    )
    assert probe.returncode == 0, probe.stderr
    # Every page of the source's runbooks folder (the shipped pack and the test's), no other.
    pages = sorted(f.stem for f in (src / "runbooks").glob("*.md") if f.name != "README.md")
    assert probe.stdout.startswith(
        f"{pages} ['freight-alerts.yml', 'freight-recording.yml'] True "
        + str(tmp_path / "site" / "freight" / "runbooks")
    ), probe.stdout
