"""Several deployments on shared nodes: what the others hold, and what a cycle claimed.

Why: the splitter sees one deployment at a time. Planned alone, each would count a
node's whole memory and its idle time as its own, and two deployments could pick
the same free node in one cycle. The orchestrator's one control loop decides for
every deployment in turn (one coordinated decision per cycle, never two at once),
and before each decision it

* subtracts the memory every *other* deployment's plan in force holds on each node
  (weights plus one request's KV cache per unit, as the splitter counts its own);
* adds the load that a change committed earlier in the same cycle (or shortly
  before: the agents have not measured it yet) moves onto a node, and removes it
  from the nodes it left (``Claims``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from resplit.v1 import common_pb2, splitter_pb2


def plan_memory(
    plan: common_pb2.Plan, units: Sequence[splitter_pb2.UnitProfile], context_tokens: int
) -> dict[str, int]:
    """node -> bytes ``plan``'s segments hold there (weights + one request's KV cache)."""
    held: dict[str, int] = {}
    for seg in plan.segments:
        size = sum(
            units[u].param_bytes + units[u].kv_bytes_per_token * context_tokens
            for u in range(seg.units.start, min(seg.units.end, len(units)))
        )
        held[seg.node_id] = held.get(seg.node_id, 0) + size
    return held


def other_memory(
    plans: Iterable[tuple[common_pb2.Plan, Sequence[splitter_pb2.UnitProfile], int]],
) -> dict[str, int]:
    """node -> bytes the given (other deployments') plans hold there, summed."""
    total: dict[str, int] = {}
    for plan, units, context in plans:
        for node, size in plan_memory(plan, units, context).items():
            total[node] = total.get(node, 0) + size
    return total


def moved_load(
    previous: common_pb2.Plan, chosen: common_pb2.Plan, own: Mapping[str, float]
) -> dict[str, float]:
    """node -> load a change from ``previous`` to ``chosen`` moves there (+) or away (-):
    each old node's own load of the deployment (``own``) spread over the new nodes by
    the units each takes over."""
    owner = {u: s.node_id for s in chosen.segments for u in range(s.units.start, s.units.end)}
    delta: dict[str, float] = {}
    for node, load in own.items():
        units = [u for s in previous.segments if s.node_id == node for u in range(s.units.start, s.units.end)]
        if not units or load <= 0:
            continue
        for u in units:
            target = owner.get(u, node)
            if target != node:
                share = load / len(units)
                delta[node] = delta.get(node, 0.0) - share
                delta[target] = delta.get(target, 0.0) + share
    return delta


@dataclass
class Claims:
    """Load moved by recent changes, until the agents' metrics show it (``hold_s``)."""

    hold_s: float
    _entries: list[tuple[float, str, dict[str, float]]] = field(default_factory=list)

    def add(self, now: float, deployment: str, delta: Mapping[str, float]) -> None:
        if delta:
            self._entries.append((now + self.hold_s, deployment, dict(delta)))

    def for_others_of(self, deployment: str, now: float) -> dict[str, float]:
        """node -> load claimed there by *other* deployments' recent changes."""
        self._entries = [e for e in self._entries if e[0] > now]
        total: dict[str, float] = {}
        for _, owner, delta in self._entries:
            if owner != deployment:
                for node, load in delta.items():
                    total[node] = total.get(node, 0.0) + load
        return total
