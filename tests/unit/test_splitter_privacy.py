"""Hard privacy holds on 10,000 random instances, whichever solver and mode.

With ``policy.soft_privacy`` false, no plan the splitter returns may place a
privacy-critical unit (the embedding, the ``private_depth`` blocks after it,
and the head; ``resplit.core.privacy.privacy_critical``, the same set the
broadcaster and the workers enforce) on an untrusted node. An instance that
cannot be served that way is refused (:class:`Infeasible`), never answered
with a violating plan. The instances are small (3-6 units, 1-3 nodes) so the
10,000 draws run in a few seconds on one core.
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from resplit.core.privacy import privacy_critical
from services.splitter.core.problem import (
    Link,
    Mode,
    Model,
    Node,
    Objective,
    Plan,
    Policy,
    Problem,
    Segment,
    SolverKind,
    Unit,
    Workload,
)
from services.splitter.core.solve import Infeasible, solve

CASES = [(kind, mode) for kind in (SolverKind.EXACT, SolverKind.GREEDY) for mode in Mode]
# 2,500 examples x 4 instances (one per solver and mode) = 10,000 instances. Hypothesis draws
# one seed per example; a seed's four instances differ (the seed is mixed with the case).
SETTINGS = settings(
    max_examples=2500,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MIB = 2**20


def build(seed: int, mode: Mode) -> Problem:
    """One instance from ``seed``: hard privacy, random trust (sometimes no trusted node at all,
    sometimes trust only by ``policy.trusted_node_ids``), random memory (sometimes too little on
    the trusted nodes). Hypothesis draws only the seed: drawing every field through it would
    cost more than the solve."""
    rng = random.Random(seed)
    count = rng.randint(1, 3)
    n = rng.randint(3, 6)
    depth = rng.choice([0, 0, 1, rng.randint(0, n - 2)])
    units = tuple(
        Unit(
            index=i,
            kind="embedding" if i == 0 else "head" if i == n - 1 else "block",
            param_bytes=rng.randint(1, 16) * MIB,
            kv_bytes_per_token=rng.choice([0, 1024]),
            flops_per_token=rng.choice([1e6, 1e8, 1e9]),
            activation_bytes_per_token=rng.choice([2048, 65536]),
        )
        for i in range(n)
    )
    total = sum(u.param_bytes for u in units)
    nodes = tuple(
        Node(
            node_id=f"n{j}",
            memory_bytes=int(total * rng.choice([0.5, 1.0, 2.0])),
            # Untrusted nodes are often the fastest: the solver would like to use them.
            flops_per_s=rng.choice([1e10, 1e12, 1e14]),
            utilization=rng.choice([0.0, 0.5]),
            trusted=rng.random() < (0.75 if j == 0 else 0.2),
        )
        for j in range(count)
    )
    by_name = frozenset(f"n{j}" for j in range(count) if rng.randint(0, 5) == 0)
    links = tuple(
        Link(f"n{a}", f"n{b}", rng.choice([10.0, 10_000.0]), rng.choice([0.0, 20.0]))
        for a, b in itertools.permutations(range(count), 2)
        if rng.randint(0, 9) < 9
    )
    current = None
    if mode is Mode.PLACEMENT_ONLY or rng.random() < 0.5:
        cuts = sorted(rng.sample(range(1, n), rng.randint(0, min(3, n - 1))))
        points = [0, *cuts, n]
        current = Plan(
            tuple(Segment(a, b, f"n{rng.randrange(count)}") for a, b in itertools.pairwise(points))
        )
    policy = Policy(
        beta=rng.choice([0.0, 50.0]),
        # A high exposure cost must not matter either way: privacy is a constraint here.
        gamma=rng.choice([0.0, 1e6]),
        private_depth=depth,
        objective=Objective.THROUGHPUT if rng.random() < 0.2 else Objective.LATENCY,
        soft_privacy=False,
        migration_weight=rng.choice([0.0, 20.0]),
        trusted_node_ids=by_name,
    )
    work = Workload(prompt_tokens=rng.choice([1, 64]), generate_tokens=rng.choice([0, 8]))
    return Problem(Model("random", "llama", "float16", units), nodes, links, policy, work, current)


def _check(problem: Problem, mode: Mode, kind: SolverKind) -> None:
    trusted = {x.node_id for x in problem.nodes if x.trusted} | problem.policy.trusted_node_ids
    critical = privacy_critical(problem.num_units, problem.policy.private_depth)
    try:
        solution = solve(problem, mode, kind)
    except Infeasible:
        event(f"{kind.value}/{mode.value}: refused")
        return
    event(f"{kind.value}/{mode.value}: solved")
    # An instance with no trusted node at all can never be served under hard privacy.
    assert trusted, "a plan was returned although no node is trusted"
    covered = []
    for seg in solution.plan.segments:
        covered += range(seg.start, seg.end)
        leaked = sorted(set(range(seg.start, seg.end)) & critical)
        assert not leaked or seg.node_id in trusted, (
            f"{kind.value}/{mode.value}: units {leaked} on untrusted {seg.node_id}"
        )
    assert covered == list(range(problem.num_units))
    if mode is Mode.PLACEMENT_ONLY:
        assert solution.plan.boundaries() == problem.current.boundaries()


@SETTINGS
@given(st.integers(0, 2**32 - 1))
def test_hard_privacy_is_never_broken(seed):
    for i, (kind, mode) in enumerate(CASES):
        _check(build(seed * len(CASES) + i, mode), mode, kind)


def test_no_trusted_node_is_refused_by_every_solver():
    """The plainest infeasible case: every node untrusted, hard privacy."""
    units = tuple(Unit(i, "block", MIB, 0, 1e6, 2048) for i in range(4))
    nodes = (Node("a", 10 * MIB, 1e12), Node("b", 10 * MIB, 1e14))
    problem = Problem(
        Model("m", "llama", "float16", units),
        nodes,
        (Link("a", "b", 100.0, 1.0), Link("b", "a", 100.0, 1.0)),
        Policy(private_depth=1),
        Workload(),
        Plan((Segment(0, 2, "a"), Segment(2, 4, "b"))),
    )
    for kind, mode in itertools.product([SolverKind.EXACT, SolverKind.GREEDY], list(Mode)):
        with pytest.raises(Infeasible):
            solve(problem, mode, kind)
