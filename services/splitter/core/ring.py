"""The ring's closing link in the solvers: one chain problem per node of unit 0.

The head hop returns each step's result straight to the first hop (the ring,
docs/DATA_PLANE.md), so a plan pays the link from the head's node back to
unit 0's node. That term couples the first and the last unit, which a chain
DP over (cut, node) states cannot see. Fixing unit 0's node makes it a cost
of the head's node alone: each sub-problem is a plain chain again, folded
into the head unit's cost, and the best over the few nodes unit 0 may run on
(a trusted node, under hard privacy) is the optimum of the whole.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .instance import INF, Instance, score
from .problem import Objective


def by_first_node(inst: Instance) -> list[Instance]:
    """One instance per node unit 0 may run on, unit 0 pinned there and the closing link
    from each head node into the head's cost (its own ``ring_cost`` then zero)."""
    count = inst.num_nodes
    subs = []
    for first in np.flatnonzero(np.isfinite(inst.unit_cost[0])):
        unit_cost, allowed = inst.unit_cost.copy(), inst.allowed.copy()
        elsewhere = np.arange(count) != first
        unit_cost[0, elsewhere], allowed[0, elsewhere] = INF, False
        back = inst.ring_cost[:, first]
        unit_cost[-1] = unit_cost[-1] + back
        allowed[-1] &= np.isfinite(back)
        subs.append(
            dataclasses.replace(
                inst,
                unit_cost=unit_cost,
                allowed=allowed,
                ring_cost=np.zeros_like(inst.ring_cost),
                _prefix={},
            )
        )
    return subs or [inst]


def best(inst: Instance, assigns: list[np.ndarray | None]) -> int | None:
    """Index of the best of the sub-problems' answers, scored on the whole instance
    (None when none has one): the lowest Phi, or, for throughput, the smallest
    bottleneck and then the lowest Phi."""
    found = [(i, a) for i, a in enumerate(assigns) if a is not None]
    if not found:
        return None
    scores = score(inst, np.array([a for _, a in found]))
    if inst.problem.policy.objective is Objective.THROUGHPUT:
        keys = list(zip(scores.bottleneck, scores.phi, strict=True))
    else:
        keys = list(scores.phi)
    return found[min(range(len(found)), key=keys.__getitem__)][0]
