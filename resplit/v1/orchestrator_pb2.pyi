from . import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeployRequest(_message.Message):
    __slots__ = ("deployment", "segments")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    deployment: _common_pb2.Deployment
    segments: _containers.RepeatedCompositeFieldContainer[_common_pb2.Segment]
    def __init__(self, deployment: _Optional[_Union[_common_pb2.Deployment, _Mapping]] = ..., segments: _Optional[_Iterable[_Union[_common_pb2.Segment, _Mapping]]] = ...) -> None: ...

class DeployResponse(_message.Message):
    __slots__ = ("plan",)
    PLAN_FIELD_NUMBER: _ClassVar[int]
    plan: _common_pb2.Plan
    def __init__(self, plan: _Optional[_Union[_common_pb2.Plan, _Mapping]] = ...) -> None: ...

class UndeployRequest(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    def __init__(self, deployment: _Optional[str] = ...) -> None: ...

class UndeployResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDeploymentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDeploymentsResponse(_message.Message):
    __slots__ = ("deployments",)
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[_common_pb2.Deployment]
    def __init__(self, deployments: _Optional[_Iterable[_Union[_common_pb2.Deployment, _Mapping]]] = ...) -> None: ...

class GetRouteRequest(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    def __init__(self, deployment: _Optional[str] = ...) -> None: ...

class WatchRouteRequest(_message.Message):
    __slots__ = ("deployment", "after_epoch")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    AFTER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    after_epoch: int
    def __init__(self, deployment: _Optional[str] = ..., after_epoch: _Optional[int] = ...) -> None: ...

class GetPlanRequest(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    def __init__(self, deployment: _Optional[str] = ...) -> None: ...

class ApplyPlanRequest(_message.Message):
    __slots__ = ("deployment", "segments", "reason")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    segments: _containers.RepeatedCompositeFieldContainer[_common_pb2.Segment]
    reason: str
    def __init__(self, deployment: _Optional[str] = ..., segments: _Optional[_Iterable[_Union[_common_pb2.Segment, _Mapping]]] = ..., reason: _Optional[str] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("deployment", "limit")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    limit: int
    def __init__(self, deployment: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_common_pb2.DecisionEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[_common_pb2.DecisionEvent, _Mapping]]] = ...) -> None: ...

class ReportFailureRequest(_message.Message):
    __slots__ = ("node_ids", "deployment", "reporter", "reason")
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    REPORTER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    deployment: str
    reporter: str
    reason: str
    def __init__(self, node_ids: _Optional[_Iterable[str]] = ..., deployment: _Optional[str] = ..., reporter: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class FailureVerdict(_message.Message):
    __slots__ = ("node_id", "state", "detail")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[FailureVerdict.State]
        STATE_UP: _ClassVar[FailureVerdict.State]
        STATE_DOWN: _ClassVar[FailureVerdict.State]
        STATE_UNKNOWN_NODE: _ClassVar[FailureVerdict.State]
    STATE_UNSPECIFIED: FailureVerdict.State
    STATE_UP: FailureVerdict.State
    STATE_DOWN: FailureVerdict.State
    STATE_UNKNOWN_NODE: FailureVerdict.State
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    state: FailureVerdict.State
    detail: str
    def __init__(self, node_id: _Optional[str] = ..., state: _Optional[_Union[FailureVerdict.State, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class ReportFailureResponse(_message.Message):
    __slots__ = ("verdicts",)
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    verdicts: _containers.RepeatedCompositeFieldContainer[FailureVerdict]
    def __init__(self, verdicts: _Optional[_Iterable[_Union[FailureVerdict, _Mapping]]] = ...) -> None: ...

class SwapLayersRequest(_message.Message):
    __slots__ = ("deployment", "units", "source_dir", "sessions", "requested_by", "reason")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_DIR_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    units: _containers.RepeatedCompositeFieldContainer[_common_pb2.UnitRange]
    source_dir: str
    sessions: _common_pb2.SessionPolicy
    requested_by: str
    reason: str
    def __init__(self, deployment: _Optional[str] = ..., units: _Optional[_Iterable[_Union[_common_pb2.UnitRange, _Mapping]]] = ..., source_dir: _Optional[str] = ..., sessions: _Optional[_Union[_common_pb2.SessionPolicy, str]] = ..., requested_by: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SwapLayersResponse(_message.Message):
    __slots__ = ("plan", "units")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    plan: _common_pb2.Plan
    units: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, plan: _Optional[_Union[_common_pb2.Plan, _Mapping]] = ..., units: _Optional[_Iterable[int]] = ...) -> None: ...
