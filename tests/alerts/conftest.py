"""The Prometheus and Alertmanager command-line tools the alert tests run.

Like the real-Prometheus test of tests/e2e/test_metrics.py, a missing tool skips with the reason
and how to install it, except under CI=true, where it fails: CI installs both
(scripts/install-system-deps.sh), so a missing tool there is a broken CI image.
"""

from __future__ import annotations

import os
import shutil

import pytest


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = (
            f"{name} is not installed (Debian package {package}; "
            "scripts/install-system-deps.sh installs it)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return _tool("promtool", "prometheus")


@pytest.fixture(scope="session")
def amtool() -> str:
    return _tool("amtool", "prometheus-alertmanager")


@pytest.fixture(scope="session")
def alertmanager_server() -> str:
    return _tool("prometheus-alertmanager", "prometheus-alertmanager")
