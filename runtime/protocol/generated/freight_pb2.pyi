from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResourceMap(_message.Message):
    __slots__ = ("amounts",)
    class AmountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    AMOUNTS_FIELD_NUMBER: _ClassVar[int]
    amounts: _containers.ScalarMap[str, float]
    def __init__(self, amounts: _Optional[_Mapping[str, float]] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "agent_address", "data_socket", "session_dir", "total", "available", "labels", "state", "start_time", "last_heartbeat", "stats", "is_head_node", "hostname", "metrics_address", "data_address", "node_ip", "store_dir", "incarnation", "draining", "drain_reason", "drain_time", "drain_seq", "pid")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DATA_SOCKET_FIELD_NUMBER: _ClassVar[int]
    SESSION_DIR_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    IS_HEAD_NODE_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    METRICS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DATA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODE_IP_FIELD_NUMBER: _ClassVar[int]
    STORE_DIR_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    DRAIN_REASON_FIELD_NUMBER: _ClassVar[int]
    DRAIN_TIME_FIELD_NUMBER: _ClassVar[int]
    DRAIN_SEQ_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    agent_address: str
    data_socket: str
    session_dir: str
    total: ResourceMap
    available: ResourceMap
    labels: _containers.ScalarMap[str, str]
    state: str
    start_time: float
    last_heartbeat: float
    stats: NodeStats
    is_head_node: bool
    hostname: str
    metrics_address: str
    data_address: str
    node_ip: str
    store_dir: str
    incarnation: str
    draining: bool
    drain_reason: str
    drain_time: float
    drain_seq: int
    pid: int
    def __init__(self, node_id: _Optional[str] = ..., agent_address: _Optional[str] = ..., data_socket: _Optional[str] = ..., session_dir: _Optional[str] = ..., total: _Optional[_Union[ResourceMap, _Mapping]] = ..., available: _Optional[_Union[ResourceMap, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., state: _Optional[str] = ..., start_time: _Optional[float] = ..., last_heartbeat: _Optional[float] = ..., stats: _Optional[_Union[NodeStats, _Mapping]] = ..., is_head_node: _Optional[bool] = ..., hostname: _Optional[str] = ..., metrics_address: _Optional[str] = ..., data_address: _Optional[str] = ..., node_ip: _Optional[str] = ..., store_dir: _Optional[str] = ..., incarnation: _Optional[str] = ..., draining: _Optional[bool] = ..., drain_reason: _Optional[str] = ..., drain_time: _Optional[float] = ..., drain_seq: _Optional[int] = ..., pid: _Optional[int] = ...) -> None: ...

class NodeStats(_message.Message):
    __slots__ = ("object_store_used", "object_store_capacity", "num_objects", "num_workers", "num_idle_workers", "num_actor_workers", "pending_by_reason", "infeasible_shapes", "memory_used", "memory_total")
    class PendingByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    OBJECT_STORE_USED_FIELD_NUMBER: _ClassVar[int]
    OBJECT_STORE_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    NUM_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    NUM_WORKERS_FIELD_NUMBER: _ClassVar[int]
    NUM_IDLE_WORKERS_FIELD_NUMBER: _ClassVar[int]
    NUM_ACTOR_WORKERS_FIELD_NUMBER: _ClassVar[int]
    PENDING_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    INFEASIBLE_SHAPES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_FIELD_NUMBER: _ClassVar[int]
    object_store_used: int
    object_store_capacity: int
    num_objects: int
    num_workers: int
    num_idle_workers: int
    num_actor_workers: int
    pending_by_reason: _containers.ScalarMap[str, int]
    infeasible_shapes: _containers.RepeatedScalarFieldContainer[str]
    memory_used: int
    memory_total: int
    def __init__(self, object_store_used: _Optional[int] = ..., object_store_capacity: _Optional[int] = ..., num_objects: _Optional[int] = ..., num_workers: _Optional[int] = ..., num_idle_workers: _Optional[int] = ..., num_actor_workers: _Optional[int] = ..., pending_by_reason: _Optional[_Mapping[str, int]] = ..., infeasible_shapes: _Optional[_Iterable[str]] = ..., memory_used: _Optional[int] = ..., memory_total: _Optional[int] = ...) -> None: ...

class RegisterNodeRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: NodeInfo
    def __init__(self, node: _Optional[_Union[NodeInfo, _Mapping]] = ...) -> None: ...

class RegisterNodeReply(_message.Message):
    __slots__ = ("cluster_name",)
    CLUSTER_NAME_FIELD_NUMBER: _ClassVar[int]
    cluster_name: str
    def __init__(self, cluster_name: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node_id", "available", "stats", "total", "incarnation")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    available: ResourceMap
    stats: NodeStats
    total: ResourceMap
    incarnation: str
    def __init__(self, node_id: _Optional[str] = ..., available: _Optional[_Union[ResourceMap, _Mapping]] = ..., stats: _Optional[_Union[NodeStats, _Mapping]] = ..., total: _Optional[_Union[ResourceMap, _Mapping]] = ..., incarnation: _Optional[str] = ...) -> None: ...

class NodeView(_message.Message):
    __slots__ = ("node_id", "data_address", "total", "available", "labels", "is_head_node", "store_dir", "agent_address", "draining", "drain_seq")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    IS_HEAD_NODE_FIELD_NUMBER: _ClassVar[int]
    STORE_DIR_FIELD_NUMBER: _ClassVar[int]
    AGENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    DRAIN_SEQ_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    data_address: str
    total: ResourceMap
    available: ResourceMap
    labels: _containers.ScalarMap[str, str]
    is_head_node: bool
    store_dir: str
    agent_address: str
    draining: bool
    drain_seq: int
    def __init__(self, node_id: _Optional[str] = ..., data_address: _Optional[str] = ..., total: _Optional[_Union[ResourceMap, _Mapping]] = ..., available: _Optional[_Union[ResourceMap, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., is_head_node: _Optional[bool] = ..., store_dir: _Optional[str] = ..., agent_address: _Optional[str] = ..., draining: _Optional[bool] = ..., drain_seq: _Optional[int] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("reregister", "cluster", "fence", "fence_reason")
    REREGISTER_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    FENCE_FIELD_NUMBER: _ClassVar[int]
    FENCE_REASON_FIELD_NUMBER: _ClassVar[int]
    reregister: bool
    cluster: _containers.RepeatedCompositeFieldContainer[NodeView]
    fence: bool
    fence_reason: str
    def __init__(self, reregister: _Optional[bool] = ..., cluster: _Optional[_Iterable[_Union[NodeView, _Mapping]]] = ..., fence: _Optional[bool] = ..., fence_reason: _Optional[str] = ...) -> None: ...

class UnregisterNodeRequest(_message.Message):
    __slots__ = ("node_id", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class UnregisterNodeReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ("include_dead",)
    INCLUDE_DEAD_FIELD_NUMBER: _ClassVar[int]
    include_dead: bool
    def __init__(self, include_dead: _Optional[bool] = ...) -> None: ...

class ListNodesReply(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("job_id", "namespace", "driver_pid", "driver_address", "state", "start_time", "end_time", "labels", "entrypoint", "kind", "message", "exit_code", "log_path", "supervisor_pid")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DRIVER_PID_FIELD_NUMBER: _ClassVar[int]
    DRIVER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    LOG_PATH_FIELD_NUMBER: _ClassVar[int]
    SUPERVISOR_PID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    namespace: str
    driver_pid: int
    driver_address: str
    state: str
    start_time: float
    end_time: float
    labels: _containers.ScalarMap[str, str]
    entrypoint: str
    kind: str
    message: str
    exit_code: int
    log_path: str
    supervisor_pid: int
    def __init__(self, job_id: _Optional[str] = ..., namespace: _Optional[str] = ..., driver_pid: _Optional[int] = ..., driver_address: _Optional[str] = ..., state: _Optional[str] = ..., start_time: _Optional[float] = ..., end_time: _Optional[float] = ..., labels: _Optional[_Mapping[str, str]] = ..., entrypoint: _Optional[str] = ..., kind: _Optional[str] = ..., message: _Optional[str] = ..., exit_code: _Optional[int] = ..., log_path: _Optional[str] = ..., supervisor_pid: _Optional[int] = ...) -> None: ...

class RegisterJobRequest(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: JobInfo
    def __init__(self, job: _Optional[_Union[JobInfo, _Mapping]] = ...) -> None: ...

class RegisterJobReply(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: JobInfo
    def __init__(self, job: _Optional[_Union[JobInfo, _Mapping]] = ...) -> None: ...

class FinishJobRequest(_message.Message):
    __slots__ = ("job_id", "state")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class FinishJobReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListJobsReply(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobInfo]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobInfo, _Mapping]]] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("entrypoint", "labels", "env", "working_dir", "submission_id")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    WORKING_DIR_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    entrypoint: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    env: _containers.ScalarMap[str, str]
    working_dir: str
    submission_id: str
    def __init__(self, entrypoint: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., env: _Optional[_Mapping[str, str]] = ..., working_dir: _Optional[str] = ..., submission_id: _Optional[str] = ...) -> None: ...

class SubmitJobReply(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: JobInfo
    def __init__(self, job: _Optional[_Union[JobInfo, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobReply(_message.Message):
    __slots__ = ("job", "found")
    JOB_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    job: JobInfo
    found: bool
    def __init__(self, job: _Optional[_Union[JobInfo, _Mapping]] = ..., found: _Optional[bool] = ...) -> None: ...

class StopJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class StopJobReply(_message.Message):
    __slots__ = ("stopped",)
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    stopped: bool
    def __init__(self, stopped: _Optional[bool] = ...) -> None: ...

class JobLogsRequest(_message.Message):
    __slots__ = ("job_id", "follow", "offset")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    follow: bool
    offset: int
    def __init__(self, job_id: _Optional[str] = ..., follow: _Optional[bool] = ..., offset: _Optional[int] = ...) -> None: ...

class JobLogsChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ActorInfo(_message.Message):
    __slots__ = ("actor_id", "job_id", "class_name", "name", "namespace", "state", "node_id", "worker_id", "worker_address", "pid", "detached", "death_cause", "resources", "start_time", "end_time", "num_restarts", "owner_address", "pending_reason", "scheduling_strategy", "max_restarts", "max_task_retries")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    DETACHED_FIELD_NUMBER: _ClassVar[int]
    DEATH_CAUSE_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    NUM_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PENDING_REASON_FIELD_NUMBER: _ClassVar[int]
    SCHEDULING_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MAX_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    MAX_TASK_RETRIES_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    job_id: str
    class_name: str
    name: str
    namespace: str
    state: str
    node_id: str
    worker_id: str
    worker_address: str
    pid: int
    detached: bool
    death_cause: str
    resources: ResourceMap
    start_time: float
    end_time: float
    num_restarts: int
    owner_address: str
    pending_reason: str
    scheduling_strategy: str
    max_restarts: int
    max_task_retries: int
    def __init__(self, actor_id: _Optional[str] = ..., job_id: _Optional[str] = ..., class_name: _Optional[str] = ..., name: _Optional[str] = ..., namespace: _Optional[str] = ..., state: _Optional[str] = ..., node_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., worker_address: _Optional[str] = ..., pid: _Optional[int] = ..., detached: _Optional[bool] = ..., death_cause: _Optional[str] = ..., resources: _Optional[_Union[ResourceMap, _Mapping]] = ..., start_time: _Optional[float] = ..., end_time: _Optional[float] = ..., num_restarts: _Optional[int] = ..., owner_address: _Optional[str] = ..., pending_reason: _Optional[str] = ..., scheduling_strategy: _Optional[str] = ..., max_restarts: _Optional[int] = ..., max_task_retries: _Optional[int] = ...) -> None: ...

class CreateActorRequest(_message.Message):
    __slots__ = ("actor", "creation_spec", "get_if_exists")
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CREATION_SPEC_FIELD_NUMBER: _ClassVar[int]
    GET_IF_EXISTS_FIELD_NUMBER: _ClassVar[int]
    actor: ActorInfo
    creation_spec: bytes
    get_if_exists: bool
    def __init__(self, actor: _Optional[_Union[ActorInfo, _Mapping]] = ..., creation_spec: _Optional[bytes] = ..., get_if_exists: _Optional[bool] = ...) -> None: ...

class CreateActorReply(_message.Message):
    __slots__ = ("actor", "existed", "creation_error")
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    CREATION_ERROR_FIELD_NUMBER: _ClassVar[int]
    actor: ActorInfo
    existed: bool
    creation_error: bytes
    def __init__(self, actor: _Optional[_Union[ActorInfo, _Mapping]] = ..., existed: _Optional[bool] = ..., creation_error: _Optional[bytes] = ...) -> None: ...

class GetActorRequest(_message.Message):
    __slots__ = ("actor_id", "name", "namespace")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    name: str
    namespace: str
    def __init__(self, actor_id: _Optional[str] = ..., name: _Optional[str] = ..., namespace: _Optional[str] = ...) -> None: ...

class GetActorReply(_message.Message):
    __slots__ = ("actor", "found")
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    actor: ActorInfo
    found: bool
    def __init__(self, actor: _Optional[_Union[ActorInfo, _Mapping]] = ..., found: _Optional[bool] = ...) -> None: ...

class KillActorRequest(_message.Message):
    __slots__ = ("actor_id", "no_restart", "cause")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    NO_RESTART_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    no_restart: bool
    cause: str
    def __init__(self, actor_id: _Optional[str] = ..., no_restart: _Optional[bool] = ..., cause: _Optional[str] = ...) -> None: ...

class KillActorReply(_message.Message):
    __slots__ = ("killed", "actor_id")
    KILLED_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    killed: bool
    actor_id: str
    def __init__(self, killed: _Optional[bool] = ..., actor_id: _Optional[str] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id", "force", "recursive")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    force: bool
    recursive: bool
    def __init__(self, task_id: _Optional[str] = ..., force: _Optional[bool] = ..., recursive: _Optional[bool] = ...) -> None: ...

class CancelTaskReply(_message.Message):
    __slots__ = ("task_id", "state", "requested", "message")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    state: str
    requested: bool
    message: str
    def __init__(self, task_id: _Optional[str] = ..., state: _Optional[str] = ..., requested: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class KillWorkerByIdRequest(_message.Message):
    __slots__ = ("worker_id", "force")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    force: bool
    def __init__(self, worker_id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class KillWorkerByIdReply(_message.Message):
    __slots__ = ("worker_id", "node_id", "killed")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KILLED_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    node_id: str
    killed: bool
    def __init__(self, worker_id: _Optional[str] = ..., node_id: _Optional[str] = ..., killed: _Optional[bool] = ...) -> None: ...

class ListActorsRequest(_message.Message):
    __slots__ = ("include_dead",)
    INCLUDE_DEAD_FIELD_NUMBER: _ClassVar[int]
    include_dead: bool
    def __init__(self, include_dead: _Optional[bool] = ...) -> None: ...

class ListActorsReply(_message.Message):
    __slots__ = ("actors",)
    ACTORS_FIELD_NUMBER: _ClassVar[int]
    actors: _containers.RepeatedCompositeFieldContainer[ActorInfo]
    def __init__(self, actors: _Optional[_Iterable[_Union[ActorInfo, _Mapping]]] = ...) -> None: ...

class ReportActorDeathRequest(_message.Message):
    __slots__ = ("actor_id", "cause", "worker_id", "node_id", "incarnation")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    cause: str
    worker_id: str
    node_id: str
    incarnation: str
    def __init__(self, actor_id: _Optional[str] = ..., cause: _Optional[str] = ..., worker_id: _Optional[str] = ..., node_id: _Optional[str] = ..., incarnation: _Optional[str] = ...) -> None: ...

class ReportActorDeathReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PlacementGroupInfo(_message.Message):
    __slots__ = ("pg_id", "name", "namespace", "strategy", "bundles", "state", "bundle_nodes", "job_id", "detached", "create_time", "pending_reason")
    PG_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_NODES_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DETACHED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PENDING_REASON_FIELD_NUMBER: _ClassVar[int]
    pg_id: str
    name: str
    namespace: str
    strategy: str
    bundles: _containers.RepeatedCompositeFieldContainer[ResourceMap]
    state: str
    bundle_nodes: _containers.RepeatedScalarFieldContainer[str]
    job_id: str
    detached: bool
    create_time: float
    pending_reason: str
    def __init__(self, pg_id: _Optional[str] = ..., name: _Optional[str] = ..., namespace: _Optional[str] = ..., strategy: _Optional[str] = ..., bundles: _Optional[_Iterable[_Union[ResourceMap, _Mapping]]] = ..., state: _Optional[str] = ..., bundle_nodes: _Optional[_Iterable[str]] = ..., job_id: _Optional[str] = ..., detached: _Optional[bool] = ..., create_time: _Optional[float] = ..., pending_reason: _Optional[str] = ...) -> None: ...

class CreatePlacementGroupRequest(_message.Message):
    __slots__ = ("pg",)
    PG_FIELD_NUMBER: _ClassVar[int]
    pg: PlacementGroupInfo
    def __init__(self, pg: _Optional[_Union[PlacementGroupInfo, _Mapping]] = ...) -> None: ...

class CreatePlacementGroupReply(_message.Message):
    __slots__ = ("pg",)
    PG_FIELD_NUMBER: _ClassVar[int]
    pg: PlacementGroupInfo
    def __init__(self, pg: _Optional[_Union[PlacementGroupInfo, _Mapping]] = ...) -> None: ...

class RemovePlacementGroupRequest(_message.Message):
    __slots__ = ("pg_id",)
    PG_ID_FIELD_NUMBER: _ClassVar[int]
    pg_id: str
    def __init__(self, pg_id: _Optional[str] = ...) -> None: ...

class RemovePlacementGroupReply(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    def __init__(self, removed: _Optional[bool] = ...) -> None: ...

class GetPlacementGroupRequest(_message.Message):
    __slots__ = ("pg_id", "name", "namespace", "wait_s")
    PG_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    pg_id: str
    name: str
    namespace: str
    wait_s: float
    def __init__(self, pg_id: _Optional[str] = ..., name: _Optional[str] = ..., namespace: _Optional[str] = ..., wait_s: _Optional[float] = ...) -> None: ...

class GetPlacementGroupReply(_message.Message):
    __slots__ = ("pg", "found")
    PG_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    pg: PlacementGroupInfo
    found: bool
    def __init__(self, pg: _Optional[_Union[PlacementGroupInfo, _Mapping]] = ..., found: _Optional[bool] = ...) -> None: ...

class ListPlacementGroupsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPlacementGroupsReply(_message.Message):
    __slots__ = ("pgs",)
    PGS_FIELD_NUMBER: _ClassVar[int]
    pgs: _containers.RepeatedCompositeFieldContainer[PlacementGroupInfo]
    def __init__(self, pgs: _Optional[_Iterable[_Union[PlacementGroupInfo, _Mapping]]] = ...) -> None: ...

class KVPutRequest(_message.Message):
    __slots__ = ("ns", "key", "value", "overwrite")
    NS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    ns: str
    key: str
    value: bytes
    overwrite: bool
    def __init__(self, ns: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[bytes] = ..., overwrite: _Optional[bool] = ...) -> None: ...

class KVPutReply(_message.Message):
    __slots__ = ("added",)
    ADDED_FIELD_NUMBER: _ClassVar[int]
    added: bool
    def __init__(self, added: _Optional[bool] = ...) -> None: ...

class KVGetRequest(_message.Message):
    __slots__ = ("ns", "key")
    NS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ns: str
    key: str
    def __init__(self, ns: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class KVGetReply(_message.Message):
    __slots__ = ("value", "found")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    value: bytes
    found: bool
    def __init__(self, value: _Optional[bytes] = ..., found: _Optional[bool] = ...) -> None: ...

class KVDelRequest(_message.Message):
    __slots__ = ("ns", "key")
    NS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ns: str
    key: str
    def __init__(self, ns: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class KVDelReply(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class ClusterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClusterStatusReply(_message.Message):
    __slots__ = ("cluster_name", "nodes", "total", "available", "num_actors_alive", "num_jobs_running", "head_start_time")
    CLUSTER_NAME_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    NUM_ACTORS_ALIVE_FIELD_NUMBER: _ClassVar[int]
    NUM_JOBS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    HEAD_START_TIME_FIELD_NUMBER: _ClassVar[int]
    cluster_name: str
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    total: ResourceMap
    available: ResourceMap
    num_actors_alive: int
    num_jobs_running: int
    head_start_time: float
    def __init__(self, cluster_name: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ..., total: _Optional[_Union[ResourceMap, _Mapping]] = ..., available: _Optional[_Union[ResourceMap, _Mapping]] = ..., num_actors_alive: _Optional[int] = ..., num_jobs_running: _Optional[int] = ..., head_start_time: _Optional[float] = ...) -> None: ...

class ShutdownRequest(_message.Message):
    __slots__ = ("reason", "stop_nodes")
    REASON_FIELD_NUMBER: _ClassVar[int]
    STOP_NODES_FIELD_NUMBER: _ClassVar[int]
    reason: str
    stop_nodes: bool
    def __init__(self, reason: _Optional[str] = ..., stop_nodes: _Optional[bool] = ...) -> None: ...

class ShutdownReply(_message.Message):
    __slots__ = ("nodes_stopped",)
    NODES_STOPPED_FIELD_NUMBER: _ClassVar[int]
    nodes_stopped: int
    def __init__(self, nodes_stopped: _Optional[int] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("task_id", "job_id", "name", "actor_id", "parent_task_id", "node_id", "worker_id", "attempt", "state", "time", "cause", "pending_reason", "error_type", "error_kind", "start_time", "end_time", "trace_id", "owner_address", "error", "traceback")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    PENDING_REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    job_id: str
    name: str
    actor_id: str
    parent_task_id: str
    node_id: str
    worker_id: str
    attempt: int
    state: str
    time: float
    cause: str
    pending_reason: str
    error_type: str
    error_kind: str
    start_time: float
    end_time: float
    trace_id: str
    owner_address: str
    error: str
    traceback: str
    def __init__(self, task_id: _Optional[str] = ..., job_id: _Optional[str] = ..., name: _Optional[str] = ..., actor_id: _Optional[str] = ..., parent_task_id: _Optional[str] = ..., node_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., attempt: _Optional[int] = ..., state: _Optional[str] = ..., time: _Optional[float] = ..., cause: _Optional[str] = ..., pending_reason: _Optional[str] = ..., error_type: _Optional[str] = ..., error_kind: _Optional[str] = ..., start_time: _Optional[float] = ..., end_time: _Optional[float] = ..., trace_id: _Optional[str] = ..., owner_address: _Optional[str] = ..., error: _Optional[str] = ..., traceback: _Optional[str] = ...) -> None: ...

class ReportTaskEventsRequest(_message.Message):
    __slots__ = ("node_id", "events", "dropped", "packed", "sampled_out", "live_counts", "live_sampled_out", "owner_gone")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_OUT_FIELD_NUMBER: _ClassVar[int]
    LIVE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    LIVE_SAMPLED_OUT_FIELD_NUMBER: _ClassVar[int]
    OWNER_GONE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    events: _containers.RepeatedCompositeFieldContainer[TaskEvent]
    dropped: int
    packed: _containers.RepeatedScalarFieldContainer[bytes]
    sampled_out: _containers.RepeatedCompositeFieldContainer[TaskCount]
    live_counts: bool
    live_sampled_out: _containers.RepeatedCompositeFieldContainer[TaskCount]
    owner_gone: _containers.RepeatedCompositeFieldContainer[TaskCount]
    def __init__(self, node_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[TaskEvent, _Mapping]]] = ..., dropped: _Optional[int] = ..., packed: _Optional[_Iterable[bytes]] = ..., sampled_out: _Optional[_Iterable[_Union[TaskCount, _Mapping]]] = ..., live_counts: _Optional[bool] = ..., live_sampled_out: _Optional[_Iterable[_Union[TaskCount, _Mapping]]] = ..., owner_gone: _Optional[_Iterable[_Union[TaskCount, _Mapping]]] = ...) -> None: ...

class TaskCount(_message.Message):
    __slots__ = ("job_id", "name", "actor_task", "count", "state", "pending_reason", "error_type")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_TASK_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PENDING_REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    name: str
    actor_task: bool
    count: int
    state: str
    pending_reason: str
    error_type: str
    def __init__(self, job_id: _Optional[str] = ..., name: _Optional[str] = ..., actor_task: _Optional[bool] = ..., count: _Optional[int] = ..., state: _Optional[str] = ..., pending_reason: _Optional[str] = ..., error_type: _Optional[str] = ...) -> None: ...

class ReportTaskEventsReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClusterEvent(_message.Message):
    __slots__ = ("event_id", "time", "severity", "source", "kind", "message", "ids")
    class IdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    time: float
    severity: str
    source: str
    kind: str
    message: str
    ids: _containers.ScalarMap[str, str]
    def __init__(self, event_id: _Optional[str] = ..., time: _Optional[float] = ..., severity: _Optional[str] = ..., source: _Optional[str] = ..., kind: _Optional[str] = ..., message: _Optional[str] = ..., ids: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ReportEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[ClusterEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[ClusterEvent, _Mapping]]] = ...) -> None: ...

class ReportEventsReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DrainNodeRequest(_message.Message):
    __slots__ = ("node_id", "undrain")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    UNDRAIN_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    undrain: bool
    def __init__(self, node_id: _Optional[str] = ..., undrain: _Optional[bool] = ...) -> None: ...

class DrainNodeReply(_message.Message):
    __slots__ = ("node", "changed", "open_nodes", "node_told", "running_tasks", "running_actors", "waiting")
    NODE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    OPEN_NODES_FIELD_NUMBER: _ClassVar[int]
    NODE_TOLD_FIELD_NUMBER: _ClassVar[int]
    RUNNING_TASKS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_ACTORS_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    node: NodeInfo
    changed: bool
    open_nodes: int
    node_told: bool
    running_tasks: int
    running_actors: int
    waiting: int
    def __init__(self, node: _Optional[_Union[NodeInfo, _Mapping]] = ..., changed: _Optional[bool] = ..., open_nodes: _Optional[int] = ..., node_told: _Optional[bool] = ..., running_tasks: _Optional[int] = ..., running_actors: _Optional[int] = ..., waiting: _Optional[int] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("key", "op", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    op: str
    value: str
    def __init__(self, key: _Optional[str] = ..., op: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class ListStateRequest(_message.Message):
    __slots__ = ("kind", "filters", "limit", "cursor", "detail", "newest_first", "sort_by", "descending", "follow")
    KIND_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    NEWEST_FIRST_FIELD_NUMBER: _ClassVar[int]
    SORT_BY_FIELD_NUMBER: _ClassVar[int]
    DESCENDING_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    kind: str
    filters: _containers.RepeatedCompositeFieldContainer[Filter]
    limit: int
    cursor: str
    detail: bool
    newest_first: bool
    sort_by: str
    descending: bool
    follow: bool
    def __init__(self, kind: _Optional[str] = ..., filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ..., detail: _Optional[bool] = ..., newest_first: _Optional[bool] = ..., sort_by: _Optional[str] = ..., descending: _Optional[bool] = ..., follow: _Optional[bool] = ...) -> None: ...

class ListStateReply(_message.Message):
    __slots__ = ("rows", "total", "matched", "next_cursor", "truncated", "warnings", "dropped", "partial", "remaining", "watch_cursor")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    WATCH_CURSOR_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedScalarFieldContainer[str]
    total: int
    matched: int
    next_cursor: str
    truncated: bool
    warnings: _containers.RepeatedScalarFieldContainer[str]
    dropped: int
    partial: bool
    remaining: int
    watch_cursor: str
    def __init__(self, rows: _Optional[_Iterable[str]] = ..., total: _Optional[int] = ..., matched: _Optional[int] = ..., next_cursor: _Optional[str] = ..., truncated: _Optional[bool] = ..., warnings: _Optional[_Iterable[str]] = ..., dropped: _Optional[int] = ..., partial: _Optional[bool] = ..., remaining: _Optional[int] = ..., watch_cursor: _Optional[str] = ...) -> None: ...

class SchemaRequest(_message.Message):
    __slots__ = ("kind",)
    KIND_FIELD_NUMBER: _ClassVar[int]
    kind: str
    def __init__(self, kind: _Optional[str] = ...) -> None: ...

class FieldSchema(_message.Message):
    __slots__ = ("name", "type", "choices")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    choices: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., choices: _Optional[_Iterable[str]] = ...) -> None: ...

class KindSchema(_message.Message):
    __slots__ = ("kind", "id_key", "fields", "watchable", "summarizable")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_KEY_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    WATCHABLE_FIELD_NUMBER: _ClassVar[int]
    SUMMARIZABLE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    id_key: str
    fields: _containers.RepeatedCompositeFieldContainer[FieldSchema]
    watchable: bool
    summarizable: bool
    def __init__(self, kind: _Optional[str] = ..., id_key: _Optional[str] = ..., fields: _Optional[_Iterable[_Union[FieldSchema, _Mapping]]] = ..., watchable: _Optional[bool] = ..., summarizable: _Optional[bool] = ...) -> None: ...

class SchemaReply(_message.Message):
    __slots__ = ("kinds",)
    KINDS_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedCompositeFieldContainer[KindSchema]
    def __init__(self, kinds: _Optional[_Iterable[_Union[KindSchema, _Mapping]]] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ("kind", "id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    kind: str
    id: str
    def __init__(self, kind: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class GetStateReply(_message.Message):
    __slots__ = ("row", "found", "warnings")
    ROW_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    row: str
    found: bool
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, row: _Optional[str] = ..., found: _Optional[bool] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class SummaryRequest(_message.Message):
    __slots__ = ("kind", "filters")
    KIND_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    filters: _containers.RepeatedCompositeFieldContainer[Filter]
    def __init__(self, kind: _Optional[str] = ..., filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ...) -> None: ...

class SummaryReply(_message.Message):
    __slots__ = ("summary", "warnings", "partial")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    summary: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    partial: bool
    def __init__(self, summary: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., partial: _Optional[bool] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("kind", "filters", "cursor")
    KIND_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    kind: str
    filters: _containers.RepeatedCompositeFieldContainer[Filter]
    cursor: str
    def __init__(self, kind: _Optional[str] = ..., filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ..., cursor: _Optional[str] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("type", "row", "cursor", "message")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    type: str
    row: str
    cursor: str
    message: str
    def __init__(self, type: _Optional[str] = ..., row: _Optional[str] = ..., cursor: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class WatchReply(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[WatchEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[WatchEvent, _Mapping]]] = ...) -> None: ...

class StartActorRequest(_message.Message):
    __slots__ = ("actor", "creation_spec")
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CREATION_SPEC_FIELD_NUMBER: _ClassVar[int]
    actor: ActorInfo
    creation_spec: bytes
    def __init__(self, actor: _Optional[_Union[ActorInfo, _Mapping]] = ..., creation_spec: _Optional[bytes] = ...) -> None: ...

class StartActorReply(_message.Message):
    __slots__ = ("worker_id", "worker_address", "pid", "creation_error", "error")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    CREATION_ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    worker_address: str
    pid: int
    creation_error: bytes
    error: str
    def __init__(self, worker_id: _Optional[str] = ..., worker_address: _Optional[str] = ..., pid: _Optional[int] = ..., creation_error: _Optional[bytes] = ..., error: _Optional[str] = ...) -> None: ...

class KillWorkerRequest(_message.Message):
    __slots__ = ("actor_id", "worker_id", "force")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    worker_id: str
    force: bool
    def __init__(self, actor_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class KillWorkerReply(_message.Message):
    __slots__ = ("killed",)
    KILLED_FIELD_NUMBER: _ClassVar[int]
    killed: bool
    def __init__(self, killed: _Optional[bool] = ...) -> None: ...

class CancelOwnedTaskRequest(_message.Message):
    __slots__ = ("owner_address", "task_id", "force", "recursive")
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    owner_address: str
    task_id: str
    force: bool
    recursive: bool
    def __init__(self, owner_address: _Optional[str] = ..., task_id: _Optional[str] = ..., force: _Optional[bool] = ..., recursive: _Optional[bool] = ...) -> None: ...

class CancelOwnedTaskReply(_message.Message):
    __slots__ = ("delivered",)
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    delivered: bool
    def __init__(self, delivered: _Optional[bool] = ...) -> None: ...

class GetNodeStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetNodeStatsReply(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: NodeInfo
    def __init__(self, node: _Optional[_Union[NodeInfo, _Mapping]] = ...) -> None: ...

class ObjectInfo(_message.Message):
    __slots__ = ("object_id", "size", "owner_address", "sealed", "create_time", "spilled")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SPILLED_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    size: int
    owner_address: str
    sealed: bool
    create_time: float
    spilled: bool
    def __init__(self, object_id: _Optional[str] = ..., size: _Optional[int] = ..., owner_address: _Optional[str] = ..., sealed: _Optional[bool] = ..., create_time: _Optional[float] = ..., spilled: _Optional[bool] = ...) -> None: ...

class ListObjectsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListObjectsReply(_message.Message):
    __slots__ = ("objects",)
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    objects: _containers.RepeatedCompositeFieldContainer[ObjectInfo]
    def __init__(self, objects: _Optional[_Iterable[_Union[ObjectInfo, _Mapping]]] = ...) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("worker_id", "pid", "state", "address", "actor_id", "start_time", "rss_bytes", "cpu_percent", "node_id", "lease_holder")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_HOLDER_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    pid: int
    state: str
    address: str
    actor_id: str
    start_time: float
    rss_bytes: int
    cpu_percent: float
    node_id: str
    lease_holder: str
    def __init__(self, worker_id: _Optional[str] = ..., pid: _Optional[int] = ..., state: _Optional[str] = ..., address: _Optional[str] = ..., actor_id: _Optional[str] = ..., start_time: _Optional[float] = ..., rss_bytes: _Optional[int] = ..., cpu_percent: _Optional[float] = ..., node_id: _Optional[str] = ..., lease_holder: _Optional[str] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListWorkersReply(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerInfo]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerInfo, _Mapping]]] = ...) -> None: ...

class ReadLogsRequest(_message.Message):
    __slots__ = ("ids", "component", "tail", "follow", "since", "process_output")
    class IdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IDS_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    PROCESS_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.ScalarMap[str, str]
    component: str
    tail: int
    follow: bool
    since: float
    process_output: bool
    def __init__(self, ids: _Optional[_Mapping[str, str]] = ..., component: _Optional[str] = ..., tail: _Optional[int] = ..., follow: _Optional[bool] = ..., since: _Optional[float] = ..., process_output: _Optional[bool] = ...) -> None: ...

class ReadLogsReply(_message.Message):
    __slots__ = ("node_id", "records", "caught_up")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    records: _containers.RepeatedScalarFieldContainer[str]
    caught_up: bool
    def __init__(self, node_id: _Optional[str] = ..., records: _Optional[_Iterable[str]] = ..., caught_up: _Optional[bool] = ...) -> None: ...

class ObjectReference(_message.Message):
    __slots__ = ("object_id", "size", "where", "process", "owner", "held_by", "call_site")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    WHERE_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    HELD_BY_FIELD_NUMBER: _ClassVar[int]
    CALL_SITE_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    size: int
    where: str
    process: str
    owner: bool
    held_by: _containers.RepeatedScalarFieldContainer[str]
    call_site: str
    def __init__(self, object_id: _Optional[str] = ..., size: _Optional[int] = ..., where: _Optional[str] = ..., process: _Optional[str] = ..., owner: _Optional[bool] = ..., held_by: _Optional[_Iterable[str]] = ..., call_site: _Optional[str] = ...) -> None: ...

class NodeMemoryRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeMemoryReply(_message.Message):
    __slots__ = ("node_id", "references", "processes")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    references: _containers.RepeatedCompositeFieldContainer[ObjectReference]
    processes: int
    def __init__(self, node_id: _Optional[str] = ..., references: _Optional[_Iterable[_Union[ObjectReference, _Mapping]]] = ..., processes: _Optional[int] = ...) -> None: ...

class CheckHealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckHealthReply(_message.Message):
    __slots__ = ("node_id", "incarnation")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    incarnation: str
    def __init__(self, node_id: _Optional[str] = ..., incarnation: _Optional[str] = ...) -> None: ...

class ReserveBundlesRequest(_message.Message):
    __slots__ = ("pg_id", "indexes", "bundles", "commit")
    PG_ID_FIELD_NUMBER: _ClassVar[int]
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    pg_id: str
    indexes: _containers.RepeatedScalarFieldContainer[int]
    bundles: _containers.RepeatedCompositeFieldContainer[ResourceMap]
    commit: bool
    def __init__(self, pg_id: _Optional[str] = ..., indexes: _Optional[_Iterable[int]] = ..., bundles: _Optional[_Iterable[_Union[ResourceMap, _Mapping]]] = ..., commit: _Optional[bool] = ...) -> None: ...

class ReserveBundlesReply(_message.Message):
    __slots__ = ("reserved", "error")
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    reserved: bool
    error: str
    def __init__(self, reserved: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class ReturnBundlesRequest(_message.Message):
    __slots__ = ("pg_id",)
    PG_ID_FIELD_NUMBER: _ClassVar[int]
    pg_id: str
    def __init__(self, pg_id: _Optional[str] = ...) -> None: ...

class ReturnBundlesReply(_message.Message):
    __slots__ = ("workers_killed",)
    WORKERS_KILLED_FIELD_NUMBER: _ClassVar[int]
    workers_killed: int
    def __init__(self, workers_killed: _Optional[int] = ...) -> None: ...

class PullObjectRequest(_message.Message):
    __slots__ = ("object_id", "offset")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    object_id: bytes
    offset: int
    def __init__(self, object_id: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...

class FreeObjectsRequest(_message.Message):
    __slots__ = ("object_ids",)
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    object_ids: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, object_ids: _Optional[_Iterable[bytes]] = ...) -> None: ...

class FreeObjectsReply(_message.Message):
    __slots__ = ("freed_bytes",)
    FREED_BYTES_FIELD_NUMBER: _ClassVar[int]
    freed_bytes: int
    def __init__(self, freed_bytes: _Optional[int] = ...) -> None: ...

class ObjectChunk(_message.Message):
    __slots__ = ("data", "size")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    size: int
    def __init__(self, data: _Optional[bytes] = ..., size: _Optional[int] = ...) -> None: ...

class SetDrainingRequest(_message.Message):
    __slots__ = ("draining", "seq", "reason")
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    draining: bool
    seq: int
    reason: str
    def __init__(self, draining: _Optional[bool] = ..., seq: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class SetDrainingReply(_message.Message):
    __slots__ = ("running_tasks", "running_actors", "waiting")
    RUNNING_TASKS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_ACTORS_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    running_tasks: int
    running_actors: int
    waiting: int
    def __init__(self, running_tasks: _Optional[int] = ..., running_actors: _Optional[int] = ..., waiting: _Optional[int] = ...) -> None: ...

class RpcFault(_message.Message):
    __slots__ = ("fault_id", "method", "action", "fraction", "code", "delay_s", "seed", "expires", "calls", "hits", "node_id", "state")
    FAULT_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    DELAY_S_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    fault_id: str
    method: str
    action: str
    fraction: float
    code: str
    delay_s: float
    seed: int
    expires: float
    calls: int
    hits: int
    node_id: str
    state: str
    def __init__(self, fault_id: _Optional[str] = ..., method: _Optional[str] = ..., action: _Optional[str] = ..., fraction: _Optional[float] = ..., code: _Optional[str] = ..., delay_s: _Optional[float] = ..., seed: _Optional[int] = ..., expires: _Optional[float] = ..., calls: _Optional[int] = ..., hits: _Optional[int] = ..., node_id: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class SetRpcFaultRequest(_message.Message):
    __slots__ = ("fault", "duration_s", "node_id")
    FAULT_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    fault: RpcFault
    duration_s: float
    node_id: str
    def __init__(self, fault: _Optional[_Union[RpcFault, _Mapping]] = ..., duration_s: _Optional[float] = ..., node_id: _Optional[str] = ...) -> None: ...

class SetRpcFaultReply(_message.Message):
    __slots__ = ("fault",)
    FAULT_FIELD_NUMBER: _ClassVar[int]
    fault: RpcFault
    def __init__(self, fault: _Optional[_Union[RpcFault, _Mapping]] = ...) -> None: ...

class ClearRpcFaultsRequest(_message.Message):
    __slots__ = ("fault_ids", "node_id")
    FAULT_IDS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    fault_ids: _containers.RepeatedScalarFieldContainer[str]
    node_id: str
    def __init__(self, fault_ids: _Optional[_Iterable[str]] = ..., node_id: _Optional[str] = ...) -> None: ...

class ClearRpcFaultsReply(_message.Message):
    __slots__ = ("cleared", "ended")
    CLEARED_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    cleared: _containers.RepeatedCompositeFieldContainer[RpcFault]
    ended: _containers.RepeatedCompositeFieldContainer[RpcFault]
    def __init__(self, cleared: _Optional[_Iterable[_Union[RpcFault, _Mapping]]] = ..., ended: _Optional[_Iterable[_Union[RpcFault, _Mapping]]] = ...) -> None: ...

class ListRpcFaultsRequest(_message.Message):
    __slots__ = ("node_id", "all_nodes")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ALL_NODES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    all_nodes: bool
    def __init__(self, node_id: _Optional[str] = ..., all_nodes: _Optional[bool] = ...) -> None: ...

class ListRpcFaultsReply(_message.Message):
    __slots__ = ("faults", "unreachable")
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    UNREACHABLE_FIELD_NUMBER: _ClassVar[int]
    faults: _containers.RepeatedCompositeFieldContainer[RpcFault]
    unreachable: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, faults: _Optional[_Iterable[_Union[RpcFault, _Mapping]]] = ..., unreachable: _Optional[_Iterable[str]] = ...) -> None: ...
