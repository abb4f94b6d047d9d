"""The decision of Alg. 1, as a function of what one monitoring cycle learned.

Order, as the paper's Section III-C has it:

1. no trigger fired -> **keep**;
2. try *placement migration* (the splitter's PLACEMENT_ONLY: boundaries fixed);
3. if migration cannot meet every constraint, invoke *split revision* (RESPLIT)
   and take the cheaper feasible candidate (d-hat = argmin Phi);
4. apply d-hat only if it differs from d_t (segments or nodes), its predicted
   gain is at least ``hysteresis`` x the current Phi, and T_cool has passed
   since the last change. A node of d_t that is down bypasses both the
   hysteresis and T_cool: a dead node must be replaced now.
5. **no churn**: the predicted gain must also pay for the change itself, the
   live sessions' KV caches that move (``Switch``: their stall, amortised over
   the requests expected while the new plan holds, T_cool at least), and a
   d-hat equal to a plan in force within the last few cycles (``Recent``) is
   held as flapping, with that reason logged.

"Meets every constraint" for a candidate means what can be checked from its
predicted :class:`CostBreakdown` and from E(t):

* (3)-(5) (unique assignment, memory capacity, privacy): the splitter returns
  only plans that satisfy them, so a returned candidate does;
* predicted latency ``<= L_max`` on the policy's signal (``bounds``): TTFT is the
  predicted prefill, TPOT the predicted decode step, a request the whole L;
* utilization ``<= U_max`` on every node the candidate uses, read from E(t)
  (``CostBreakdown.utilization`` is the peak over *all* nodes of the problem,
  also those the candidate leaves idle, so it cannot say this);
* bandwidth ``>= B_min`` on every link the candidate sends activations over,
  from E(t) (a link not measured yet counts as meeting it, as in the triggers).

The outcome names what changes: **resplit** when the boundaries differ from
d_t, **migrate** when only nodes do, **keep** when nothing is applied.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from resplit.v1 import common_pb2

from .triggers import NODE_DOWN, plan_hops, plan_nodes


class Outcome(enum.Enum):
    KEEP = "keep"
    MIGRATE = "migrate"
    RESPLIT = "resplit"


OUTCOME_TO_PROTO = {
    Outcome.KEEP: common_pb2.DECISION_OUTCOME_KEEP,
    Outcome.MIGRATE: common_pb2.DECISION_OUTCOME_MIGRATE,
    Outcome.RESPLIT: common_pb2.DECISION_OUTCOME_RESPLIT,
}
PROTO_TO_OUTCOME = {proto: outcome for outcome, proto in OUTCOME_TO_PROTO.items()}


@dataclass(frozen=True)
class Candidate:
    """One mapping d' from the splitter: a plan with its predicted cost, or why there is none."""

    mode: str  # "placement-only" or "resplit"
    plan: common_pb2.Plan | None = None
    infeasible: str = ""

    @property
    def phi(self) -> float:
        return self.plan.predicted.phi if self.plan is not None else math.inf


@dataclass(frozen=True)
class Measured:
    """What E(t) says about nodes and links, for the constraint check."""

    utilization: Mapping[str, float] = field(default_factory=dict)
    bandwidth_mbps: Mapping[tuple[str, str], float] = field(default_factory=dict)


@dataclass(frozen=True)
class Switch:
    """What changing to a plan costs, in Phi's units per request (amortised), and why."""

    cost: float = 0.0
    why: str = ""


@dataclass(frozen=True)
class Recent:
    """A plan in force not long ago: d-hat equal to it is flapping."""

    layout: tuple[tuple[int, int, str], ...]
    epoch: int
    cycles_ago: float


@dataclass
class Decision:
    outcome: Outcome
    chosen: common_pb2.Plan | None
    candidates: list[Candidate]
    reason: str


def layout(plan: common_pb2.Plan) -> tuple[tuple[int, int, str], ...]:
    """What makes two plans the same mapping: their segments and nodes."""
    return tuple((s.units.start, s.units.end, s.node_id) for s in plan.segments)


def boundaries(plan: common_pb2.Plan) -> tuple[tuple[int, int], ...]:
    return tuple((s.units.start, s.units.end) for s in plan.segments)


def change_of(current: common_pb2.Plan, chosen: common_pb2.Plan) -> Outcome:
    """RESPLIT when the boundaries move, MIGRATE when only the nodes do, KEEP when neither."""
    if boundaries(chosen) != boundaries(current):
        return Outcome.RESPLIT
    return Outcome.MIGRATE if layout(chosen) != layout(current) else Outcome.KEEP


def predicted_ms(cost: common_pb2.CostBreakdown, signal: str) -> float:
    """The splitter's prediction of one latency signal (``ttft``, ``tpot``, ``request``)."""
    return {"ttft": cost.prefill_ms, "tpot": cost.decode_ms_per_token}.get(signal, cost.latency_ms)


def violations(
    plan: common_pb2.Plan,
    thresholds: common_pb2.Thresholds,
    measured: Measured,
    bounds: Sequence[tuple[str, float]] | None = None,
) -> list[str]:
    """The constraints a candidate would not meet (empty: it meets every one)."""
    broken = []
    if bounds is None:
        bounds = [("request", thresholds.l_max_ms)]
    for index, (signal, bound) in enumerate(bounds):
        value = predicted_ms(plan.predicted, signal)
        if value > bound:
            name = "L" if signal == "request" else signal.upper()
            label = "L_max" if index == 0 else "TPOT_max"
            broken.append(f"predicted {name} {value:.4g} ms > {label} {bound:.4g}")
    for node_id in plan_nodes(plan):
        u = measured.utilization.get(node_id)
        if u is not None and u > thresholds.u_max:
            broken.append(f"U {u:.2f} on {node_id} > U_max {thresholds.u_max:.2f}")
    for hop in plan_hops(plan):
        b = measured.bandwidth_mbps.get(hop)
        if b is not None and b < thresholds.b_min_mbps:
            broken.append(f"B {b:.4g} Mb/s on {hop[0]}->{hop[1]} < B_min {thresholds.b_min_mbps:.4g}")
    return broken


def _best(candidates: list[Candidate]) -> Candidate | None:
    """argmin Phi over the feasible candidates; on a tie the earlier one (migration: fewer changes)."""
    feasible = [c for c in candidates if c.plan is not None]
    return min(feasible, key=lambda c: c.phi) if feasible else None


def _gain_suffices(best: Candidate, current_phi: float, hysteresis: float) -> tuple[bool, str]:
    if math.isinf(current_phi):
        return True, "the current plan is infeasible now"
    gain = current_phi - best.phi
    needed = hysteresis * current_phi
    if gain < needed or gain <= 0:
        return False, (
            f"hysteresis: predicted Phi {best.phi:.4g} vs current {current_phi:.4g} gains {gain:.4g}, "
            f"below {hysteresis:.0%} of the current Phi"
        )
    return True, f"Phi {current_phi:.4g} -> {best.phi:.4g}"


def recent_plans(
    events: Sequence[common_pb2.DecisionEvent], now: float, interval_s: float, cycles: int
) -> list[Recent]:
    """The plans a change replaced within the last ``cycles`` cycles of ``interval_s``:
    the plans a new d-hat must not return to (flapping)."""
    found = []
    for event in events:
        if event.outcome == common_pb2.DECISION_OUTCOME_KEEP or not event.previous.segments:
            continue
        ago = (now - event.timestamp) / max(interval_s, 1e-9)
        if ago <= cycles:
            found.append(Recent(layout(event.previous), event.previous.epoch, ago))
    return found


def _held(
    chosen: common_pb2.Plan,
    current_phi: float,
    switch: Callable[[common_pb2.Plan], Switch] | None,
    recent: Sequence[Recent],
) -> str:
    """Why a change that passed the hysteresis is still held ('' when it is not):
    it returns to a recent plan (flapping), or its gain does not pay for moving the
    live sessions' caches."""
    target = layout(chosen)
    for old in recent:
        if old.layout == target:
            return (
                f"flapping: the best plan is the plan of epoch {old.epoch}, in force "
                f"{old.cycles_ago:.0f} cycle(s) ago; held"
            )
    if switch is None or math.isinf(current_phi):
        return ""
    cost = switch(chosen)
    gain = current_phi - chosen.predicted.phi
    if cost.cost > 0 and gain <= cost.cost:
        return (
            f"change cost: predicted Phi gain {gain:.4g} per request does not pay for the change "
            f"({cost.cost:.4g} per request: {cost.why}); held"
        )
    return ""


async def decide(
    triggers: list[common_pb2.Trigger],
    current: common_pb2.Plan,
    current_phi: float,
    migration: Callable[[], Awaitable[Candidate]],
    resplit: Callable[[], Awaitable[Candidate]],
    thresholds: common_pb2.Thresholds,
    hysteresis: float,
    measured: Measured,
    last_change: float | None,
    now: float,
    bounds: Sequence[tuple[str, float]] | None = None,
    switch: Callable[[common_pb2.Plan], Switch] | None = None,
    recent: Sequence[Recent] = (),
) -> Decision:
    """Alg. 1's decision for one cycle. ``current_phi`` is inf when the current plan is
    infeasible now; ``migration`` and ``resplit`` ask the splitter, and resplit is only
    asked when migration cannot meet every constraint. ``bounds``: the latency signals
    the constraint check compares; ``switch``: the cost of changing to a plan;
    ``recent``: plans in force within the last few cycles (flapping)."""
    if not triggers:
        return Decision(Outcome.KEEP, None, [], "no trigger fired")
    candidates = [await migration()]
    if candidates[0].plan is not None:
        broken = violations(candidates[0].plan, thresholds, measured, bounds)
        why_resplit = "migration cannot meet " + "; ".join(broken) if broken else ""
    else:
        why_resplit = f"no feasible migration ({candidates[0].infeasible})"
    if why_resplit:
        candidates.append(await resplit())
    best = _best(candidates)
    prefix = f"{why_resplit}; " if why_resplit else ""
    if best is None:
        reasons = "; ".join(f"{c.mode}: {c.infeasible}" for c in candidates)
        return Decision(Outcome.KEEP, None, candidates, f"no feasible plan ({reasons})")
    assert best.plan is not None
    outcome = change_of(current, best.plan)
    if outcome is Outcome.KEEP:
        return Decision(Outcome.KEEP, None, candidates, f"{prefix}the current plan is already the best")
    node_down = any(t.name == NODE_DOWN for t in triggers)
    if node_down:
        return Decision(outcome, best.plan, candidates, f"{prefix}a node of the plan is down: replace it now")
    enough, why = _gain_suffices(best, current_phi, hysteresis)
    if not enough:
        return Decision(Outcome.KEEP, None, candidates, prefix + why)
    held = _held(best.plan, current_phi, switch, recent)
    if held:
        return Decision(Outcome.KEEP, None, candidates, prefix + held)
    since = now - last_change if last_change is not None else math.inf
    if since < thresholds.t_cool_s:
        return Decision(
            Outcome.KEEP,
            None,
            candidates,
            f"{prefix}cool-down: {since:.1f} s since the last change < T_cool {thresholds.t_cool_s:g} s",
        )
    return Decision(outcome, best.plan, candidates, prefix + why)
