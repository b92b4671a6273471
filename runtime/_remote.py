"""Remote functions, actor classes and actor handles."""

from __future__ import annotations

import hashlib
import inspect
import json
import pickle
import threading
import uuid
from typing import Any

from freight import _api
from freight._options import (
    ACTOR_OPTIONS,
    METHOD_OPTIONS,
    TASK_OPTIONS,
    resources_of,
    validate,
)
from freight.client.args import pack_args
from freight.client.refs import ObjectRef
from freight.client.submitter import TaskSpec
from freight.core.lease import shape_key
from freight.core.placement import DEFAULT, strategy_to_json
from freight.exceptions import RayActorError
from freight.objects.serialization import dumps_by_value
from freight.observe import tracing
from freight.protocol import frames
from freight.util.scheduling_strategies import placed, placement_of

# Room in a message for what travels beside an actor's constructor arguments and class.
_SPEC_ROOM = 1 << 16


def _returns(refs: list[ObjectRef]) -> Any:
    if len(refs) == 1:
        return refs[0]
    return refs if refs else None


def _capturing(cw: Any) -> tuple[Any, ...]:
    """The placement group of the running task or actor when it captures its children
    (``placement_group_capture_child_tasks``), else ``()``."""
    task = cw.current_task
    group = task.placement_group if task is not None else ()
    return group if group and group[1] else ()


def _new_returns(cw: Any, n: int) -> tuple[list[bytes], Any]:
    """Ids of a call's ``n`` returns, and what ``.remote()`` hands back for them."""
    if n == 1:
        rid = cw.new_id()
        return [rid], ObjectRef(rid, cw.address)
    return_ids = [cw.new_id() for _ in range(n)]
    return return_ids, _returns([ObjectRef(rid, cw.address) for rid in return_ids])


class RemoteFunction:
    """A function that runs as a task: call ``.remote(...)`` to submit it."""

    def __init__(self, fn: Any, options: dict[str, Any]) -> None:
        self._function = fn
        self._options = validate(dict(options), TASK_OPTIONS, "a remote function")
        self._name = getattr(fn, "__qualname__", getattr(fn, "__name__", "task"))
        self._module = getattr(fn, "__module__", "")
        self._blob: bytes | None = None
        self._fid = b""
        self._lock = threading.Lock()
        # Per options dict (its id, and the dict itself so a reused id is noticed): the name,
        # returns, resources and shape every call with those options submits.
        self._plans: dict[int, tuple[Any, ...]] = {}
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", "task")

    def __getstate__(self) -> dict[str, Any]:
        # Shipped inside other functions: the lock and the cached export stay behind.
        state = dict(self.__dict__)
        state.pop("_lock", None)
        state["_blob"], state["_fid"], state["_plans"] = None, b"", {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "Remote functions cannot be called directly. Instead of running "
            f"'{self._module}.{self._name}()', try '{self._module}.{self._name}.remote()'."
        )

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._remote(args, kwargs, self._options)

    def options(self, **options: Any) -> _BoundFunction:
        merged = validate(options, TASK_OPTIONS, f"{self._name}.options()", base=self._options)
        return _BoundFunction(self, merged)

    def _export(self) -> None:
        with self._lock:
            if self._blob is None:
                try:
                    blob = dumps_by_value(self._function)
                except Exception as e:
                    raise TypeError(
                        f"Could not serialize the function {self._name}: {e!r}. It probably "
                        "captures an unpicklable object (a lock, a socket, an open file); "
                        "create it inside the function instead."
                    ) from e
                self._fid = hashlib.blake2b(blob, digest_size=16).digest()
                self._blob = blob

    def _remote(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> Any:
        cw = _api._require_worker()
        if self._blob is None:
            self._export()
        parent = _capturing(cw)
        if parent:  # where it runs depends on the caller: worked out per call
            plan = self._plan(options, parent)
        else:
            plan = self._plans.get(id(options))
            if plan is None or plan[0] is not options:
                plan = self._plan(options)
        _, name, n, resources, shape, max_retries, retry_exc, strategy, group = plan
        packed, refs, nested, stored = pack_args(args, kwargs, name, cw)
        return_ids, out = _new_returns(cw, n)
        spec = TaskSpec(
            cw.new_id(),
            name,
            self._fid,
            self._blob or b"",
            packed,
            refs,
            nested,
            return_ids,
            resources,
            max_retries,
            retry_exc,
            shape=shape,
            strategy=strategy,
            placement_group=group,
            stored=stored,
        )
        cw.submitter.submit(spec)
        return out

    def _plan(self, options: dict[str, Any], parent: tuple[Any, ...] = ()) -> tuple[Any, ...]:
        """What a call with these options submits, worked out once per options dict (per call
        inside a placement group that captures its child tasks)."""
        retry_exc = options.get("retry_exceptions", False)
        chosen = options.get("scheduling_strategy")
        resources, strategy = placed(resources_of(options, 1.0), chosen, parent)
        shape = shape_key(resources)
        if strategy != DEFAULT:
            shape = f"{shape}|{strategy!r}"  # leases are kept per resources and strategy
        plan = (
            options,
            options.get("name") or self._name,
            options.get("num_returns", 1),
            resources,
            shape,
            options.get("max_retries", 3),
            tuple(retry_exc) if isinstance(retry_exc, list) else retry_exc,
            strategy,
            placement_of(chosen, parent),
        )
        if parent:
            return plan
        if len(self._plans) > 64:
            self._plans.clear()  # options made afresh per call: keep the cache small
        self._plans[id(options)] = plan
        return plan


class _BoundFunction:
    def __init__(self, rf: RemoteFunction, options: dict[str, Any]) -> None:
        self._rf = rf
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._rf._remote(args, kwargs, self._options)


def method(*, num_returns: int = 1, **options: Any) -> Any:
    """Decorate an actor method to set its options (``num_returns``)."""
    validate({"num_returns": num_returns, **options}, METHOD_OPTIONS, "freight.method")

    def wrap(fn: Any) -> Any:
        fn.__freight_num_returns__ = num_returns
        return fn

    return wrap


def _method_table(cls: type) -> dict[str, int]:
    out = {}
    for name, member in inspect.getmembers(cls):
        if callable(member) and (not name.startswith("__") or name == "__call__"):
            out[name] = getattr(member, "__freight_num_returns__", 1)
    return out


class ActorClass:
    """A class whose instances live in their own worker process: ``Cls.remote(...)``."""

    def __init__(self, cls: type, options: dict[str, Any]) -> None:
        self._cls = cls
        self._options = validate(dict(options), ACTOR_OPTIONS, "an actor class")
        self._name = cls.__name__
        self._methods = _method_table(cls)
        self._is_async = any(
            inspect.iscoroutinefunction(getattr(cls, n, None)) for n in self._methods
        )
        self._blob: bytes | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_blob": None}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Actors cannot be instantiated directly. Instead of '{self._name}()', "
            f"use '{self._name}.remote()'."
        )

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        return self._create(args, kwargs, self._options)

    def options(self, **options: Any) -> _BoundActorClass:
        merged = validate(options, ACTOR_OPTIONS, f"{self._name}.options()", base=self._options)
        return _BoundActorClass(self, merged)

    def _create(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> ActorHandle:
        from freight.client.head_client import pb_module as pb
        from freight.client.head_client import resources_pb
        from freight.util.grpc_auth import MAX_MESSAGE_BYTES

        cw = _api._require_worker()
        if self._blob is None:
            try:
                self._blob = dumps_by_value(self._cls)
            except Exception as e:
                raise TypeError(f"Could not serialize the actor class {self._name}: {e!r}") from e
        # Inline, whatever their size: the head keeps the creation spec to restart the actor
        # with, also after its owner (and the owner's store) is gone.
        packed, refs, nested, _ = pack_args(args, kwargs, f"{self._name}.__init__", None)
        limit = min(frames.MAX_FRAME, MAX_MESSAGE_BYTES) - _SPEC_ROOM
        if len(packed) + len(self._blob) > limit:
            raise ValueError(
                f"The arguments of {self._name}.__init__ take {len(packed)} bytes (and the "
                f"class {len(self._blob)}), more than an actor's creation spec may hold "
                f"({limit} bytes): the head keeps the spec to restart the actor with. put() "
                "large constructor arguments and pass the references instead."
            )
        actor_id = uuid.uuid4().hex
        name = options.get("name") or ""
        namespace = options.get("namespace") or cw.namespace
        detached = options.get("lifetime") == "detached"
        concurrency = options.get("max_concurrency") or (1000 if self._is_async else 1)
        parent = _capturing(cw)
        chosen = options.get("scheduling_strategy")
        resources, strategy = placed(resources_of(options, 0.0), chosen, parent)
        info = pb.ActorInfo(
            actor_id=actor_id,
            job_id=cw.job_id,
            class_name=self._name,
            name=name,
            namespace=namespace,
            detached=detached,
            resources=resources_pb(resources),
            owner_address=cw.address,
            scheduling_strategy=strategy_to_json(strategy),
            max_restarts=options.get("max_restarts") or 0,
            max_task_retries=options.get("max_task_retries") or 0,
        )
        blob = self._blob
        # The owner's "actor creation" span lasts until CreateActor answers; the constructor's
        # span on the actor's worker is its child (its context travels in the creation spec).
        span = None
        if tracing.ENABLED:
            attrs = {"freight.actor_id": actor_id, "freight.job_id": cw.job_id}
            span = tracing.start(f"actor creation {self._name}", attributes=attrs, current=False)

        def spec_bytes() -> bytes:
            values = cw.wait_values([ObjectRef(o, w) for o, w in refs], None) if refs else []
            resolved = [(o, w, v) for (o, w), v in zip(refs, values, strict=True)]
            return pickle.dumps(
                {
                    "class_blob": blob,
                    "class_name": self._name,
                    "args": packed,
                    "arg_refs": resolved,
                    "max_concurrency": concurrency,
                    "is_async": self._is_async,
                    "driver": cw.driver_address,
                    # The job's namespace (not the name's): where the actor looks names up.
                    "namespace": cw.namespace,
                    "placement_group": placement_of(chosen, parent),
                    "trace_context": tracing.inject(span) if span is not None else {},
                }
            )

        def create() -> Any:
            try:
                return created()
            finally:
                if held:
                    with cw.lock:
                        freed = cw.refs.remove_submitted(held)
                    cw._free(freed)
                cw.actors.creation_done(actor_id)

        def created() -> Any:
            try:
                spec = spec_bytes()
                if len(spec) > limit + _SPEC_ROOM // 2:  # the references' values added up
                    raise ValueError(
                        f"its creation spec takes {len(spec)} bytes, more than {limit}: the "
                        "values of reference arguments up to FREIGHT_INLINE_MAX_BYTES travel "
                        "in it; put() fewer, larger values (one list) instead"
                    )
                # A head restart does not fail the creation: it is repeated (the head joins a
                # creation of the same actor id already under way) once the head is back.
                reply = cw.head.call_through_restarts(
                    "CreateActor",
                    pb.CreateActorRequest(
                        actor=info,
                        creation_spec=spec,
                        get_if_exists=bool(options.get("get_if_exists")),
                    ),
                    timeout=None,
                )
            except Exception as e:
                cw.actors.created(actor_id, "", f"the actor could not be created: {e}")
                return None
            a = reply.actor
            if a.state == "ALIVE":
                cw.actors.created(a.actor_id, a.worker_address, "")
            else:
                cause = a.death_cause or "the actor could not be created"
                if reply.creation_error:
                    try:
                        err = pickle.loads(reply.creation_error)
                        cause = f"the constructor raised: {err}"
                    except Exception:
                        cause = "the constructor raised an exception"
                cw.actors.created(a.actor_id, "", cause)
            return reply

        def traced_create() -> Any:
            assert span is not None
            with tracing.current(span):
                reply = create()
            if reply is None or reply.actor.state != "ALIVE":
                cause = reply.actor.death_cause if reply is not None else ""
                err = RayActorError(cause or "the actor could not be created", actor_id)
                tracing.finish(span, err)
            tracing.finish(span)
            return reply

        run = create if span is None else traced_create
        # The constructor's arguments are held until CreateActor answers, as a task's are until
        # it finishes; by then the actor has registered as borrower of what it keeps.
        held = [o for o, _ in refs] + list(nested)
        if held:
            with cw.lock:
                cw.refs.add_submitted(held)
        # The creator learns the address from CreateActor's reply; never look it up meanwhile.
        st = cw.actors.state(actor_id, self._name)
        st.resolving = True
        st.creating = True
        st.max_restarts = info.max_restarts
        if name:
            # Named actors are created synchronously so that a taken name fails right here.
            reply = run()
            if reply is not None and reply.existed:
                a = reply.actor
                return ActorHandle(
                    a.actor_id,
                    self._name,
                    self._methods,
                    a.max_task_retries,
                    cw.actors.borrow_handle(a),
                )
            if (
                reply is not None
                and reply.actor.state == "DEAD"
                and "already" in reply.actor.death_cause
            ):
                raise ValueError(reply.actor.death_cause)
            cw.head.call_through_restarts(
                "KVPut",
                pb.KVPutRequest(
                    ns="actor_methods",
                    key=actor_id,
                    value=json.dumps(self._methods).encode(),
                    overwrite=True,
                ),
            )
        # Held by the handles: the actor lives while a handle to it exists anywhere; a detached
        # one lives until it is killed.
        ref = None if detached else cw.actors.own_handle(actor_id)
        if not name:
            threading.Thread(target=run, name="freight-create-actor", daemon=True).start()
        return ActorHandle(actor_id, self._name, self._methods, info.max_task_retries, ref)


class _BoundActorClass:
    def __init__(self, ac: ActorClass, options: dict[str, Any]) -> None:
        self._ac = ac
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        return self._ac._create(args, kwargs, self._options)


class _ActorID:
    def __init__(self, hex_id: str) -> None:
        self._hex = hex_id

    def hex(self) -> str:
        return self._hex

    def __repr__(self) -> str:
        return f"ActorID({self._hex})"


class ActorHandle:
    """A handle to an actor: ``handle.method.remote(...)`` calls a method.

    A handle to a non-detached actor holds a reference to the actor's handle object, owned by
    the actor's creator: when none is left anywhere, the creator destroys the actor."""

    def __init__(
        self,
        actor_id: str,
        class_name: str,
        methods: dict[str, int] | None,
        max_task_retries: int = 0,
        ref: ObjectRef | None = None,
    ) -> None:
        self._freight_actor_id = actor_id
        self._freight_class = class_name
        self._freight_methods = methods
        self._freight_max_task_retries = max_task_retries  # per call, unless .options() says
        self._freight_ref = ref

    @property
    def _actor_id(self) -> _ActorID:
        return _ActorID(self._freight_actor_id)

    def __getattr__(self, name: str) -> ActorMethod:
        if name.startswith("_freight_") or (name.startswith("__") and name != "__call__"):
            raise AttributeError(name)
        methods = self._freight_methods
        if methods is not None and name not in methods:
            raise AttributeError(f"'{self._freight_class}' actor has no method {name!r}")
        # Not cached on the handle: a method refers to its handle, and the cycle would keep the
        # handle (and so the actor) alive until the cyclic garbage collector ran.
        return ActorMethod(self, name, methods.get(name, 1) if methods else 1)

    def __repr__(self) -> str:
        return f"Actor({self._freight_class}, {self._freight_actor_id})"

    def __reduce__(self) -> Any:
        return ActorHandle, (
            self._freight_actor_id,
            self._freight_class,
            self._freight_methods,
            self._freight_max_task_retries,
            self._freight_ref,  # pickled along: whoever unpickles the handle borrows it
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._freight_actor_id == self._freight_actor_id

    def __hash__(self) -> int:
        return hash(self._freight_actor_id)


class ActorMethod:
    def __init__(self, handle: ActorHandle, name: str, num_returns: int) -> None:
        self._handle = handle
        self._name = name
        self._num_returns = num_returns
        self._qualname = f"{handle._freight_class}.{name}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "Actor methods cannot be called directly. Instead of running "
            f"'handle.{self._name}()', try 'handle.{self._name}.remote()'."
        )

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._remote(args, kwargs, self._num_returns)

    def options(self, **options: Any) -> Any:
        validate(options, METHOD_OPTIONS, f"{self._name}.options()")
        n = options.get("num_returns", self._num_returns)
        retries = options.get("max_task_retries")
        outer = self

        class _Bound:
            def remote(self, *args: Any, **kwargs: Any) -> Any:
                return outer._remote(args, kwargs, n, retries)

        return _Bound()

    def _remote(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        num_returns: int,
        max_task_retries: int | None = None,
    ) -> Any:
        cw = _api._require_worker()
        h = self._handle
        name = self._qualname
        packed, refs, nested, stored = pack_args(args, kwargs, name, cw)
        if h._freight_ref is not None:
            nested = [*nested, h._freight_ref._id]  # a pending call keeps the actor alive
        return_ids, out = _new_returns(cw, num_returns)
        st = cw.actors.state(h._freight_actor_id, h._freight_class)
        spec = TaskSpec(
            cw.new_id(),
            name,
            b"",
            b"",
            packed,
            refs,
            nested,
            return_ids,
            {},
            h._freight_max_task_retries if max_task_retries is None else max_task_retries,
            False,
            h._freight_actor_id,
            self._name,
            stored=stored,
        )
        cw.submitter.submit(spec, actor=st)
        return out
