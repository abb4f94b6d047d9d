from . import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RolloutPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLLOUT_PHASE_UNSPECIFIED: _ClassVar[RolloutPhase]
    ROLLOUT_PHASE_PREPARING: _ClassVar[RolloutPhase]
    ROLLOUT_PHASE_COMMITTED: _ClassVar[RolloutPhase]
    ROLLOUT_PHASE_RELEASED: _ClassVar[RolloutPhase]
    ROLLOUT_PHASE_ABORTED: _ClassVar[RolloutPhase]
ROLLOUT_PHASE_UNSPECIFIED: RolloutPhase
ROLLOUT_PHASE_PREPARING: RolloutPhase
ROLLOUT_PHASE_COMMITTED: RolloutPhase
ROLLOUT_PHASE_RELEASED: RolloutPhase
ROLLOUT_PHASE_ABORTED: RolloutPhase

class RolloutRequest(_message.Message):
    __slots__ = ("plan", "deployment", "prepare_deadline_s", "drain_deadline_s")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    PREPARE_DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    DRAIN_DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    plan: _common_pb2.Plan
    deployment: _common_pb2.Deployment
    prepare_deadline_s: float
    drain_deadline_s: float
    def __init__(self, plan: _Optional[_Union[_common_pb2.Plan, _Mapping]] = ..., deployment: _Optional[_Union[_common_pb2.Deployment, _Mapping]] = ..., prepare_deadline_s: _Optional[float] = ..., drain_deadline_s: _Optional[float] = ...) -> None: ...

class RolloutTimes(_message.Message):
    __slots__ = ("prepare_ms", "commit_ms", "release_ms", "migration_ms", "migration_bytes", "sessions_migrated")
    PREPARE_MS_FIELD_NUMBER: _ClassVar[int]
    COMMIT_MS_FIELD_NUMBER: _ClassVar[int]
    RELEASE_MS_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_MS_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_BYTES_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_MIGRATED_FIELD_NUMBER: _ClassVar[int]
    prepare_ms: float
    commit_ms: float
    release_ms: float
    migration_ms: float
    migration_bytes: int
    sessions_migrated: int
    def __init__(self, prepare_ms: _Optional[float] = ..., commit_ms: _Optional[float] = ..., release_ms: _Optional[float] = ..., migration_ms: _Optional[float] = ..., migration_bytes: _Optional[int] = ..., sessions_migrated: _Optional[int] = ...) -> None: ...

class RolloutResponse(_message.Message):
    __slots__ = ("committed", "phase", "times", "reason")
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    TIMES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    committed: _common_pb2.Plan
    phase: RolloutPhase
    times: RolloutTimes
    reason: str
    def __init__(self, committed: _Optional[_Union[_common_pb2.Plan, _Mapping]] = ..., phase: _Optional[_Union[RolloutPhase, str]] = ..., times: _Optional[_Union[RolloutTimes, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class GetRolloutRequest(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    def __init__(self, deployment: _Optional[str] = ...) -> None: ...

class RolloutStatus(_message.Message):
    __slots__ = ("deployment", "epoch", "phase", "times", "reason")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    TIMES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    epoch: int
    phase: RolloutPhase
    times: RolloutTimes
    reason: str
    def __init__(self, deployment: _Optional[str] = ..., epoch: _Optional[int] = ..., phase: _Optional[_Union[RolloutPhase, str]] = ..., times: _Optional[_Union[RolloutTimes, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    def __init__(self, deployment: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("released", "freed_bytes")
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    FREED_BYTES_FIELD_NUMBER: _ClassVar[int]
    released: _common_pb2.Plan
    freed_bytes: int
    def __init__(self, released: _Optional[_Union[_common_pb2.Plan, _Mapping]] = ..., freed_bytes: _Optional[int] = ...) -> None: ...
