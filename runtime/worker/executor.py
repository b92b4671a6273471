"""Running tasks and hosting one actor inside a worker process."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import pickle
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cloudpickle
from loguru import logger

from freight import exceptions as exc
from freight.client.args import EMPTY_ARGS, substitute
from freight.client.core_worker import CoreWorker
from freight.config import settings
from freight.objects import serialization as ser
from freight.observe import tracing
from freight.observe.recorder import RECORDER
from freight.protocol import frames
from freight.protocol import messages as m
from freight.worker import log_levels
from freight.worker.checkpoint import Checkpointer, checkpoint_dir


@dataclass(slots=True)
class TaskContext:
    task_id: bytes
    name: str
    job_id: str
    actor_id: str
    caller: str
    placement_group: tuple[Any, ...] = ()  # (group id, capture children) it runs in, or ()


class _Cancelled(BaseException):
    """Raised inside a running task by the cancellation signal handler."""


class _ArgumentLost(Exception):
    """An argument in another node's store could not be read: that node died with it."""

    def __init__(self, error: exc.ObjectLostError) -> None:
        super().__init__(str(error))
        self.error = error


class _StoreFailed(Exception):
    """The task's return value could not be stored (the node agent did not answer, or its
    store could not be written): a failure of the runtime, not of the task's code."""

    def __init__(self, name: str, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.error = exc.RaySystemError(
            f"the worker could not store the return value of {name}: {cause}"
        )


class CallPool:
    """The threads of an actor with ``max_concurrency`` > 1: calls go on one queue, and a new
    thread starts only when every running one is busy (up to the limit).

    Leaner than a ThreadPoolExecutor on the per-call path: no Future per call (the reply goes
    back on the caller's connection), one queue put and one wake-up."""

    def __init__(self, limit: int, run: Any) -> None:
        self.limit = limit
        self.run = run
        self.calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.threads = 0
        self.idle = 0

    def submit(self, call: tuple[Any, ...]) -> None:
        with self.lock:
            start = self.idle == 0 and self.threads < self.limit
            if start:
                self.threads += 1
            else:
                self.idle -= 1  # one idle thread takes this call (or it queues behind all)
        self.calls.put(call)
        if start:
            threading.Thread(target=self._serve, name="freight-actor", daemon=True).start()

    def _serve(self) -> None:
        calls, run, lock = self.calls, self.run, self.lock
        while True:
            run(*calls.get())
            with lock:
                self.idle += 1


class Executor:
    def __init__(self, cw: CoreWorker) -> None:
        self.cw = cw
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.functions: dict[bytes, Any] = {}
        self.function_blobs: dict[bytes, bytes] = {}
        self.actor: Any = None
        self.checkpointer: Checkpointer | None = None
        self.actor_id = ""
        self.actor_class = ""
        self.actor_group: tuple[Any, ...] = ()  # the placement group the actor runs in
        self.pool: CallPool | None = None
        # Per task name, the lock-free increment of freight_tasks_started_total.
        self.started: dict[str, Callable[[], object]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.semaphore: asyncio.Semaphore | None = None
        self.main_task: bytes = b""
        self.cancel_target: bytes = b""
        self.cancel_queued: set[bytes] = set()
        # Guards main_task, cancel_target, cancel_queued and interruptible against the reader
        # threads that deliver CancelTask: a cancel is never lost between two of them.
        self.cancel_lock = threading.Lock()
        self.interruptible = False  # the main thread is inside user code
        # Task start/finish lines only at DEBUG: a bool test keeps the hot path free of logging.
        self.log_tasks = settings.log_level.upper() in ("DEBUG", "TRACE")
        signal.signal(signal.SIGINT, self._on_sigint)

    # -- dispatch ----------------------------------------------------------------------------

    def on_push(self, fs: frames.FrameSocket, msg: Any, caller: str) -> None:
        if type(msg) is m.PushTask and msg.function_blob:
            # Keep the function as it arrives: the task carrying it may be cancelled before it
            # runs, and later tasks on this connection are sent without it.
            self.function_blobs.setdefault(msg.function_id, msg.function_blob)
        if type(msg) is m.CancelTask:
            self.cancel(msg)
        elif self.pool is not None:
            self.pool.submit((fs, msg, caller))
        elif self.loop is not None:
            asyncio.run_coroutine_threadsafe(self.execute_async(fs, msg, caller), self.loop)
        else:
            self.queue.put((fs, msg, caller))

    def on_agent(self, msg: Any) -> None:
        if type(msg) is m.CreateActor:
            self.queue.put(msg)
        elif type(msg) is m.ExitWorker:
            if tracing.ENABLED:
                tracing.flush(1.0)  # os._exit skips exit hooks: send the spans first
            os._exit(0)

    def run_forever(self) -> None:
        while True:
            item = self.queue.get()
            if type(item) is m.CreateActor:
                self.create_actor(item)
                continue
            tid = item[1].task_id
            with self.cancel_lock:
                skip = tid in self.cancel_queued
                self.cancel_queued.discard(tid)
                if not skip:
                    self.main_task = tid
            if skip:
                err = exc.TaskCancelledError(tid.hex())
                now = time.time()
                self._reply(item[0], m.TaskDone(tid, None, pickle.dumps(err), False, [], now, now))
                continue
            try:
                self.execute(*item)
            finally:
                with self.cancel_lock:
                    self.main_task = self.cancel_target = b""

    # -- cancellation ------------------------------------------------------------------------

    def cancel(self, msg: m.CancelTask) -> None:
        if msg.recursive:
            self.cw.submitter.cancel_children(msg.force)
        with self.cancel_lock:
            if self.main_task != msg.task_id:
                self.cancel_queued.add(msg.task_id)  # skipped when the main loop reaches it
                return
            if self.actor_id:
                return  # a running actor call is not interrupted: the actor's state is at stake
            if msg.force:
                os._exit(1)
            self.cancel_target = msg.task_id
            if self.interruptible:
                os.kill(os.getpid(), signal.SIGINT)
            # Otherwise the task checks cancel_target itself before it enters user code.

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.interruptible and self.cancel_target and self.cancel_target == self.main_task:
            self.interruptible = False
            raise _Cancelled()

    def _call(self, msg: m.PushTask, fn: Any, args: Any, kwargs: Any) -> Any:
        """Run user code; on the main thread, a cancel may interrupt it (SIGINT)."""
        if self.main_task != msg.task_id:
            return fn(*args, **kwargs)
        with self.cancel_lock:
            if self.cancel_target == msg.task_id:
                raise _Cancelled()
            self.interruptible = True
        try:
            return fn(*args, **kwargs)
        finally:
            self.interruptible = False

    # -- actors ------------------------------------------------------------------------------

    def create_actor(self, msg: m.CreateActor) -> None:
        spec = pickle.loads(msg.creation_spec)
        if msg.gpu_ids:  # the actor's GPUs, for its whole life
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, msg.gpu_ids))
        self.actor_id = msg.actor_id
        self.actor_class = spec["class_name"]
        self.actor_group = tuple(spec.get("placement_group", ()))
        ctx = TaskContext(
            b"", f"{self.actor_class}.__init__", msg.job_id, msg.actor_id, "", self.actor_group
        )
        self.cw.job_id = msg.job_id
        self.cw.driver_address = spec.get("driver", "")
        self.cw.namespace = spec.get("namespace", "")
        token = self.cw.set_current_task(ctx)
        carrier = spec.get("trace_context")
        span = None
        if tracing.ENABLED and carrier:
            span = tracing.task_begin(
                ctx.name, carrier, b"", msg.job_id, msg.actor_id, f"actor creation {ctx.name}"
            )
        error = b""
        try:
            cls = cloudpickle.loads(spec["class_blob"])
            args, kwargs = self._load_args(spec["args"], spec["arg_refs"])
            self.actor = cls(*args, **kwargs)
            if Checkpointer.wanted(self.actor):
                where = checkpoint_dir(self.cw.session_dir)
                self.checkpointer = Checkpointer(self.actor, msg.actor_id, where)
                self.checkpointer.restore()  # a restart: back to the last saved state
        except BaseException as e:
            e = e.error if isinstance(e, _ArgumentLost) else e
            tracing.finish(span, e)
            error = self._error_blob(f"{self.actor_class}.__init__", e)
        finally:
            self._end_task(token)
            if span is not None:
                tracing.finish(span)
        is_async = spec.get("is_async", False)
        concurrency = spec.get("max_concurrency", 1000 if is_async else 1)
        if not error:
            if is_async:
                self.loop = asyncio.new_event_loop()
                self.semaphore = asyncio.Semaphore(concurrency)
                threading.Thread(
                    target=self.loop.run_forever, name="freight-actor-loop", daemon=True
                ).start()
            elif concurrency > 1:
                self.pool = CallPool(concurrency, self.execute)
        self.cw.agent.send(m.ActorReady(msg.actor_id, error))

    # -- execution ---------------------------------------------------------------------------

    def _function(self, msg: m.PushTask) -> Any:
        if msg.actor_id:
            if self.actor is None:
                raise exc.RayActorError("this worker hosts no actor", msg.actor_id)
            return getattr(self.actor, msg.method)
        fn = self.functions.get(msg.function_id)
        if fn is None:
            blob = msg.function_blob or self.function_blobs.get(msg.function_id)
            if not blob:
                raise exc.RaySystemError(f"function {msg.name} was never sent to this worker")
            fn = self.functions[msg.function_id] = cloudpickle.loads(blob)
            self.function_blobs.pop(msg.function_id, None)
        return fn

    def _load_args(self, packed: bytes, arg_refs: list[tuple[bytes, str, Any]]) -> Any:
        if tracing.ENABLED:
            return tracing.in_span("argument fetch", self._decode_args, packed, arg_refs)
        return self._decode_args(packed, arg_refs)

    def _decode_args(self, packed: bytes, arg_refs: list[tuple[bytes, str, Any]]) -> Any:
        if not arg_refs and packed == EMPTY_ARGS:
            return (), {}
        cw = self.cw
        args, kwargs = cw.deserialize(lambda: ser.unpack(packed))
        try:
            values = [cw.decode(v) for _, _, v in arg_refs]
        except exc.ObjectLostError as e:
            # A shared-memory argument lost with its node: the owner may rebuild it.
            lost = any(oid.hex() == e.object_id and v[0] == "s" for oid, _, v in arg_refs)
            if lost and type(e) is exc.ObjectLostError:
                raise _ArgumentLost(e) from None
            raise
        return substitute(args, kwargs, values)

    def _end_task(self, token: Any) -> None:
        """After a task (or an actor's creation): its unfinished output line is its own."""
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, OutputForwarder):
                stream.end_task()
        self.cw.reset_current_task(token)

    def _begin(self, msg: m.PushTask, caller: str) -> tuple[Any, TaskContext]:
        started = self.started.get(msg.name)
        if started is None:
            started = self.started[msg.name] = RECORDER.counter(
                "freight_tasks_started_total", (msg.name,)
            )
        started()
        group = self.actor_group if self.actor_id else msg.placement_group
        ctx = TaskContext(msg.task_id, msg.name, msg.job_id, msg.actor_id, caller, group)
        self.cw.job_id = msg.job_id
        if msg.driver:
            self.cw.driver_address = msg.driver
        if not self.actor_id:  # an actor keeps its creator's job namespace for its whole life
            self.cw.namespace = msg.namespace
        token = self.cw.set_current_task(ctx)
        if self.log_tasks:
            logger.debug("task {} started", msg.name)
        return token, ctx

    def _trace(self, msg: m.PushTask) -> tracing.Active | None:
        if not msg.trace_context:
            return None  # the owner does not trace
        tc = msg.trace_context
        return tracing.task_begin(msg.name, tc, msg.task_id, msg.job_id, msg.actor_id)

    def execute(self, fs: frames.FrameSocket, msg: m.PushTask, caller: str) -> None:
        if msg.gpu_ids:
            # The lease's GPUs, for this task only (Ray sets CUDA_VISIBLE_DEVICES per lease).
            before = os.environ.get("CUDA_VISIBLE_DEVICES")
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, msg.gpu_ids))
            try:
                self._execute(fs, msg, caller)
            finally:
                if before is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = before
            return
        self._execute(fs, msg, caller)

    def _execute(self, fs: frames.FrameSocket, msg: m.PushTask, caller: str) -> None:
        token, ctx = self._begin(msg, caller)
        span = self._trace(msg) if tracing.ENABLED else None
        start = time.time()
        try:
            fn = self._function(msg)
            args, kwargs = self._load_args(msg.args, msg.arg_refs)
            result = self._call(msg, fn, args, kwargs)
            if inspect.iscoroutine(result):
                result = asyncio.run(result)
            done = self._results(msg, ctx, result, start)
            if self.checkpointer is not None:
                self.checkpointer.after_call()  # before the reply: a result implies its save
        except _Cancelled:
            err = exc.TaskCancelledError(msg.task_id.hex())
            tracing.finish(span, err)
            done = m.TaskDone(msg.task_id, None, pickle.dumps(err), False, [], start, time.time())
        except _ArgumentLost as lost:
            # Not the task's failure: its owner rebuilds the argument and runs it again.
            tracing.finish(span, lost.error)
            blob = pickle.dumps(lost.error)
            done = m.TaskDone(msg.task_id, None, blob, False, [], start, time.time())
        except _StoreFailed as failed:
            done = self._store_failed(msg, failed, span, start)
        except BaseException as e:
            tracing.finish(span, e)
            done = m.TaskDone(
                msg.task_id, None, self._error_blob(msg.name, e), True, [], start, time.time()
            )
        finally:
            self._end_task(token)
            if span is not None:  # end it before the reply: the owner may exit once it has it
                tracing.finish(span)
        self._reply(fs, done)

    async def execute_async(self, fs: frames.FrameSocket, msg: m.PushTask, caller: str) -> None:
        assert self.semaphore is not None
        async with self.semaphore:
            token, ctx = self._begin(msg, caller)
            span = self._trace(msg) if tracing.ENABLED else None
            start = time.time()
            try:
                fn = self._function(msg)
                args, kwargs = self._load_args(msg.args, msg.arg_refs)
                result = fn(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
                done = self._results(msg, ctx, result, start)
                if self.checkpointer is not None:
                    self.checkpointer.after_call()
            except _StoreFailed as failed:
                done = self._store_failed(msg, failed, span, start)
            except BaseException as e:
                e = e.error if isinstance(e, _ArgumentLost) else e
                tracing.finish(span, e)
                done = m.TaskDone(
                    msg.task_id, None, self._error_blob(msg.name, e), True, [], start, time.time()
                )
            finally:
                self._end_task(token)
                if span is not None:
                    tracing.finish(span)
        self._reply(fs, done)

    def _store_failed(
        self, msg: m.PushTask, failed: _StoreFailed, span: tracing.Active | None, start: float
    ) -> m.TaskDone:
        """The reply for an attempt whose result could not be stored: a system error, which
        its owner retries (max_retries) as it would a crashed worker's task."""
        logger.warning("task {} could not store its result: {}", msg.name, failed)
        tracing.finish(span, failed.error)
        blob = pickle.dumps(failed.error)
        return m.TaskDone(msg.task_id, None, blob, False, [], start, time.time(), system=True)

    def _reply(self, fs: frames.FrameSocket, done: m.TaskDone) -> None:
        if self.log_tasks:
            logger.debug(
                "task finished: {} in {:.6f} s",
                "failed" if done.error else "ok",
                done.end_time - done.start_time,
                task_id=done.task_id.hex(),
                job_id=self.cw.job_id,
            )
        try:
            fs.send(done)
        except frames.FrameTooLargeError as e:
            # Return values under the inline limit each, too many for one message together:
            # the call fails (for good: it would again) rather than never answering.
            err = frames.FrameTooLargeError(
                e.size,
                "the return values of a task",
                "Values over FREIGHT_INLINE_MAX_BYTES go to the object store, a great many "
                "small ones do not: return fewer, larger values (one list), or put() them.",
            )
            failed = m.TaskDone(
                done.task_id, None, pickle.dumps(err), False, [], done.start_time, done.end_time
            )
            with contextlib.suppress(OSError):
                fs.send(failed)
        except OSError:
            pass  # the owner is gone; nothing to deliver to

    def _results(self, msg: m.PushTask, ctx: TaskContext, result: Any, start: float) -> m.TaskDone:
        if tracing.ENABLED:
            return tracing.in_span("result store", self._store, msg, ctx, result, start)
        return self._store(msg, ctx, result, start)

    def _store(self, msg: m.PushTask, ctx: TaskContext, result: Any, start: float) -> m.TaskDone:
        n = len(msg.return_ids)
        if n == 1:
            values = [result]
        else:
            if not isinstance(result, (tuple, list)) or len(result) != n:
                raise ValueError(
                    f"{msg.name} was declared with num_returns={n} but returned "
                    f"{type(result).__name__}"
                    + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
                )
            values = list(result)
        out = []
        for rid, value in zip(msg.return_ids, values, strict=True):
            try:
                so = ser.serialize(value)
            except Exception as e:
                raise TypeError(
                    f"Could not serialize the return value of {msg.name} "
                    f"({type(value).__name__}): {e!r}. Return values must be picklable."
                ) from e
            foreign = [(r._id, r._owner) for r in so.contained_refs]
            if foreign:
                self.cw.borrow(foreign, f"{ctx.caller}#{rid.hex()}")
            try:
                stored = self.cw.encode(so, rid, ctx.caller)
            # The agent stalled or went away, or another run of this task is writing the
            # same return on this node right now: the runtime's failure, not the task's.
            except (TimeoutError, OSError, ValueError) as e:
                # Free the returns stored before this one: the owner never hears of them.
                done = zip(msg.return_ids, out, strict=False)
                shm = [r for r, (v, _) in done if v[0] == "s"]
                try:
                    if shm:
                        self.cw.agent.send(m.FreeObjects(shm))
                except OSError:
                    pass
                raise _StoreFailed(msg.name, e) from e
            out.append((stored, foreign))
        return m.TaskDone(msg.task_id, out, b"", False, [], start, time.time())

    def _error_blob(self, name: str, e: BaseException) -> bytes:
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        # In the worker's log with the task's ids, so `freight logs --task` shows the failure.
        logger.error("task {} failed:\n{}", name, tb.rstrip())
        if isinstance(e, exc.RayTaskError):
            err = e
        else:
            err = exc.RayTaskError(name, tb, e, os.getpid(), self.cw.node_id[:12])
        try:
            return pickle.dumps(err)
        except Exception:
            # The exception itself cannot be pickled: keep its type name and message.
            stand_in = exc.RaySystemError(f"{type(e).__name__}: {e}")
            return pickle.dumps(exc.RayTaskError(name, tb, stand_in, os.getpid(), ""))


class OutputForwarder:
    """Replaces sys.stdout/stderr: lines go to the worker's log and to the job's driver."""

    def __init__(self, cw: CoreWorker, stream: Any, name: str) -> None:
        self.cw = cw
        self.stream = stream
        self.name = name
        self.buf = ""
        self.lock = threading.Lock()
        # Each line is also a record of the worker's JSON log, with the running task's ids.
        self.log = logger.bind(stream=name)
        self.level = "INFO" if name == "stdout" else "ERROR"
        self.logging = threading.local()  # set while logging: loguru's own errors print here

    def write(self, text: str) -> int:
        self.stream.write(text)
        with self.lock:
            self.buf += text
            if "\n" not in self.buf:
                return len(text)
            lines, _, self.buf = self.buf.rpartition("\n")
        self._log(lines)
        self._send(lines)
        return len(text)

    def _log(self, lines: str) -> None:
        if getattr(self.logging, "active", False):
            return
        self.logging.active = True
        try:
            for line in lines.split("\n"):
                # A line a logging handler wrote keeps its record's level.
                self.log.log(log_levels.level_of(line) or self.level, line)
        except Exception:
            pass  # the log is best effort; the driver still gets the line
        finally:
            self.logging.active = False

    def _send(self, lines: str) -> None:
        cw = self.cw
        if not cw.driver_address or cw.closed:
            return
        task = cw.current_task
        label = task.name if task is not None else "worker"
        prefix = f"({label} pid={os.getpid()}, node={cw.node_id[:8]})"
        try:
            cw.peer(cw.driver_address).fs.send(m.LogLines(prefix, self.name, lines))
        except (ConnectionError, OSError):
            pass

    def end_task(self) -> None:
        """The running task ends: what it wrote after its last newline is a line of its own,
        with its ids (else the next task's first line would carry it, under the next ids)."""
        with self.lock:
            rest, self.buf = self.buf, ""
        if rest:
            self._log(rest)
            self._send(rest)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.stream.fileno()


def install_output_forwarding(cw: CoreWorker) -> None:
    log_levels.install()
    sys.stdout = OutputForwarder(cw, sys.__stdout__, "stdout")
    sys.stderr = OutputForwarder(cw, sys.__stderr__, "stderr")
