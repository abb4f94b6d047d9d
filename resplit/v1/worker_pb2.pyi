from . import common_pb2 as _common_pb2
from . import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_GENERATE: _ClassVar[Task]
    TASK_EMBED: _ClassVar[Task]
TASK_UNSPECIFIED: Task
TASK_GENERATE: Task
TASK_EMBED: Task

class SamplingParams(_message.Message):
    __slots__ = ("temperature", "top_k", "top_p", "seed", "stop_token_ids", "max_new_tokens")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_k: int
    top_p: float
    seed: int
    stop_token_ids: _containers.RepeatedScalarFieldContainer[int]
    max_new_tokens: int
    def __init__(self, temperature: _Optional[float] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., seed: _Optional[int] = ..., stop_token_ids: _Optional[_Iterable[int]] = ..., max_new_tokens: _Optional[int] = ...) -> None: ...

class OpenSession(_message.Message):
    __slots__ = ("session_id", "deployment", "epoch", "task", "sampling", "downstream", "units", "return_logits", "start_step", "generated", "context_tokens", "migrate_from", "migrate_epoch", "server_loop", "ring", "ring_key")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    DOWNSTREAM_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    RETURN_LOGITS_FIELD_NUMBER: _ClassVar[int]
    START_STEP_FIELD_NUMBER: _ClassVar[int]
    GENERATED_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MIGRATE_FROM_FIELD_NUMBER: _ClassVar[int]
    MIGRATE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    SERVER_LOOP_FIELD_NUMBER: _ClassVar[int]
    RING_FIELD_NUMBER: _ClassVar[int]
    RING_KEY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    deployment: str
    epoch: int
    task: Task
    sampling: SamplingParams
    downstream: _containers.RepeatedCompositeFieldContainer[_common_pb2.Hop]
    units: _common_pb2.UnitRange
    return_logits: bool
    start_step: int
    generated: int
    context_tokens: int
    migrate_from: _containers.RepeatedCompositeFieldContainer[_common_pb2.Hop]
    migrate_epoch: int
    server_loop: bool
    ring: _common_pb2.Hop
    ring_key: str
    def __init__(self, session_id: _Optional[str] = ..., deployment: _Optional[str] = ..., epoch: _Optional[int] = ..., task: _Optional[_Union[Task, str]] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., downstream: _Optional[_Iterable[_Union[_common_pb2.Hop, _Mapping]]] = ..., units: _Optional[_Union[_common_pb2.UnitRange, _Mapping]] = ..., return_logits: _Optional[bool] = ..., start_step: _Optional[int] = ..., generated: _Optional[int] = ..., context_tokens: _Optional[int] = ..., migrate_from: _Optional[_Iterable[_Union[_common_pb2.Hop, _Mapping]]] = ..., migrate_epoch: _Optional[int] = ..., server_loop: _Optional[bool] = ..., ring: _Optional[_Union[_common_pb2.Hop, _Mapping]] = ..., ring_key: _Optional[str] = ...) -> None: ...

class TokenInput(_message.Message):
    __slots__ = ("step", "input_ids", "attention_mask", "rows")
    STEP_FIELD_NUMBER: _ClassVar[int]
    INPUT_IDS_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_MASK_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    step: int
    input_ids: _containers.RepeatedScalarFieldContainer[int]
    attention_mask: _containers.RepeatedScalarFieldContainer[int]
    rows: int
    def __init__(self, step: _Optional[int] = ..., input_ids: _Optional[_Iterable[int]] = ..., attention_mask: _Optional[_Iterable[int]] = ..., rows: _Optional[int] = ...) -> None: ...

class CloseSession(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("open", "tokens", "activation", "close")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    open: OpenSession
    tokens: TokenInput
    activation: _tensor_pb2.TensorChunk
    close: CloseSession
    def __init__(self, open: _Optional[_Union[OpenSession, _Mapping]] = ..., tokens: _Optional[_Union[TokenInput, _Mapping]] = ..., activation: _Optional[_Union[_tensor_pb2.TensorChunk, _Mapping]] = ..., close: _Optional[_Union[CloseSession, _Mapping]] = ...) -> None: ...

class SessionOpened(_message.Message):
    __slots__ = ("session_id", "epoch", "lane_key")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LANE_KEY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    epoch: int
    lane_key: str
    def __init__(self, session_id: _Optional[str] = ..., epoch: _Optional[int] = ..., lane_key: _Optional[str] = ...) -> None: ...

class TokenOutput(_message.Message):
    __slots__ = ("step", "token_id", "logprob", "finished", "finish_reason", "latest_epoch", "route")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    LATEST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    step: int
    token_id: int
    logprob: float
    finished: bool
    finish_reason: str
    latest_epoch: int
    route: _common_pb2.Route
    def __init__(self, step: _Optional[int] = ..., token_id: _Optional[int] = ..., logprob: _Optional[float] = ..., finished: _Optional[bool] = ..., finish_reason: _Optional[str] = ..., latest_epoch: _Optional[int] = ..., route: _Optional[_Union[_common_pb2.Route, _Mapping]] = ...) -> None: ...

class ForwardResponse(_message.Message):
    __slots__ = ("opened", "token", "result")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    opened: SessionOpened
    token: TokenOutput
    result: _tensor_pb2.TensorChunk
    def __init__(self, opened: _Optional[_Union[SessionOpened, _Mapping]] = ..., token: _Optional[_Union[TokenOutput, _Mapping]] = ..., result: _Optional[_Union[_tensor_pb2.TensorChunk, _Mapping]] = ...) -> None: ...

class LaneRow(_message.Message):
    __slots__ = ("session_id", "deployment", "epoch", "key", "activation", "reply")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    deployment: str
    epoch: int
    key: str
    activation: _tensor_pb2.TensorChunk
    reply: ForwardResponse
    def __init__(self, session_id: _Optional[str] = ..., deployment: _Optional[str] = ..., epoch: _Optional[int] = ..., key: _Optional[str] = ..., activation: _Optional[_Union[_tensor_pb2.TensorChunk, _Mapping]] = ..., reply: _Optional[_Union[ForwardResponse, _Mapping]] = ...) -> None: ...

class LaneMessage(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[LaneRow]
    def __init__(self, rows: _Optional[_Iterable[_Union[LaneRow, _Mapping]]] = ...) -> None: ...

class LaneAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LoadSegmentRequest(_message.Message):
    __slots__ = ("deployment", "epoch", "units", "model_dir", "dtype", "compression", "private_depth", "weights", "unit_sources")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIR_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    UNIT_SOURCES_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    epoch: int
    units: _common_pb2.UnitRange
    model_dir: str
    dtype: str
    compression: _tensor_pb2.Compression
    private_depth: int
    weights: str
    unit_sources: _containers.RepeatedCompositeFieldContainer[_common_pb2.UnitSource]
    def __init__(self, deployment: _Optional[str] = ..., epoch: _Optional[int] = ..., units: _Optional[_Union[_common_pb2.UnitRange, _Mapping]] = ..., model_dir: _Optional[str] = ..., dtype: _Optional[str] = ..., compression: _Optional[_Union[_tensor_pb2.Compression, str]] = ..., private_depth: _Optional[int] = ..., weights: _Optional[str] = ..., unit_sources: _Optional[_Iterable[_Union[_common_pb2.UnitSource, _Mapping]]] = ...) -> None: ...

class LoadSegmentResponse(_message.Message):
    __slots__ = ("param_bytes", "load_ms", "device")
    PARAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    param_bytes: int
    load_ms: float
    device: str
    def __init__(self, param_bytes: _Optional[int] = ..., load_ms: _Optional[float] = ..., device: _Optional[str] = ...) -> None: ...

class CommitEpochRequest(_message.Message):
    __slots__ = ("deployment", "epoch", "route")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    epoch: int
    route: _common_pb2.Route
    def __init__(self, deployment: _Optional[str] = ..., epoch: _Optional[int] = ..., route: _Optional[_Union[_common_pb2.Route, _Mapping]] = ...) -> None: ...

class CommitEpochResponse(_message.Message):
    __slots__ = ("active_epoch", "latest_epoch")
    ACTIVE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    LATEST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    active_epoch: int
    latest_epoch: int
    def __init__(self, active_epoch: _Optional[int] = ..., latest_epoch: _Optional[int] = ...) -> None: ...

class ReleaseSegmentRequest(_message.Message):
    __slots__ = ("deployment", "epoch", "units")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    epoch: int
    units: _common_pb2.UnitRange
    def __init__(self, deployment: _Optional[str] = ..., epoch: _Optional[int] = ..., units: _Optional[_Union[_common_pb2.UnitRange, _Mapping]] = ...) -> None: ...

class ReleaseSegmentResponse(_message.Message):
    __slots__ = ("freed_bytes",)
    FREED_BYTES_FIELD_NUMBER: _ClassVar[int]
    freed_bytes: int
    def __init__(self, freed_bytes: _Optional[int] = ...) -> None: ...

class ExportSessionRequest(_message.Message):
    __slots__ = ("deployment", "session_id", "units", "epoch")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    session_id: str
    units: _common_pb2.UnitRange
    epoch: int
    def __init__(self, deployment: _Optional[str] = ..., session_id: _Optional[str] = ..., units: _Optional[_Union[_common_pb2.UnitRange, _Mapping]] = ..., epoch: _Optional[int] = ...) -> None: ...

class KvChunk(_message.Message):
    __slots__ = ("deployment", "session_id", "unit", "kind", "tensor", "epoch", "length")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    session_id: str
    unit: int
    kind: str
    tensor: _tensor_pb2.TensorChunk
    epoch: int
    length: int
    def __init__(self, deployment: _Optional[str] = ..., session_id: _Optional[str] = ..., unit: _Optional[int] = ..., kind: _Optional[str] = ..., tensor: _Optional[_Union[_tensor_pb2.TensorChunk, _Mapping]] = ..., epoch: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HostedSegment(_message.Message):
    __slots__ = ("deployment", "epoch", "units", "param_bytes", "sessions")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    PARAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    epoch: int
    units: _common_pb2.UnitRange
    param_bytes: int
    sessions: int
    def __init__(self, deployment: _Optional[str] = ..., epoch: _Optional[int] = ..., units: _Optional[_Union[_common_pb2.UnitRange, _Mapping]] = ..., param_bytes: _Optional[int] = ..., sessions: _Optional[int] = ...) -> None: ...

class WorkerStatus(_message.Message):
    __slots__ = ("node", "segments", "sessions", "metrics")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    node: _common_pb2.Node
    segments: _containers.RepeatedCompositeFieldContainer[HostedSegment]
    sessions: int
    metrics: _common_pb2.NodeMetrics
    def __init__(self, node: _Optional[_Union[_common_pb2.Node, _Mapping]] = ..., segments: _Optional[_Iterable[_Union[HostedSegment, _Mapping]]] = ..., sessions: _Optional[int] = ..., metrics: _Optional[_Union[_common_pb2.NodeMetrics, _Mapping]] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ("payload", "sent_at")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    sent_at: float
    def __init__(self, payload: _Optional[bytes] = ..., sent_at: _Optional[float] = ...) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ("payload", "node_id")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    node_id: str
    def __init__(self, payload: _Optional[bytes] = ..., node_id: _Optional[str] = ...) -> None: ...

class ProbeChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ProbeResult(_message.Message):
    __slots__ = ("bytes", "seconds")
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    seconds: float
    def __init__(self, bytes: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...
