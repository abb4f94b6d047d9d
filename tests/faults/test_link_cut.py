"""A link cut while 8 sessions generate (emulated nodes, root): the node holding
the middle segment loses its link (its veth goes down), the sessions stall for
the step timeout and report it, the orchestrator's check of it times out and the
loop re-plans without it at once (or once its heartbeat expires), the sessions replay
onto the new plan with the tokens of a fault-free run; restoring the link
brings the node back without moving the plan again."""

from __future__ import annotations

import grpc
import pytest
from support import emulated_stack, quiet_window, wait_for
from traffic import Traffic, check, deploy, nodes_of, plan_of, sessions_and_expected

from resplit.models.tiny import build_tiny
from resplit.rpc.probe import grpc_health

pytestmark = pytest.mark.integration


def test_a_cut_link_costs_a_stall_not_a_token(tmp_path):
    model_dir = build_tiny("llama", tmp_path / "llama", num_hidden_layers=8)
    prompts, expected = sessions_and_expected(model_dir)
    with emulated_stack(("n0", "n1", "n2")) as (testbed, orchestrator):
        orch = orchestrator.address
        deploy(orch, "f-cut", model_dir, [(0, 3, "n0"), (3, 7, "n2"), (7, 10, "n0")])
        traffic = Traffic(orch, "f-cut", prompts).start()
        traffic.at_gate()
        n2 = testbed.nodes["n2"]
        n2.cut()
        traffic.release()
        try:
            traffic.join()
        finally:
            n2.restore()
        check(traffic, expected, "the link of the node holding S2 cut")
        plan = plan_of(orch, "f-cut")
        assert "n2" not in nodes_of(plan)
        wait_for(
            lambda: grpc_health(f"{n2.address}:50070", timeout_s=1) == "SERVING", 20, 0.2, what="n2 back"
        )
        wait_for(lambda: _deployable_on(orch, model_dir, "n2"), 20, 0.5, what="n2 registered and up again")
        quiet_window(orchestrator, 2)
        assert plan_of(orch, "f-cut").epoch == plan.epoch, "the plan moved again when n2 came back"


def _deployable_on(orch: str, model_dir, node: str) -> bool:
    """The orchestrator accepts a plan with S2 on ``node``: it is registered and up."""
    try:
        deploy(orch, "f-cut-back", model_dir, [(0, 3, "n0"), (3, 7, node), (7, 10, "n0")])
    except grpc.RpcError:
        return False
    return True
