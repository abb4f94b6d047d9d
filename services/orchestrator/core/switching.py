"""What a plan change costs: the live sessions' KV caches that move, amortised.

Why: the splitter's Phi is per request, but a change is paid once, by every
session open at that moment: each pulls the KV cache of its moved units from
the old hop (docs/CONTROL_PLANE.md) and stalls for it. A gain of a few ms per
request that moves megabytes of cache over a slow link is churn, not adaptation.

* **bytes that move**: per segment of the plan in force, the tokens its live
  sessions hold (``NodeMetrics.segment_kv_tokens``, reported by the worker that
  hosts it) x the KV bytes per token of each of its units that the new plan puts
  on another node, per (old node, new node) link;
* **stall**: those bytes over the link's measured bandwidth, summed over links
  (the sessions' pulls share them), in ms of request time;
* **amortised**: the stall in Phi's units (x alpha) divided by the requests
  expected while the new plan holds (the measured request rate x the horizon,
  T_cool and at least one cycle; at least one request).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from resplit.v1 import common_pb2, splitter_pb2

from .decide import Switch

MBIT = 1e6 / 8


def segment_key(deployment: str, start: int, end: int) -> str:
    """How a worker keys a hosted segment's live KV tokens in its metrics."""
    return f"{deployment}/{start}-{end}"


def live_tokens(env: common_pb2.Environment, deployment: str, plan: common_pb2.Plan) -> dict[int, int]:
    """Segment index of ``plan`` -> KV tokens its live sessions hold (reported by its node)."""
    metrics = {m.node_id: m for m in env.metrics}
    found = {}
    for index, seg in enumerate(plan.segments):
        report = metrics.get(seg.node_id)
        if report is not None:
            found[index] = report.segment_kv_tokens.get(
                segment_key(deployment, seg.units.start, seg.units.end), 0
            )
    return found


def moved_bytes(
    current: common_pb2.Plan,
    chosen: common_pb2.Plan,
    tokens: Mapping[int, int],
    units: Sequence[splitter_pb2.UnitProfile],
) -> dict[tuple[str, str], int]:
    """(old node, new node) -> KV bytes the live sessions pull over that link."""
    owner = {}
    for seg in chosen.segments:
        for unit in range(seg.units.start, seg.units.end):
            owner[unit] = seg.node_id
    moved: dict[tuple[str, str], int] = {}
    for index, seg in enumerate(current.segments):
        held = tokens.get(index, 0)
        for unit in range(seg.units.start, seg.units.end):
            target = owner.get(unit, seg.node_id)
            if held and target != seg.node_id and unit < len(units):
                key = (seg.node_id, target)
                moved[key] = moved.get(key, 0) + held * units[unit].kv_bytes_per_token
    return moved


def switch_cost(
    moved: Mapping[tuple[str, str], int],
    bandwidth_mbps: Mapping[tuple[str, str], float],
    alpha: float,
    requests_ahead: float,
) -> Switch:
    """The amortised cost of moving ``moved`` (see the module's docstring)."""
    total = sum(moved.values())
    if not total:
        return Switch()
    stall_ms = 0.0
    for link, size in moved.items():
        mbps = bandwidth_mbps.get(link) or 1000.0  # not measured yet: as the problem assumes
        stall_ms += size / (mbps * MBIT) * 1e3
    ahead = max(requests_ahead, 1.0)
    return Switch(
        alpha * stall_ms / ahead,
        f"{total / 1e6:.3g} MB of live KV cache, {stall_ms:.4g} ms of stall "
        f"over {ahead:.3g} request(s) ahead",
    )
