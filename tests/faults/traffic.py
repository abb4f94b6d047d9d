"""Sessions under fault: 8 paced sessions generating in the background, and the
checks every fault test makes (same tokens as a fault-free run, the stall)."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from dataclasses import dataclass, field

import grpc
import torch
from support import deploy_spec, wait_for
from transformers import AutoModelForCausalLM

from resplit.rpc.channels import sync_channel
from resplit.rpc.security import Security
from resplit.sdk import AsyncClient
from resplit.sdk.exchange import GenerateExchange, Sampling
from resplit.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc
from services.orchestrator.core.policy import default_policy

SESSIONS, NEW_TOKENS = 8, 60


@dataclass
class Traffic:
    """8 paced sessions in a background thread, each recording its tokens and gaps.

    Every session pauses after ``gate_at`` tokens until ``release()``: the fault is
    injected while all of them are mid-generation, whatever the machine's load.
    The pause is not counted as a gap."""

    orchestrator: str
    deployment: str
    prompts: list[list[int]]
    pace_s: float = 0.03
    new_tokens: int = 30
    tokens: list[list[int]] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    exchanges: list[GenerateExchange] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    produced: int = 0
    gate_at: int = 8
    #: The sessions' client options: the fault suite's tightened ones unless given
    #: (tests/faults/test_defaults.py passes none: a user's defaults).
    client_options: dict = field(default_factory=lambda: {"step_timeout_s": 3.0, "recoveries": 20})
    #: Client credentials (None: the process default, plaintext in the tests).
    security: Security | None = None
    _gate: threading.Event = field(default_factory=threading.Event)
    _waiting: int = 0

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()))
        self._thread.start()
        return self

    async def _main(self) -> None:
        async with AsyncClient(self.orchestrator, security=self.security, **self.client_options) as client:
            route = await client.route(self.deployment)
            self.exchanges = [
                GenerateExchange(route, p, Sampling(max_new_tokens=self.new_tokens), server_loop=False)
                for p in self.prompts
            ]
            self.tokens = [[] for _ in self.prompts]
            await asyncio.gather(*(self._session(client, i) for i in range(len(self.prompts))))

    async def _session(self, client: AsyncClient, i: int) -> None:
        try:
            last = time.perf_counter()
            async for token in client._run(self.exchanges[i]):
                now = time.perf_counter()
                self.gaps.append(now - last)
                last = now
                self.tokens[i].append(token.token_id)
                self.produced += 1
                await asyncio.sleep(self.pace_s)
                if len(self.tokens[i]) == self.gate_at:
                    self._waiting += 1
                    await asyncio.to_thread(self._gate.wait)
                last = time.perf_counter()
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)

    def at_gate(self) -> Traffic:
        """Wait until every session has paused at the gate."""
        wait_for(lambda: self._waiting == len(self.prompts), 60, 0.02, what="every session at the gate")
        return self

    def release(self) -> None:
        self._gate.set()

    def join(self) -> Traffic:
        self._thread.join(180)
        assert not self._thread.is_alive(), "the sessions did not finish"
        return self

    def stall_ms(self) -> tuple[float, float]:
        """(longest gap between two tokens, median gap), in ms."""
        return max(self.gaps) * 1e3, statistics.median(self.gaps) * 1e3


def deploy(orchestrator: str, name: str, model_dir, segments, t_cool_s: float = 30) -> None:
    """Deploy with a fast loop; ``segments`` are (start, end, node id) triples."""
    policy = default_policy()
    policy.interval_s = 0.5
    policy.thresholds.t_cool_s = t_cool_s
    policy.thresholds.l_max_ms = 1e9  # faults, not latency, drive these plans
    spec = common_pb2.Deployment(name=name, model_dir=str(model_dir), policy=policy)
    deploy_spec(orchestrator, spec, segments)


def undeploy_all(orchestrator: str) -> None:
    """Undeploy every deployment: the next test's plans are planned alone. The fault
    bed declares memory for one deployment (MEMORY in test_faults.py); tests that left
    theirs deployed filled the trusted nodes, and a later test's loop then found no
    feasible plan around its stopped worker and kept the stalled one."""
    with sync_channel(orchestrator) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        listed = stub.ListDeployments(orchestrator_pb2.ListDeploymentsRequest(), timeout=10)
        for deployment in listed.deployments:
            stub.Undeploy(orchestrator_pb2.UndeployRequest(deployment=deployment.name), timeout=60)


def plan_of(orchestrator: str, name: str) -> common_pb2.Plan:
    with sync_channel(orchestrator) as channel:
        return orchestrator_pb2_grpc.OrchestratorServiceStub(channel).GetPlan(
            orchestrator_pb2.GetPlanRequest(deployment=name), timeout=10
        )


def routable(orchestrator: str, name: str) -> bool:
    with sync_channel(orchestrator) as channel:
        try:
            orchestrator_pb2_grpc.OrchestratorServiceStub(channel).GetRoute(
                orchestrator_pb2.GetRouteRequest(deployment=name), timeout=5
            )
        except grpc.RpcError:
            return False
    return True


def nodes_of(plan: common_pb2.Plan) -> set[str]:
    return {s.node_id for s in plan.segments}


def sessions_and_expected(model_dir) -> tuple[list[list[int]], list[list[int]]]:
    """The sessions' prompts, and each one's greedy tokens from the whole model (transformers)."""
    whole = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompts = [[5 + i, 40 + 3 * i, 7, 90 + i] for i in range(SESSIONS)]
    expected = [
        whole.generate(
            torch.tensor([p]), max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=3
        )[0, len(p) :].tolist()
        for p in prompts
    ]
    return prompts, expected


def check(traffic: Traffic, expected: list[list[int]], fault: str) -> None:
    assert not traffic.errors, traffic.errors
    for got, want in zip(traffic.tokens, expected, strict=True):
        assert got == want[: traffic.new_tokens]
    stall, median = traffic.stall_ms()
    replays = sum(e.replays for e in traffic.exchanges)
    print(f"\nFAULT {fault}: stall {stall:.0f} ms (median gap {median:.1f} ms), {replays} session replays")
