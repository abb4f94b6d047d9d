from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_POLICY_UNSPECIFIED: _ClassVar[SessionPolicy]
    SESSION_POLICY_DRAIN: _ClassVar[SessionPolicy]
    SESSION_POLICY_REPLAY: _ClassVar[SessionPolicy]

class NodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATE_UNSPECIFIED: _ClassVar[NodeState]
    NODE_STATE_UP: _ClassVar[NodeState]
    NODE_STATE_DOWN: _ClassVar[NodeState]

class LatencySignal(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LATENCY_SIGNAL_UNSPECIFIED: _ClassVar[LatencySignal]
    LATENCY_SIGNAL_TTFT: _ClassVar[LatencySignal]
    LATENCY_SIGNAL_TPOT: _ClassVar[LatencySignal]
    LATENCY_SIGNAL_TTFT_AND_TPOT: _ClassVar[LatencySignal]
    LATENCY_SIGNAL_REQUEST: _ClassVar[LatencySignal]

class Objective(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OBJECTIVE_UNSPECIFIED: _ClassVar[Objective]
    OBJECTIVE_LATENCY: _ClassVar[Objective]
    OBJECTIVE_THROUGHPUT: _ClassVar[Objective]

class DecisionOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_OUTCOME_UNSPECIFIED: _ClassVar[DecisionOutcome]
    DECISION_OUTCOME_KEEP: _ClassVar[DecisionOutcome]
    DECISION_OUTCOME_MIGRATE: _ClassVar[DecisionOutcome]
    DECISION_OUTCOME_RESPLIT: _ClassVar[DecisionOutcome]
SESSION_POLICY_UNSPECIFIED: SessionPolicy
SESSION_POLICY_DRAIN: SessionPolicy
SESSION_POLICY_REPLAY: SessionPolicy
NODE_STATE_UNSPECIFIED: NodeState
NODE_STATE_UP: NodeState
NODE_STATE_DOWN: NodeState
LATENCY_SIGNAL_UNSPECIFIED: LatencySignal
LATENCY_SIGNAL_TTFT: LatencySignal
LATENCY_SIGNAL_TPOT: LatencySignal
LATENCY_SIGNAL_TTFT_AND_TPOT: LatencySignal
LATENCY_SIGNAL_REQUEST: LatencySignal
OBJECTIVE_UNSPECIFIED: Objective
OBJECTIVE_LATENCY: Objective
OBJECTIVE_THROUGHPUT: Objective
DECISION_OUTCOME_UNSPECIFIED: DecisionOutcome
DECISION_OUTCOME_KEEP: DecisionOutcome
DECISION_OUTCOME_MIGRATE: DecisionOutcome
DECISION_OUTCOME_RESPLIT: DecisionOutcome

class UnitRange(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("units", "node_id")
    UNITS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    units: UnitRange
    node_id: str
    def __init__(self, units: _Optional[_Union[UnitRange, _Mapping]] = ..., node_id: _Optional[str] = ...) -> None: ...

class Split(_message.Message):
    __slots__ = ("segments",)
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    segments: _containers.RepeatedCompositeFieldContainer[UnitRange]
    def __init__(self, segments: _Optional[_Iterable[_Union[UnitRange, _Mapping]]] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("node_ids",)
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CostBreakdown(_message.Message):
    __slots__ = ("phi", "latency_ms", "utilization", "privacy", "compute_ms", "transfer_ms", "queueing_ms", "prefill_ms", "decode_ms_per_token", "throughput_tps", "migration_gib", "bottleneck_ms")
    PHI_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUEING_MS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_TPS_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_GIB_FIELD_NUMBER: _ClassVar[int]
    BOTTLENECK_MS_FIELD_NUMBER: _ClassVar[int]
    phi: float
    latency_ms: float
    utilization: float
    privacy: float
    compute_ms: float
    transfer_ms: float
    queueing_ms: float
    prefill_ms: float
    decode_ms_per_token: float
    throughput_tps: float
    migration_gib: float
    bottleneck_ms: float
    def __init__(self, phi: _Optional[float] = ..., latency_ms: _Optional[float] = ..., utilization: _Optional[float] = ..., privacy: _Optional[float] = ..., compute_ms: _Optional[float] = ..., transfer_ms: _Optional[float] = ..., queueing_ms: _Optional[float] = ..., prefill_ms: _Optional[float] = ..., decode_ms_per_token: _Optional[float] = ..., throughput_tps: _Optional[float] = ..., migration_gib: _Optional[float] = ..., bottleneck_ms: _Optional[float] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("deployment", "epoch", "segments", "predicted", "created_at", "reason", "layers")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    epoch: int
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    predicted: CostBreakdown
    created_at: float
    reason: str
    layers: LayerChange
    def __init__(self, deployment: _Optional[str] = ..., epoch: _Optional[int] = ..., segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ..., predicted: _Optional[_Union[CostBreakdown, _Mapping]] = ..., created_at: _Optional[float] = ..., reason: _Optional[str] = ..., layers: _Optional[_Union[LayerChange, _Mapping]] = ...) -> None: ...

class LayerChange(_message.Message):
    __slots__ = ("epoch", "first_unit", "sessions")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    FIRST_UNIT_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    first_unit: int
    sessions: SessionPolicy
    def __init__(self, epoch: _Optional[int] = ..., first_unit: _Optional[int] = ..., sessions: _Optional[_Union[SessionPolicy, str]] = ...) -> None: ...

class UnitSource(_message.Message):
    __slots__ = ("unit", "model_dir")
    UNIT_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIR_FIELD_NUMBER: _ClassVar[int]
    unit: int
    model_dir: str
    def __init__(self, unit: _Optional[int] = ..., model_dir: _Optional[str] = ...) -> None: ...

class NodeCapacity(_message.Message):
    __slots__ = ("memory_bytes", "cpu_cores", "gpu_count", "gpu_memory_bytes", "device_profile", "network_mbps")
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    GPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    NETWORK_MBPS_FIELD_NUMBER: _ClassVar[int]
    memory_bytes: int
    cpu_cores: int
    gpu_count: int
    gpu_memory_bytes: int
    device_profile: str
    network_mbps: float
    def __init__(self, memory_bytes: _Optional[int] = ..., cpu_cores: _Optional[int] = ..., gpu_count: _Optional[int] = ..., gpu_memory_bytes: _Optional[int] = ..., device_profile: _Optional[str] = ..., network_mbps: _Optional[float] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("node_id", "address", "trusted", "capacity", "state", "last_heartbeat", "role", "hosted")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    HOSTED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    trusted: bool
    capacity: NodeCapacity
    state: NodeState
    last_heartbeat: float
    role: str
    hosted: _containers.RepeatedCompositeFieldContainer[UnitRange]
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., trusted: _Optional[bool] = ..., capacity: _Optional[_Union[NodeCapacity, _Mapping]] = ..., state: _Optional[_Union[NodeState, str]] = ..., last_heartbeat: _Optional[float] = ..., role: _Optional[str] = ..., hosted: _Optional[_Iterable[_Union[UnitRange, _Mapping]]] = ...) -> None: ...

class NodeMetrics(_message.Message):
    __slots__ = ("node_id", "timestamp", "cpu_utilization", "gpu_utilization", "memory_utilization", "rss_bytes", "gpu_memory_used_bytes", "requests_in_flight", "queue_depth", "segment_compute_ms", "has_gpu", "kv_reserved_tokens", "kv_budget_tokens", "segment_kv_tokens", "segment_load")
    class SegmentComputeMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class SegmentKvTokensEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class SegmentLoadEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    GPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    HAS_GPU_FIELD_NUMBER: _ClassVar[int]
    KV_RESERVED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    KV_BUDGET_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_KV_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_LOAD_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    timestamp: float
    cpu_utilization: float
    gpu_utilization: float
    memory_utilization: float
    rss_bytes: int
    gpu_memory_used_bytes: int
    requests_in_flight: int
    queue_depth: int
    segment_compute_ms: _containers.ScalarMap[str, float]
    has_gpu: bool
    kv_reserved_tokens: int
    kv_budget_tokens: int
    segment_kv_tokens: _containers.ScalarMap[str, int]
    segment_load: _containers.ScalarMap[str, float]
    def __init__(self, node_id: _Optional[str] = ..., timestamp: _Optional[float] = ..., cpu_utilization: _Optional[float] = ..., gpu_utilization: _Optional[float] = ..., memory_utilization: _Optional[float] = ..., rss_bytes: _Optional[int] = ..., gpu_memory_used_bytes: _Optional[int] = ..., requests_in_flight: _Optional[int] = ..., queue_depth: _Optional[int] = ..., segment_compute_ms: _Optional[_Mapping[str, float]] = ..., has_gpu: _Optional[bool] = ..., kv_reserved_tokens: _Optional[int] = ..., kv_budget_tokens: _Optional[int] = ..., segment_kv_tokens: _Optional[_Mapping[str, int]] = ..., segment_load: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Link(_message.Message):
    __slots__ = ("src", "dst", "bandwidth_mbps", "rtt_ms", "timestamp")
    SRC_FIELD_NUMBER: _ClassVar[int]
    DST_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_MBPS_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    src: str
    dst: str
    bandwidth_mbps: float
    rtt_ms: float
    timestamp: float
    def __init__(self, src: _Optional[str] = ..., dst: _Optional[str] = ..., bandwidth_mbps: _Optional[float] = ..., rtt_ms: _Optional[float] = ..., timestamp: _Optional[float] = ...) -> None: ...

class Environment(_message.Message):
    __slots__ = ("timestamp", "nodes", "metrics", "links", "latency_ewma_ms", "latency_signals")
    class LatencyEwmaMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class LatencySignalsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: LatencySignals
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[LatencySignals, _Mapping]] = ...) -> None: ...
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_EWMA_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SIGNALS_FIELD_NUMBER: _ClassVar[int]
    timestamp: float
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    metrics: _containers.RepeatedCompositeFieldContainer[NodeMetrics]
    links: _containers.RepeatedCompositeFieldContainer[Link]
    latency_ewma_ms: _containers.ScalarMap[str, float]
    latency_signals: _containers.MessageMap[str, LatencySignals]
    def __init__(self, timestamp: _Optional[float] = ..., nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., metrics: _Optional[_Iterable[_Union[NodeMetrics, _Mapping]]] = ..., links: _Optional[_Iterable[_Union[Link, _Mapping]]] = ..., latency_ewma_ms: _Optional[_Mapping[str, float]] = ..., latency_signals: _Optional[_Mapping[str, LatencySignals]] = ...) -> None: ...

class LatencySignals(_message.Message):
    __slots__ = ("ttft_ms", "tpot_ms", "request_ms")
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    TPOT_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_MS_FIELD_NUMBER: _ClassVar[int]
    ttft_ms: float
    tpot_ms: float
    request_ms: float
    def __init__(self, ttft_ms: _Optional[float] = ..., tpot_ms: _Optional[float] = ..., request_ms: _Optional[float] = ...) -> None: ...

class Thresholds(_message.Message):
    __slots__ = ("l_max_ms", "u_max", "b_min_mbps", "t_cool_s", "tpot_max_ms")
    L_MAX_MS_FIELD_NUMBER: _ClassVar[int]
    U_MAX_FIELD_NUMBER: _ClassVar[int]
    B_MIN_MBPS_FIELD_NUMBER: _ClassVar[int]
    T_COOL_S_FIELD_NUMBER: _ClassVar[int]
    TPOT_MAX_MS_FIELD_NUMBER: _ClassVar[int]
    l_max_ms: float
    u_max: float
    b_min_mbps: float
    t_cool_s: float
    tpot_max_ms: float
    def __init__(self, l_max_ms: _Optional[float] = ..., u_max: _Optional[float] = ..., b_min_mbps: _Optional[float] = ..., t_cool_s: _Optional[float] = ..., tpot_max_ms: _Optional[float] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("alpha", "beta", "gamma", "thresholds", "trusted_node_ids", "private_depth", "objective", "soft_privacy", "interval_s", "hysteresis", "migration_weight", "latency_signal")
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    SOFT_PRIVACY_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    HYSTERESIS_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SIGNAL_FIELD_NUMBER: _ClassVar[int]
    alpha: float
    beta: float
    gamma: float
    thresholds: Thresholds
    trusted_node_ids: _containers.RepeatedScalarFieldContainer[str]
    private_depth: int
    objective: Objective
    soft_privacy: bool
    interval_s: float
    hysteresis: float
    migration_weight: float
    latency_signal: LatencySignal
    def __init__(self, alpha: _Optional[float] = ..., beta: _Optional[float] = ..., gamma: _Optional[float] = ..., thresholds: _Optional[_Union[Thresholds, _Mapping]] = ..., trusted_node_ids: _Optional[_Iterable[str]] = ..., private_depth: _Optional[int] = ..., objective: _Optional[_Union[Objective, str]] = ..., soft_privacy: _Optional[bool] = ..., interval_s: _Optional[float] = ..., hysteresis: _Optional[float] = ..., migration_weight: _Optional[float] = ..., latency_signal: _Optional[_Union[LatencySignal, str]] = ...) -> None: ...

class Trigger(_message.Message):
    __slots__ = ("name", "value", "threshold", "subject")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    threshold: float
    subject: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., subject: _Optional[str] = ...) -> None: ...

class DecisionEvent(_message.Message):
    __slots__ = ("deployment", "timestamp", "triggers", "outcome", "previous", "chosen", "candidates", "reason", "measured_latency_ms", "latency_signal", "requested_by")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    TRIGGERS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MEASURED_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SIGNAL_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    timestamp: float
    triggers: _containers.RepeatedCompositeFieldContainer[Trigger]
    outcome: DecisionOutcome
    previous: Plan
    chosen: Plan
    candidates: _containers.RepeatedCompositeFieldContainer[Plan]
    reason: str
    measured_latency_ms: float
    latency_signal: str
    requested_by: str
    def __init__(self, deployment: _Optional[str] = ..., timestamp: _Optional[float] = ..., triggers: _Optional[_Iterable[_Union[Trigger, _Mapping]]] = ..., outcome: _Optional[_Union[DecisionOutcome, str]] = ..., previous: _Optional[_Union[Plan, _Mapping]] = ..., chosen: _Optional[_Union[Plan, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[Plan, _Mapping]]] = ..., reason: _Optional[str] = ..., measured_latency_ms: _Optional[float] = ..., latency_signal: _Optional[str] = ..., requested_by: _Optional[str] = ...) -> None: ...

class Hop(_message.Message):
    __slots__ = ("units", "node_id", "address")
    UNITS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    units: UnitRange
    node_id: str
    address: str
    def __init__(self, units: _Optional[_Union[UnitRange, _Mapping]] = ..., node_id: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("deployment", "epoch", "hops", "layers")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    epoch: int
    hops: _containers.RepeatedCompositeFieldContainer[Hop]
    layers: LayerChange
    def __init__(self, deployment: _Optional[str] = ..., epoch: _Optional[int] = ..., hops: _Optional[_Iterable[_Union[Hop, _Mapping]]] = ..., layers: _Optional[_Union[LayerChange, _Mapping]] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("name", "model_dir", "policy", "num_units", "family", "compression", "dtype", "generative", "weights", "unit_sources")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIR_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    NUM_UNITS_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    GENERATIVE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    UNIT_SOURCES_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_dir: str
    policy: Policy
    num_units: int
    family: str
    compression: str
    dtype: str
    generative: bool
    weights: str
    unit_sources: _containers.RepeatedCompositeFieldContainer[UnitSource]
    def __init__(self, name: _Optional[str] = ..., model_dir: _Optional[str] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ..., num_units: _Optional[int] = ..., family: _Optional[str] = ..., compression: _Optional[str] = ..., dtype: _Optional[str] = ..., generative: _Optional[bool] = ..., weights: _Optional[str] = ..., unit_sources: _Optional[_Iterable[_Union[UnitSource, _Mapping]]] = ...) -> None: ...
