from . import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SolveMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOLVE_MODE_UNSPECIFIED: _ClassVar[SolveMode]
    SOLVE_MODE_PLACEMENT_ONLY: _ClassVar[SolveMode]
    SOLVE_MODE_RESPLIT: _ClassVar[SolveMode]
    SOLVE_MODE_EVALUATE: _ClassVar[SolveMode]

class SolverKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOLVER_KIND_UNSPECIFIED: _ClassVar[SolverKind]
    SOLVER_KIND_EXACT: _ClassVar[SolverKind]
    SOLVER_KIND_GREEDY: _ClassVar[SolverKind]
    SOLVER_KIND_BRUTE_FORCE: _ClassVar[SolverKind]
SOLVE_MODE_UNSPECIFIED: SolveMode
SOLVE_MODE_PLACEMENT_ONLY: SolveMode
SOLVE_MODE_RESPLIT: SolveMode
SOLVE_MODE_EVALUATE: SolveMode
SOLVER_KIND_UNSPECIFIED: SolverKind
SOLVER_KIND_EXACT: SolverKind
SOLVER_KIND_GREEDY: SolverKind
SOLVER_KIND_BRUTE_FORCE: SolverKind

class UnitProfile(_message.Message):
    __slots__ = ("index", "kind", "param_bytes", "kv_bytes_per_token", "flops_per_token", "activation_bytes_per_token", "attention_flops_per_position")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FLOPS_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_BYTES_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_FLOPS_PER_POSITION_FIELD_NUMBER: _ClassVar[int]
    index: int
    kind: str
    param_bytes: int
    kv_bytes_per_token: int
    flops_per_token: float
    activation_bytes_per_token: int
    attention_flops_per_position: float
    def __init__(self, index: _Optional[int] = ..., kind: _Optional[str] = ..., param_bytes: _Optional[int] = ..., kv_bytes_per_token: _Optional[int] = ..., flops_per_token: _Optional[float] = ..., activation_bytes_per_token: _Optional[int] = ..., attention_flops_per_position: _Optional[float] = ...) -> None: ...

class ModelProfile(_message.Message):
    __slots__ = ("name", "family", "dtype", "units")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    family: str
    dtype: str
    units: _containers.RepeatedCompositeFieldContainer[UnitProfile]
    def __init__(self, name: _Optional[str] = ..., family: _Optional[str] = ..., dtype: _Optional[str] = ..., units: _Optional[_Iterable[_Union[UnitProfile, _Mapping]]] = ...) -> None: ...

class NodeProfile(_message.Message):
    __slots__ = ("node_id", "memory_bytes", "flops_per_s", "utilization", "trusted", "device_profile", "memory_bandwidth_gbps")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    FLOPS_PER_S_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BANDWIDTH_GBPS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    memory_bytes: int
    flops_per_s: float
    utilization: float
    trusted: bool
    device_profile: str
    memory_bandwidth_gbps: float
    def __init__(self, node_id: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., flops_per_s: _Optional[float] = ..., utilization: _Optional[float] = ..., trusted: _Optional[bool] = ..., device_profile: _Optional[str] = ..., memory_bandwidth_gbps: _Optional[float] = ...) -> None: ...

class Workload(_message.Message):
    __slots__ = ("prompt_tokens", "generate_tokens", "request_rate", "concurrent_sessions", "prefill_factor", "decode_factor")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GENERATE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_RATE_FIELD_NUMBER: _ClassVar[int]
    CONCURRENT_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_FACTOR_FIELD_NUMBER: _ClassVar[int]
    DECODE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    generate_tokens: int
    request_rate: float
    concurrent_sessions: int
    prefill_factor: float
    decode_factor: float
    def __init__(self, prompt_tokens: _Optional[int] = ..., generate_tokens: _Optional[int] = ..., request_rate: _Optional[float] = ..., concurrent_sessions: _Optional[int] = ..., prefill_factor: _Optional[float] = ..., decode_factor: _Optional[float] = ...) -> None: ...

class Problem(_message.Message):
    __slots__ = ("model", "nodes", "links", "policy", "workload", "current")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    model: ModelProfile
    nodes: _containers.RepeatedCompositeFieldContainer[NodeProfile]
    links: _containers.RepeatedCompositeFieldContainer[_common_pb2.Link]
    policy: _common_pb2.Policy
    workload: Workload
    current: _common_pb2.Plan
    def __init__(self, model: _Optional[_Union[ModelProfile, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[NodeProfile, _Mapping]]] = ..., links: _Optional[_Iterable[_Union[_common_pb2.Link, _Mapping]]] = ..., policy: _Optional[_Union[_common_pb2.Policy, _Mapping]] = ..., workload: _Optional[_Union[Workload, _Mapping]] = ..., current: _Optional[_Union[_common_pb2.Plan, _Mapping]] = ...) -> None: ...

class SolveRequest(_message.Message):
    __slots__ = ("problem", "mode", "solver")
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SOLVER_FIELD_NUMBER: _ClassVar[int]
    problem: Problem
    mode: SolveMode
    solver: SolverKind
    def __init__(self, problem: _Optional[_Union[Problem, _Mapping]] = ..., mode: _Optional[_Union[SolveMode, str]] = ..., solver: _Optional[_Union[SolverKind, str]] = ...) -> None: ...

class SolveResponse(_message.Message):
    __slots__ = ("plan", "cost", "solve_ms", "solver", "detail")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    SOLVE_MS_FIELD_NUMBER: _ClassVar[int]
    SOLVER_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    plan: _common_pb2.Plan
    cost: _common_pb2.CostBreakdown
    solve_ms: float
    solver: SolverKind
    detail: str
    def __init__(self, plan: _Optional[_Union[_common_pb2.Plan, _Mapping]] = ..., cost: _Optional[_Union[_common_pb2.CostBreakdown, _Mapping]] = ..., solve_ms: _Optional[float] = ..., solver: _Optional[_Union[SolverKind, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class ProfileModelRequest(_message.Message):
    __slots__ = ("model_dir", "config_json", "dtype", "weights")
    MODEL_DIR_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    model_dir: str
    config_json: str
    dtype: str
    weights: str
    def __init__(self, model_dir: _Optional[str] = ..., config_json: _Optional[str] = ..., dtype: _Optional[str] = ..., weights: _Optional[str] = ...) -> None: ...
