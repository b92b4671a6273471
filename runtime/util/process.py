"""Process-level helpers shared by the launcher, the head, node agents and workers.

Start-up handshake: a launcher gives a process it starts the write end of a pipe
(``--ready-fd N``); the process writes one JSON line there once it serves
(:func:`announce_ready`), and the launcher waits on the read end (:func:`read_ready`). The
launcher wakes the moment the line arrives, or the moment the process dies (end of file), with
no polling of files.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
MAX_READY_LINE = 65536


def _prctl(option: int, arg: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(option, arg, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to kill this process when its parent dies, so nothing is left behind."""
    if not _prctl(_PR_SET_PDEATHSIG, sig):
        return
    if os.getppid() == 1:  # the parent is already gone
        os._exit(1)


def become_subreaper() -> bool:
    """Make this process the parent of its orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``).

    A node agent does this so that workers forked by its fork server (a child of the agent) are
    the agent's children, as if it had started them itself. Returns whether it worked.
    """
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def set_cmdline(args: list[str]) -> bool:
    """Make ``/proc/self/cmdline`` (``ps``, psutil) show ``args``, which must fill it exactly.

    A forked process keeps its parent's command line; a worker forked by the fork server puts
    the one an exec'd worker would have in its place. The new arguments must have the same
    total length as the old ones (the kernel shows the argument area as it is). Linux only.
    """
    data = b"\0".join(os.fsencode(a) for a in args) + b"\0"
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        # Fields 48 and 49 of stat (1-based) are arg_start and arg_end; field 3 is fields[0].
        start, end = int(fields[45]), int(fields[46])
    except (OSError, IndexError, ValueError):
        return False
    if end - start != len(data):
        return False
    ctypes.memmove(start, data, len(data))
    return True


def identity(pid: int | None = None) -> dict[str, Any]:
    """What tells process ``pid`` (default: this one) from a later one given the same pid: its
    start time and command line, to record in the files that name it (``head.json``, node
    files). Empty when the process is gone."""
    import psutil

    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            return {"pid": proc.pid, "create_time": proc.create_time(), "cmdline": proc.cmdline()}
    except psutil.Error:
        return {}


def is_recorded_process(info: Mapping[str, Any]) -> bool:
    """Whether the live process with ``info["pid"]`` is the one ``info`` recorded (same start
    time and command line, as :func:`identity` gives them), so that a signal meant for it never
    reaches a process that got its pid later. A record without them proves nothing: False."""
    pid, started, cmdline = info.get("pid"), info.get("create_time"), info.get("cmdline")
    if not isinstance(pid, int) or not isinstance(started, (int, float)) or not cmdline:
        return False
    now = identity(pid)
    if not now or now["cmdline"] != cmdline:
        return False
    # psutil derives start times from clock ticks since boot: equal to the tick when the same.
    return abs(float(now["create_time"]) - float(started)) < 0.01


def wait_exit(pid: int, timeout: float) -> None:
    """Wait up to ``timeout`` for ``pid`` to exit: woken by the exit where Linux has pidfds, else
    a short wait (the caller checks again either way)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        time.sleep(min(timeout, 0.02))  # no pidfd: poll the other process's state
        return
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)


def signal_recorded(info: Mapping[str, Any], sig: int) -> bool:
    """Send ``sig`` to the process ``info`` records (as :func:`identity` gives it), only if that
    is the process its pid names now: checked through a pidfd, which keeps naming that process
    even if it exits meanwhile, so the signal never reaches a process that got the pid later.
    Returns whether it was sent."""
    try:
        fd = os.pidfd_open(info["pid"])
    except OSError:
        return False  # gone
    try:
        if is_recorded_process(info):
            signal.pidfd_send_signal(fd, sig)
            return True
        return False
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def announce_ready(fds: Iterable[int], info: Mapping[str, Any]) -> None:
    """Write ``info`` as one JSON line to each ready pipe in ``fds``, then close them."""
    line = (json.dumps(dict(info), separators=(",", ":")) + "\n").encode()
    for fd in fds:
        try:
            os.write(fd, line)
        except OSError:
            pass  # the launcher stopped waiting; the files in the session directory still tell
        finally:
            try:
                os.close(fd)
            except OSError:
                pass


def read_ready(fd: int, timeout: float) -> dict[str, Any] | None:
    """Wait for the JSON line a starting process writes to the ready pipe ``fd``.

    Returns the line's object, or None when the pipe closed without one (the process exited).
    Raises TimeoutError after ``timeout`` seconds. Does not close ``fd``.
    """
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no ready line within {timeout} s")
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return None
        buf += chunk
        if len(buf) > MAX_READY_LINE:
            raise ValueError("the ready line is too long")
    try:
        value = json.loads(buf.split(b"\n", 1)[0])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def setup_process_logging(
    session_dir: str,
    name: str,
    component: str = "",
    static_ids: Mapping[str, Any] | None = None,
    current_ids: Callable[[], Mapping[str, Any] | None] | None = None,
) -> str:
    """Send this process's loguru records to ``SESSION/logs/<name>.log`` as JSON lines.

    Each record carries ``component`` (default: ``name`` up to its first ``-``), the fixed
    ``static_ids`` and whatever ``current_ids()`` returns (see :mod:`freight.observe.logging`).
    """
    from freight.config import settings
    from freight.observe.logging import configure_logging

    return configure_logging(
        session_dir,
        name,
        component or name.split("-", 1)[0],
        level=settings.log_level,
        static_ids=static_ids,
        current_ids=current_ids,
    )
