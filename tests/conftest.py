"""Suite-wide settings: every cluster the tests start checks its state machines as it runs.

Under pytest-xdist (``-n 2``) each worker process gets a session root of its own, and a test
file's tests stay in one worker (its module-scoped cluster is started once); files whose tests
cannot run beside each other share an ``xdist_group`` and so run in one worker, one at a time.
"""

import os
import tempfile

import pytest

# Lifecycle state machines validate themselves after every transition (DESIGN: Scheduling).
os.environ.setdefault("FREIGHT_VALIDATE_STATE", "1")

# address="auto" and `freight stop` find the newest session under FREIGHT_TEMP_DIR: a worker
# must never see (or stop) the other worker's clusters.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER:
    _root = os.environ.get("FREIGHT_TEMP_DIR") or os.path.join(
        tempfile.gettempdir(), "freight-sessions"
    )
    os.environ["FREIGHT_TEMP_DIR"] = f"{_root.rstrip(os.sep)}-{_WORKER}"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``--dist loadgroup``, a test without an ``xdist_group`` mark is grouped by its file,
    so the file's module-scoped fixtures live in one worker (as ``--dist loadfile`` would do).
    Runs before xdist's own hook, which reads the marks."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(
                pytest.mark.xdist_group(item.path.relative_to(config.rootpath).as_posix())
            )
