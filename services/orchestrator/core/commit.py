"""The pure half of the one commit path (``services/orchestrator/commit.py``): the
plan a proposed change becomes once it has its epoch, and the decision event a
change is logged with, whatever proposed it (the control loop, an operator)."""

from __future__ import annotations

from resplit.v1 import common_pb2

from .decide import OUTCOME_TO_PROTO, Outcome, change_of


def outcome_of(previous: common_pb2.Plan, plan: common_pb2.Plan) -> Outcome:
    """RESPLIT when the boundaries move, else MIGRATE: a plan rolled out is never a
    keep (the same segments applied again still move to a new epoch)."""
    return Outcome.RESPLIT if change_of(previous, plan) is Outcome.RESPLIT else Outcome.MIGRATE


def stamped(
    proposed: common_pb2.Plan,
    deployment: str,
    epoch: int,
    reason: str,
    now: float,
    previous: common_pb2.Plan | None = None,
) -> common_pb2.Plan:
    """``proposed`` (its segments, and a solver's predicted cost) as ``deployment``'s plan of
    ``epoch``. The last change of layer weights (``layers``) carries over from ``previous``
    unless the change is one (a swap, its epoch this one): every later route must still say it."""
    plan = common_pb2.Plan()
    plan.CopyFrom(proposed)
    if plan.HasField("layers"):
        plan.layers.epoch = epoch
    elif previous is not None and previous.HasField("layers"):
        plan.layers.CopyFrom(previous.layers)
    plan.deployment = deployment
    plan.epoch = epoch
    plan.created_at = now
    plan.reason = reason
    return plan


def logged(
    template: common_pb2.DecisionEvent,
    previous: common_pb2.Plan,
    now: float,
    plan: common_pb2.Plan | None = None,
    committed: common_pb2.Plan | None = None,
    failure: str = "",
) -> common_pb2.DecisionEvent:
    """The decision event of one change: ``template`` (deployment, triggers, candidates,
    reason) with what became of it.

    * nothing rolled out (``plan`` None): a keep;
    * ``committed``: its outcome (``outcome_of``), the committed plan as the chosen one;
    * a rollout that failed (``failure``): a keep whose reason says what failed.

    An event without candidates lists the plan it rolled out: an operator's plan is
    the only one there was.
    """
    event = common_pb2.DecisionEvent()
    event.CopyFrom(template)
    event.timestamp = now
    event.previous.CopyFrom(previous)
    event.outcome = OUTCOME_TO_PROTO[Outcome.KEEP]
    if plan is None:
        return event
    if not event.candidates:
        event.candidates.append(plan)
    outcome = outcome_of(previous, plan)
    if committed is not None:
        event.outcome = OUTCOME_TO_PROTO[outcome]
        event.chosen.CopyFrom(committed)
    else:
        event.reason = f"{template.reason}; {outcome.value} to epoch {plan.epoch} failed: {failure}"
    return event


__all__ = ["logged", "outcome_of", "stamped"]
