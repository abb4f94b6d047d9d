"""Brute force: score every assignment of units (or fixed segments) to nodes.

The test oracle for the exact solver. It shares only the arrays of
``instance.py`` and the vectorised scorer with it - no DP, no MILP, no
pruning beyond "this unit may never sit on that node" - so it finds the
optimum by definition, for problems small enough to enumerate.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .instance import REL_TOL, Instance, score
from .problem import Mode, Objective

#: Refuse problems with more assignments than this (it would take minutes).
MAX_ASSIGNMENTS = 200_000
CHUNK = 20_000


class TooLarge(ValueError):
    """The problem has too many plans to enumerate; the message says how many."""


def brute_force(inst: Instance) -> np.ndarray | None:
    n = inst.n
    pieces = inst.fixed_segments() if inst.mode is Mode.PLACEMENT_ONLY else [(i, i + 1) for i in range(n)]
    choices = [
        [
            k
            for k in range(inst.num_nodes)
            if inst.allowed[a:b, k].all() and inst.mem[a:b].sum() <= inst.capacity[k]
        ]
        for a, b in pieces
    ]
    total = math.prod(len(c) for c in choices)
    if total > MAX_ASSIGNMENTS:
        raise TooLarge(
            f"BRUTE_FORCE enumerates at most {MAX_ASSIGNMENTS} assignments; this problem has {total:.3g} "
            "(use EXACT)"
        )
    if total == 0:
        return None
    widths = np.array([b - a for a, b in pieces])
    assigns, phis, bottlenecks = [], [], []
    product = itertools.product(*choices)
    while True:
        chunk = list(itertools.islice(product, CHUNK))
        if not chunk:
            break
        units = np.repeat(np.array(chunk, dtype=int), widths, axis=1)
        scores = score(inst, units)
        keep = scores.feasible
        assigns.append(units[keep])
        phis.append(scores.phi[keep])
        bottlenecks.append(scores.bottleneck[keep])
    phi, bottleneck = np.concatenate(phis), np.concatenate(bottlenecks)
    if phi.size == 0:
        return None
    candidates = np.concatenate(assigns)
    if inst.problem.policy.objective is Objective.THROUGHPUT:
        best_b = bottleneck.min()
        phi = np.where(bottleneck <= best_b * (1 + REL_TOL), phi, np.inf)
    return candidates[int(np.argmin(phi))]
