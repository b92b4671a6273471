"""Jobs: drivers that register themselves, and drivers the head starts (``freight job submit``).

A *submitted* job's driver runs under a small supervisor process the head starts: the
supervisor leads the job's process group, runs the driver as its child, and writes how the
driver ended to ``<session_dir>/logs/job-<id>.exit``. The driver's combined stdout and stderr
go to ``<session_dir>/logs/job-<id>.log``. Its environment names the cluster
(``FREIGHT_ADDRESS``, ``FREIGHT_TOKEN``) and the job (``FREIGHT_JOB_ID``, ``FREIGHT_JOB_LABELS``),
so the ``freight.init()`` inside it registers under the submission's id and the head merges the
two into one record. States follow Ray's ``JobStatus``: PENDING, RUNNING, then SUCCEEDED, FAILED
or STOPPED.

A stopping head stops its drivers (SIGTERM to the process group, SIGKILL after
``FREIGHT_JOB_STOP_GRACE_S``). A head that dies leaves them running: the head that takes over
its control store finds each supervisor by pid (checked against its command line, so a reused
pid is not mistaken for it), watches it again, and reads the exit file once it ends; a job that
ended while no head was up is recorded from its exit file. See ``docs/jobs.md`` and
``docs/decisions/0027-submitted-jobs-outlive-a-head-crash.md``.

The decisions (id checks, end states, recovery) are plain functions; :class:`JobManager` only
carries them out with processes, files and the control store.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from loguru import logger

from freight.core.jobs import (  # the vocabulary clients share
    DRIVER,
    FAILED,
    HEAD_RESTARTED,
    PENDING,
    RUNNING,
    STOPPED,
    SUBMISSION,
    SUCCEEDED,
    TERMINAL,
    check_labels,
)
from freight.head.rpc import NotFoundError
from freight.protocol.generated import freight_pb2 as pb

if TYPE_CHECKING:  # the CLI imports the checks below without the head's machinery
    from freight.head.actors import ActorDirectory
    from freight.head.control_store import ControlStore
    from freight.head.events import EventStore

STOP_REQUESTED = "stopped by `freight job stop`"
HEAD_SHUT_DOWN = "stopped: the head shut down"
ENDED_WHILE_HEAD_DOWN = " (seen by the head after a restart)"
# Set by the head in every submitted driver's environment; a submission may not override them.
RESERVED_ENV = ("FREIGHT_ADDRESS", "FREIGHT_TOKEN", "FREIGHT_JOB_ID", "FREIGHT_JOB_LABELS")

LOG_CHUNK = 64 * 1024
LOG_POLL_S = 0.1  # how often a followed log is read again while its driver runs
# Each is matched whole (fullmatch): with `$`, a trailing newline would pass.
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# ---- checks and decisions (no I/O) -----------------------------------------------------------


def check_job_id(job_id: str, what: str = "submission id") -> str:
    """Return ``job_id`` if it can name a job (and its log file); else raise ValueError."""
    if not _JOB_ID.fullmatch(job_id):
        raise ValueError(
            f"{what} {job_id!r} is not valid: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit."
        )
    return job_id


def check_env(env: Mapping[str, str]) -> dict[str, str]:
    """Return ``env`` as a dict if every name is a variable name the head does not set itself."""
    for key, value in env.items():
        if not _ENV_KEY.fullmatch(key):
            raise ValueError(f"environment variable name {key!r} is not valid (like MY_VAR).")
        if key in RESERVED_ENV:
            raise ValueError(
                f"{key} is set by the head for every submitted driver; it cannot be overridden "
                "(use --label for job labels)."
            )
        if "\0" in value:
            raise ValueError(f"environment variable {key} contains a NUL character.")
    return dict(env)


def check_entrypoint(argv: list[str]) -> list[str]:
    """Return ``argv`` if it names a command; else raise ValueError."""
    if not argv or not argv[0].strip():
        raise ValueError(
            "the entrypoint is empty: give the command to run, e.g. "
            "`freight job submit -- python script.py`."
        )
    if any("\0" in a for a in argv):
        raise ValueError("the entrypoint contains a NUL character.")
    return argv


def find_command(command: str, working_dir: str, path: str) -> str | None:
    """Where the driver's ``command`` is, as exec would find it from ``working_dir``; or None."""
    if os.sep in command:
        full = os.path.join(working_dir, command)  # an absolute command stays as it is
        return full if os.path.isfile(full) and os.access(full, os.X_OK) else None
    return shutil.which(command, path=path)


def end_state(returncode: int, stop_reason: str) -> tuple[str, str]:
    """(state, message) of a submitted job whose driver exited with ``returncode``.

    A stop that was asked for wins over how the driver happened to end.
    """
    if stop_reason:
        return STOPPED, stop_reason
    if returncode == 0:
        return SUCCEEDED, "the driver exited with code 0"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return FAILED, f"the driver was killed by {name}"
    return FAILED, f"the driver exited with code {returncode}"


def interrupted(job: pb.JobInfo) -> bool:
    """True for a submitted job that a previous head was running when it went away."""
    return job.kind == SUBMISSION and job.state not in TERMINAL


def labels_env(labels: Mapping[str, str]) -> str:
    """Labels as ``FREIGHT_JOB_LABELS`` writes them: ``team=ml,owner=alice``."""
    return ",".join(f"{k}={v}" for k, v in labels.items())


def exit_path(job: pb.JobInfo) -> str:
    """Where a submitted job's supervisor writes its driver's exit code (beside the log)."""
    base = job.log_path[:-4] if job.log_path.endswith(".log") else job.log_path
    return base + ".exit"


def read_exit(path: str) -> int | None:
    """The exit code a supervisor recorded (negative: killed by that signal), or None."""
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None


# ---- processes ---------------------------------------------------------------------------------


# The supervisor of a submitted driver, a separate interpreter: Python code in a child forked from
# the multi-threaded head is unsafe (it crashed here with SIGSEGV). It restores the signals Python
# ignores (ignored signals survive exec), starts the driver as its child (the driver closes the
# pid pipe), tells the head the driver's pid, and waits for it, ignoring the signals a stop sends
# the group: the driver decides how to end, the supervisor records it. It does not die with the
# head, so a head that restarts can find it again (decisions/0027).
_SUPERVISOR = """\
import os, signal, sys
exit_path, pid_fd, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
for name in ("SIGPIPE", "SIGXFSZ"):
    if hasattr(signal, name):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
pid = os.fork()
if pid == 0:
    os.close(pid_fd)
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        print(f"freight: could not start {argv[0]!r}: {e}", file=sys.stderr, flush=True)
    os._exit(127)
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, lambda *_: None)
os.write(pid_fd, str(pid).encode())
os.close(pid_fd)
_, status = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(status)
with open(exit_path + ".tmp", "w") as f:
    f.write(str(code))
os.replace(exit_path + ".tmp", exit_path)
"""


def supervisor_argv(argv: list[str], exit_file: str, pid_fd: int) -> list[str]:
    """The command the head runs for a submitted job: the supervisor, which runs ``argv``."""
    return [sys.executable, "-I", "-S", "-c", _SUPERVISOR, exit_file, str(pid_fd), *argv]


def is_supervisor(pid: int, exit_file: str) -> bool:
    """True when ``pid`` is the supervisor writing ``exit_file`` (not a process that reused
    the pid of one that has gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    return exit_file.encode() in args


def _read_pid(fd: int) -> int:
    """The driver's pid, as the supervisor writes it to ``fd`` (0 if it wrote none)."""
    data = b""
    try:
        while chunk := os.read(fd, 32):
            data += chunk
    finally:
        os.close(fd)
    return int(data) if data.strip().isdigit() else 0


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the whole group has gone


@dataclass
class _Run:
    """A submitted job whose driver has not been seen to end yet."""

    job_id: str
    exit_file: str = ""
    spawned: asyncio.Event = field(default_factory=asyncio.Event)  # started, or failed to
    done: asyncio.Event = field(default_factory=asyncio.Event)  # ended and recorded
    proc: asyncio.subprocess.Process | None = None  # the supervisor, when this head started it
    pgid: int = 0  # the supervisor's pid, which leads the job's process group
    stop_reason: str = ""
    supervisor: asyncio.Task[None] | None = None


class JobManager:
    """Every job of the cluster; starts, watches, stops and reaps submitted drivers."""

    def __init__(
        self,
        store: ControlStore,
        events: EventStore,
        actors: ActorDirectory,
        session_dir: str,
        token: str,
        stop_grace_s: float,
    ) -> None:
        self.store = store
        self.events = events
        self.actors = actors
        self.session_dir = session_dir
        self.stop_grace_s = stop_grace_s
        self.head_address = ""  # set once the head's port is bound, before it serves
        self._token = token
        self._runs: dict[str, _Run] = {}
        self._closing = False
        self._adopted: list[_Run] = []  # still running after a head restart: watched again
        self._ended_while_down: list[str] = []  # their actors go once the head serves
        self._recover()

    def _recover(self) -> None:
        """Take over the submitted jobs a previous head was running: a supervisor still
        running is watched again (:meth:`adopt`); a job that ended meanwhile is recorded
        from its exit file."""
        for job in self.store.list_jobs():
            if not interrupted(job):
                continue
            path = exit_path(job)
            code = read_exit(path)
            pid = job.supervisor_pid
            if code is None and pid and is_supervisor(pid, path):
                run = self._runs[job.job_id] = _Run(job.job_id, path, pgid=pid)
                run.spawned.set()
                self._adopted.append(run)
                logger.info("job still running after a head restart", job_id=job.job_id)
                continue
            if code is None:
                job.state, job.message = FAILED, HEAD_RESTARTED
            else:
                job.state, job.message = end_state(code, "")
                job.message += ENDED_WHILE_HEAD_DOWN
                job.exit_code = code
            job.end_time = time.time()
            self.store.upsert_job(job)
            self._ended_while_down.append(job.job_id)
            logger.warning("job ended while the head was down", job_id=job.job_id)
            self.events.record(
                "JOB_FINISHED",
                f"job {job.state.lower()}: {job.message}",
                severity="INFO" if job.state == SUCCEEDED else "WARNING",
                job_id=job.job_id,
            )

    async def adopt(self) -> None:
        """Once the head serves: watch the jobs a previous head left running, and kill the
        actors of those that ended while no head was up."""
        for run in self._adopted:
            run.supervisor = asyncio.create_task(self._watch(run))
        self._adopted = []
        for job_id in self._ended_while_down:
            try:
                await self.actors.kill_job_actors(job_id, f"its job {job_id} finished")
            except Exception:
                logger.exception("could not kill the actors of job {}", job_id)
        self._ended_while_down = []

    async def _watch(self, run: _Run) -> None:
        """Wait for a supervisor this head did not start (not its child: a pidfd says when
        it ends), then record the job from its exit file."""
        try:
            fd = os.pidfd_open(run.pgid)
        except ProcessLookupError:
            fd = -1
        if fd >= 0:
            loop = asyncio.get_running_loop()
            ended: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, lambda: ended.done() or ended.set_result(None))
            try:
                await ended
            finally:
                loop.remove_reader(fd)
                os.close(fd)
        await self._ended(run, None)

    def statistics(self) -> dict[str, int]:
        """A snapshot: submitted drivers running now."""
        return {"running_submissions": len(self._runs)}

    def new_id(self) -> str:
        """A job id from the store's counter that no job holds (a submission may have taken
        one of the counter's ids as its own)."""
        while True:
            job_id = self.store.next_job_id()
            if self.store.get_job(job_id) is None:
                return job_id

    # ---- drivers that register themselves ----------------------------------------------------

    def register_driver(self, info: pb.JobInfo) -> pb.JobInfo:
        """Record a driver that called ``init()``; merge it into its submission if it has one."""
        job = self.store.get_job(info.job_id) if info.job_id else None
        if job is not None and job.kind == SUBMISSION:
            # One job, one record: the submission keeps its id, state, entrypoint, pid and
            # labels (they win over the driver's); the driver adds what only it knows.
            job.driver_address = info.driver_address or job.driver_address
            job.namespace = info.namespace or job.namespace
            merged = {**info.labels, **job.labels}
            job.labels.clear()
            job.labels.update(merged)
            self.store.upsert_job(job)
            logger.info("submitted driver joined", job_id=job.job_id, driver_pid=info.driver_pid)
            return job
        if info.job_id:
            check_job_id(info.job_id, "FREIGHT_JOB_ID")  # of a driver started by hand
        job = pb.JobInfo()
        job.CopyFrom(info)
        job.job_id = job.job_id or self.new_id()
        job.kind = job.kind or DRIVER
        job.state = RUNNING
        job.start_time = job.start_time or time.time()
        self.store.upsert_job(job)
        logger.info("job started", job_id=job.job_id, driver_pid=job.driver_pid)
        self.events.record(
            "JOB_STARTED", f"job started (driver pid {job.driver_pid})", job_id=job.job_id
        )
        return job

    async def driver_finished(self, job_id: str, state: str) -> None:
        """A driver called ``shutdown()``: end its job, or, for a submission (whose end is its
        process's exit), only clean up after it."""
        job = self.store.get_job(job_id)
        if job is None:
            raise NotFoundError(f"FinishJob: no job {job_id!r}")
        if job.kind != SUBMISSION:
            if job.state != RUNNING:
                return  # ended already (a driver's shutdown raced its agent's report)
            job.state = state or "FINISHED"
            job.end_time = time.time()
            self.store.upsert_job(job)
        lost = state == FAILED and job.kind != SUBMISSION
        why = (
            f"its driver (job {job_id}) died without shutting down"
            if lost
            else f"its job {job_id} finished"
        )
        killed = await self.actors.kill_job_actors(job_id, why)
        if job.kind == SUBMISSION:
            logger.info("submitted driver left", job_id=job_id, actors_killed=killed)
            return
        logger.info("job finished", job_id=job_id, state=job.state, actors_killed=killed)
        self.events.record(
            "JOB_FINISHED",
            f"job {job.state.lower()}",
            severity="INFO" if job.state == "FINISHED" else "WARNING",
            job_id=job_id,
        )

    # ---- submissions -------------------------------------------------------------------------

    def get(self, job_id: str) -> pb.JobInfo | None:
        """The job with this id, or None."""
        return self.store.get_job(job_id)

    async def submit(self, request: pb.SubmitJobRequest) -> pb.JobInfo:
        """Start a driver for ``request``; return its job (RUNNING, or FAILED if it could not
        start). Bad input raises ValueError and leaves no trace: no record, no file, no process.
        """
        if self._closing:
            raise ValueError("the head is shutting down; submit the job to a running cluster.")
        argv = check_entrypoint(list(request.entrypoint))
        labels = check_labels(dict(request.labels))
        extra_env = check_env(dict(request.env))
        working_dir = request.working_dir or os.getcwd()
        if not os.path.isabs(working_dir):
            raise ValueError(f"the working dir {working_dir!r} must be an absolute path.")
        if not os.path.isdir(working_dir):
            raise ValueError(f"the working dir {working_dir} is not a directory on the head.")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra_env}
        if find_command(argv[0], working_dir, env.get("PATH", os.defpath)) is None:
            raise ValueError(
                f"the command {argv[0]!r} was not found (PATH of the head, working dir "
                f"{working_dir}) or is not executable."
            )
        if request.submission_id:
            job_id = check_job_id(request.submission_id)
            if self.store.get_job(job_id) is not None:
                raise ValueError(f"a job with id {job_id!r} already exists; choose another id.")
        else:
            job_id = self.new_id()
        env.update(
            FREIGHT_ADDRESS=self.head_address,
            FREIGHT_TOKEN=self._token,
            FREIGHT_JOB_ID=job_id,
            FREIGHT_JOB_LABELS=labels_env(labels),
        )
        logs_dir = os.path.join(self.session_dir, "logs")
        os.makedirs(logs_dir, mode=0o700, exist_ok=True)
        job = pb.JobInfo(
            job_id=job_id,
            kind=SUBMISSION,
            state=PENDING,
            labels=labels,
            entrypoint=shlex.join(argv),
            start_time=time.time(),
            log_path=os.path.join(logs_dir, f"job-{job_id}.log"),
            message="starting the driver",
        )
        exit_file = exit_path(job)
        log_fd = os.open(job.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        pid_r, pid_w = os.pipe()
        try:
            if os.path.exists(exit_file):
                os.unlink(exit_file)  # a job id reused after its record was deleted
            self.store.upsert_job(job)
            run = self._runs[job_id] = _Run(job_id, exit_file)
        except BaseException:
            for fd in (log_fd, pid_r, pid_w):
                os.close(fd)
            raise
        try:
            run.proc = await asyncio.create_subprocess_exec(
                *supervisor_argv(argv, exit_file, pid_w),
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                cwd=working_dir,
                env=env,
                pass_fds=(pid_w,),
                start_new_session=True,  # its own process group, which `stop` signals
            )
        except Exception as e:  # e.g. the command vanished since the checks above
            os.write(log_fd, f"freight: could not start {job.entrypoint}: {e}\n".encode())
            os.close(pid_r)
            return self._failed_to_start(job, run, f"could not start the driver: {e}")
        except BaseException:  # cancelled: asyncio has killed and reaped the new process
            os.close(pid_r)
            self._failed_to_start(job, run, "the submission was cancelled as its driver started")
            raise
        finally:
            os.close(log_fd)
            os.close(pid_w)
        run.pgid = run.proc.pid
        driver_pid = await asyncio.to_thread(_read_pid, pid_r) or run.proc.pid
        job.state, job.driver_pid, job.message = RUNNING, driver_pid, ""
        job.supervisor_pid = run.proc.pid
        self.store.upsert_job(job)
        run.supervisor = asyncio.create_task(self._supervise(run, run.proc))
        run.spawned.set()
        logger.info("job submitted", job_id=job_id, driver_pid=driver_pid, argv=argv)
        self.events.record(
            "JOB_STARTED",
            f"job submitted: {job.entrypoint[:200]} (driver pid {driver_pid})",
            job_id=job_id,
        )
        return job

    def _failed_to_start(self, job: pb.JobInfo, run: _Run, message: str) -> pb.JobInfo:
        job.state, job.message, job.end_time = FAILED, message, time.time()
        self.store.upsert_job(job)
        self._runs.pop(job.job_id, None)
        run.spawned.set()
        run.done.set()
        logger.warning("job failed to start", job_id=job.job_id, reason=message)
        self.events.record(
            "JOB_FINISHED", f"job failed: {message}", severity="WARNING", job_id=job.job_id
        )
        return job

    async def _supervise(self, run: _Run, proc: asyncio.subprocess.Process) -> None:
        """Wait for the supervisor to exit (which reaps it), then record how the job ended."""
        await self._ended(run, await proc.wait())

    async def _ended(self, run: _Run, supervisor_code: int | None) -> None:
        """Record how a job ended: the driver's exit code from the exit file, else (the
        supervisor was killed with the group, or is not this head's child) as far as known."""
        code = read_exit(run.exit_file)
        if code is None:
            code = supervisor_code
        if code is not None:
            state, message = end_state(code, run.stop_reason)
        elif run.stop_reason:
            state, message = STOPPED, run.stop_reason
        else:
            state, message = FAILED, HEAD_RESTARTED
        try:
            job = self.store.get_job(run.job_id)
            if job is not None:
                job.state, job.message, job.exit_code = state, message, code or 0
                job.end_time = time.time()
                self.store.upsert_job(job)
        finally:
            self._runs.pop(run.job_id, None)
            run.done.set()
        logger.info("job ended", job_id=run.job_id, state=state, exit_code=code)
        self.events.record(
            "JOB_FINISHED",
            f"job {state.lower()}: {message}",
            severity="INFO" if state == SUCCEEDED else "WARNING",
            job_id=run.job_id,
        )
        try:
            await self.actors.kill_job_actors(run.job_id)
        except Exception:
            logger.exception("could not kill the actors of job {}", run.job_id)

    async def stop(self, job_id: str, reason: str = STOP_REQUESTED) -> bool:
        """Stop a submitted job's driver and wait until it has ended; False if it had already."""
        job = self.store.get_job(job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id!r}")
        if job.kind != SUBMISSION:
            raise ValueError(
                f"job {job_id} was not submitted with `freight job submit`: its driver is a "
                f"program the head did not start (pid {job.driver_pid}); stop that program."
            )
        run = self._runs.get(job_id)
        if run is None:
            return False
        first = not run.stop_reason
        if first:
            run.stop_reason = reason
        await run.spawned.wait()
        if first and run.pgid:
            await self._terminate(run, run.pgid)
        await run.done.wait()
        return True

    async def _terminate(self, run: _Run, pgid: int) -> None:
        """SIGTERM the driver's process group; SIGKILL it if the driver outlives the grace."""
        _signal_group(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(run.done.wait(), self.stop_grace_s)
        except TimeoutError:
            run.stop_reason += f" (killed with SIGKILL after {self.stop_grace_s:g} s)"
            _signal_group(pgid, signal.SIGKILL)
            await run.done.wait()
        # Whatever the driver started in its group and left behind goes too. The supervisor
        # has just ended, so the group id cannot have been reused yet.
        _signal_group(pgid, signal.SIGKILL)

    async def logs(self, job_id: str, follow: bool, offset: int = 0) -> AsyncIterator[bytes]:
        """The job's output from byte ``offset``; with ``follow``, until the driver has ended."""
        job = self.store.get_job(job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id!r}")
        if not job.log_path:
            raise NotFoundError(
                f"job {job_id} has no log: only jobs started with `freight job submit` keep one"
            )
        if offset < 0:
            raise ValueError(f"JobLogs: offset must be >= 0, got {offset}")
        run = self._runs.get(job_id)
        try:
            f = open(job.log_path, "rb")  # noqa: SIM115 (closed below, across awaits)
        except FileNotFoundError:
            raise NotFoundError(f"the log of job {job_id} ({job.log_path}) is gone") from None
        with f:
            f.seek(offset)
            while True:
                ended = run is None or run.done.is_set()  # checked before the read, so a read
                data = f.read(LOG_CHUNK)  # that finds nothing after the end has read it all
                if data:
                    yield data
                    continue
                if not follow or ended:
                    return
                assert run is not None
                try:
                    await asyncio.wait_for(run.done.wait(), LOG_POLL_S)
                except TimeoutError:
                    pass

    async def close(self) -> None:
        """Stop every running submitted driver (the head is shutting down)."""
        self._closing = True
        runs = list(self._runs.values())
        if not runs:
            return
        logger.info("stopping submitted jobs", count=len(runs))
        results = await asyncio.gather(
            *(self.stop(r.job_id, HEAD_SHUT_DOWN) for r in runs), return_exceptions=True
        )
        for run, result in zip(runs, results, strict=True):
            if isinstance(result, BaseException):
                logger.opt(exception=result).error("could not stop job {}", run.job_id)
