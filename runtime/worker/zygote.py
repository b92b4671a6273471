"""The fork server: one process that imports a worker's modules once and forks workers from it.

``python -m freight.worker.zygote SESSION NODE AGENT_SOCKET PAD`` is started by the node agent
before the agent's own imports, with a connected Unix socket as its stdin. For each line
``spawn <worker id>`` it forks a worker and answers ``<worker id> <pid>`` (pid 0: the fork
failed). End of file on the socket, or the agent's death, ends it.

Each worker is forked twice (the middle process exits at once) so that it becomes a child of the
agent, which is the subreaper of its descendants (:func:`freight.util.process.become_subreaper`):
the agent waits for, signals and reaps it as if it had started it itself. The worker then puts
the command line an exec'd worker would have in place of the fork server's (``PAD`` makes the
two the same length), sends its output to ``logs/worker-<id>.out`` and runs
:func:`freight.worker.__main__.main`. See docs/decisions/0013-worker-fork-server.md.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

# Only the standard library at the top: the agent imports this module for the constants below
# before it starts the fork server, and that start is on the way to the first task.

WORKER_MODULE = "freight.worker"
ZYGOTE_MODULE = "freight.worker.zygote"
WORKER_ID_LEN = 16


def pad_argument() -> str:
    """The last argument of the fork server: its command line is then as long as a worker's."""
    return "z" * (WORKER_ID_LEN - (len(ZYGOTE_MODULE) - len(WORKER_MODULE)))


def worker_cmdline(current: list[str], worker_id: str) -> list[str]:
    """A forked worker's command line: the fork server's with the module and last argument
    swapped, so it reads like ``python -m freight.worker SESSION NODE SOCKET WORKER_ID``."""
    args = list(current)
    try:
        args[args.index(ZYGOTE_MODULE)] = WORKER_MODULE
    except ValueError:
        return args
    args[-1] = worker_id
    return args


def _preload() -> None:
    """Import what a worker runs before its first task (not gRPC: workers seldom need it).

    With tracing on, every worker loads the OpenTelemetry SDK: it is imported here once too.
    """
    import freight._api
    import freight._remote
    import freight.observe.logging
    import freight.worker.__main__  # the executor, the core worker, the protocol
    from freight.config import settings
    from freight.observe import tracing

    try:
        traced = settings.instrumentation and tracing.wanted(settings.tracing)
    except ValueError:
        traced = False  # the worker reports the bad setting itself
    if traced:
        import opentelemetry.exporter.otlp.proto.grpc.trace_exporter
        import opentelemetry.sdk.trace
        import opentelemetry.trace.propagation.tracecontext  # noqa: F401

        import freight.observe._span_export  # noqa: F401


def _fork_worker() -> tuple[int, int]:
    """Fork a worker. Returns (its pid, a pipe to close to let it start) here, pid 0 if the fork
    failed, and (-1, -1) inside the worker.

    The worker waits until that pipe ends: by then the middle process has exited and been reaped,
    so the worker already has its final parent (the agent) when it asks to die with its parent,
    and the agent has been told its pid.
    """
    release_r, release_w = os.pipe()  # the worker starts once this pipe ends
    pid_r, pid_w = os.pipe()
    try:
        middle = os.fork()
    except OSError:
        for fd in (release_r, release_w, pid_r, pid_w):
            os.close(fd)
        return 0, -1
    if middle == 0:  # the middle process: fork the worker, tell its pid, exit
        try:
            os.close(pid_r)
            worker = os.fork()
        except BaseException:
            os._exit(1)
        if worker == 0:  # the worker
            os.close(pid_w)
            os.close(release_w)
            while os.read(release_r, 1):
                pass
            os.close(release_r)
            return -1, -1
        try:
            os.write(pid_w, str(worker).encode())
        finally:
            os._exit(0)
    os.close(pid_w)
    os.close(release_r)
    data = b""
    while chunk := os.read(pid_r, 64):
        data += chunk
    os.close(pid_r)
    os.waitpid(middle, 0)  # from here on the worker's parent is the agent
    try:
        pid = int(data or b"0")
    except ValueError:
        pid = 0
    if not pid:
        os.close(release_w)
        return 0, -1
    return pid, release_w


def _valid_id(worker_id: str) -> bool:
    return len(worker_id) == WORKER_ID_LEN and all(c in "0123456789abcdef" for c in worker_id)


def serve(conn: socket.socket) -> str | None:
    """Fork a worker for each request on ``conn``; returns None when the agent hangs up, or,
    inside a forked worker, that worker's id."""
    buf = b""
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            parts = line.decode(errors="replace").split()
            if len(parts) != 2 or parts[0] != "spawn" or not _valid_id(parts[1]):
                print(f"fork server: ignoring request {line[:80]!r}", file=sys.stderr)
                continue
            worker_id = parts[1]
            pid, release = _fork_worker()
            if pid < 0:
                return worker_id
            try:
                conn.sendall(f"{worker_id} {pid}\n".encode())
            finally:
                if release >= 0:
                    os.close(release)  # after the answer: the agent knows the pid first


def _become_worker(conn: socket.socket, session_dir: str, worker_id: str) -> list[str]:
    """In a forked worker: drop the fork server's socket, take the worker's output file and
    command line; return the worker's arguments."""
    from freight.util.process import set_cmdline

    conn.close()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a new interpreter
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    log_path = os.path.join(session_dir, "logs", f"worker-{worker_id}.out")
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    args = worker_cmdline(sys.orig_argv, worker_id)
    set_cmdline(args)
    sys.orig_argv = args
    worker_args = [*sys.argv[1:4], worker_id]
    import freight.worker.__main__ as worker_main

    sys.argv = [worker_main.__file__ or WORKER_MODULE, *worker_args]
    return worker_args


def main() -> None:
    """Run the fork server; inside a forked worker, run the worker."""
    from freight.util.process import set_parent_death_signal
    from freight.util.tokens import read_token

    session_dir = sys.argv[1]
    set_parent_death_signal()
    # Ctrl-C in a driver's terminal reaches its whole process group: the agent stops on it, and
    # the fork server ends with the agent (its socket closes), never half-way through a fork.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _preload()
    # The agent starts this before it has read the token: the workers get it from here.
    os.environ["FREIGHT_TOKEN"] = read_token(session_dir)
    conn = socket.socket(fileno=0)
    worker_id = serve(conn)
    if worker_id is None:
        return
    worker_args = _become_worker(conn, session_dir, worker_id)
    from freight.worker.__main__ import main as worker_main

    worker_main(worker_args)


if __name__ == "__main__":
    main()
