"""What the blocking and asyncio clients share: their options and their decisions.

The two clients differ only in how they wait (a thread blocks, a coroutine
awaits). The options, when to look for a newer route, whether a failure is
survived and how long to back off before replaying are the same decisions,
written once here; each client keeps only its I/O.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Sequence

import grpc

from ..rpc.security import Security
from ..v1 import common_pb2, orchestrator_pb2
from .exchange import GenerateExchange, Sampling
from .requests import (
    SessionFailed,
    backoff_s,
    describe,
    overload_hint_ms,
    overload_wait_s,
    recoverable,
    suspects,
)
from .throttle import Throttle, Throttled

DEFAULT_ORCHESTRATOR = "127.0.0.1:50052"
#: A session asks the orchestrator for its route at most this often while a move is announced.
ROUTE_CHECK_INTERVAL_S = 1.0
#: The first reply of a stream (a prefill, or a replay of a session's history) may take
#: this long before it counts as a lost hop; later steps get ``step_timeout_s``.
PREFILL_TIMEOUT_S = 120.0
#: How long a session waits for the orchestrator's verdict on a reported hop loss (it checks
#: each node with a 1 s Ping deadline by default) before it goes on recovering anyway.
REPORT_TIMEOUT_S = 3.0
#: How often a recovering session asks for a route while the one it has leads through a
#: node found down (the orchestrator is re-planning).
ROUTE_POLL_S = 0.1
#: How long a session waits for a route without the nodes found down before it takes
#: whatever route the orchestrator gives (such a node may have come back meanwhile).
DOWN_ROUTE_WAIT_S = 15.0
#: How often a session waiting for such a route asks the orchestrator again whether those
#: nodes are still down: one that answers again (a worker SIGSTOPped for a few seconds) ends
#: the wait, when no new plan comes because the old one is whole again (the chaos soak's
#: sessions waited the whole 15 s there: an 18-s stall).
DOWN_RECHECK_S = 1.0


def down_in(reply: orchestrator_pb2.ReportFailureResponse) -> set[str]:
    """The nodes the orchestrator found down, from its answer to a report."""
    return {v.node_id for v in reply.verdicts if v.state == orchestrator_pb2.FailureVerdict.STATE_DOWN}


def still_down(down: set[str], reply: orchestrator_pb2.ReportFailureResponse) -> set[str]:
    """The nodes of ``down`` that the orchestrator's new answer does not find up again (no
    verdict, or one other than up, keeps a node down: a report it did not check proves nothing)."""
    up = {v.node_id for v in reply.verdicts if v.state == orchestrator_pb2.FailureVerdict.STATE_UP}
    return down - up


def _uses(route: common_pb2.Route, nodes: set[str]) -> bool:
    return any(hop.node_id in nodes for hop in route.hops)


class ClientBase:
    """Options and decisions of :class:`resplit.Client` and :class:`resplit.AsyncClient`."""

    def __init__(
        self,
        orchestrator: str = DEFAULT_ORCHESTRATOR,
        *,
        timeout_s: float = 300.0,
        security: Security | None = None,
        monitor: str = "",
        recoveries: int | None = None,
        move_cache: bool = True,
        step_timeout_s: float = 10.0,
        server_loop: bool = True,
        retry_overload: bool = True,
        throttle_k: float = 2.0,
    ) -> None:
        """``monitor``: host:port of the monitor; when set, each finished request's
        end-to-end latency is reported to it (fire and forget, never an error here).
        ``timeout_s``: a session's deadline; it keeps recovering from lost hops (with
        capped, jittered backoff) until then.
        ``recoveries``: at most this many recoveries per session as well (None: only the
        deadline bounds them).
        ``move_cache``: on a route change, move the session's KV cache to the new hops
        (default); False rebuilds it there by replaying the token history instead.
        ``step_timeout_s``: a decode step unanswered this long counts as a lost hop (0: wait
        forever); the first reply of a stream (a prefill, or a replay after a recovery)
        may take ``prefill_timeout_s``.
        ``server_loop``: the first hop feeds each token back as the next step itself (one
        round trip less per token); False sends every step from here, so a consumer that
        stops reading also stops the session's compute.
        ``retry_overload``: a call refused RESOURCE_EXHAUSTED with a retry hint (a service over
        its RPC caps, a worker full of sessions or KV budget) is tried again after the hint,
        with jittered, capped backoff, until ``timeout_s``; False: the caller sees it at once
        (the gateway, which answers 429 and lets its own client retry).
        ``throttle_k``: while a first hop refuses most new sessions as full, this client
        refuses part of its new ones itself, at once, keeping about ``throttle_k`` sessions sent
        per session admitted (sdk/throttle.py; a live session's move or replay never is);
        0: every session is sent."""
        self.orchestrator = orchestrator
        #: TLS material and token of this client; None: the process default
        #: (RESPLIT_TLS_* / RESPLIT_TOKEN*, or a loaded local stack's).
        self.security = security
        self.timeout_s = timeout_s
        self.monitor = monitor
        self.recoveries = recoveries
        self.move_cache = move_cache
        self.step_timeout_s = step_timeout_s
        self.prefill_timeout_s = max(PREFILL_TIMEOUT_S, step_timeout_s)
        #: Who reports a lost hop to the orchestrator (its log names it; never trusted).
        self.reporter = f"sdk {socket.gethostname()} pid {os.getpid()}"
        self.server_loop = server_loop
        self.retry_overload = retry_overload
        self.throttle_k = throttle_k
        #: First hop address -> what it admitted and refused lately (sdk/throttle.py).
        self._throttles: dict[str, Throttle] = {}
        self._route_checked = 0.0
        #: Deployments by name, as first listed (the tokenizer's model directory).
        self._deployments: dict[str, common_pb2.Deployment] = {}
        #: Latency reports still going out: grpc futures, or asyncio tasks.
        self._reports: set = set()
        #: One channel per address (grpc.Channel, or grpc.aio.Channel).
        self._channels: dict = {}

    def _overload_wait_s(self, error: grpc.RpcError, attempt: int, started: float) -> float | None:
        """How long to wait before trying a control-plane call again that ``error`` refused as
        overloaded, or None: not an overload, or the client's ``timeout_s`` would pass."""
        hint_ms = overload_hint_ms(error) if self.retry_overload else None
        if hint_ms is None:
            return None
        wait = overload_wait_s(attempt, hint_ms, jitter=random.uniform(1.0, 2.0))
        return None if time.monotonic() - started + wait >= self.timeout_s else wait

    def _throttle_check(self, address: str, exchange) -> None:
        """Raise :class:`Throttled` when this client refuses ``exchange``'s session to
        ``address`` itself. Only a new one: a live session's move or replay never is."""
        if self.throttle_k <= 0 or exchange.admitted:
            return
        throttle = self._throttles.setdefault(address, Throttle(self.throttle_k))
        now = time.monotonic()
        if not throttle.admits(now, random.random()):
            raise Throttled(address, throttle, now)

    def _throttle_outcome(self, address: str, error: grpc.RpcError | None) -> None:
        """What ``address`` decided on a session it was sent: admitted (``error`` None, a
        first reply came), or refused as full; any other failure is not overload's."""
        throttle = self._throttles.get(address)
        if throttle is None or isinstance(error, Throttled):
            return
        if error is None:
            throttle.admitted(time.monotonic())
        elif (hint_ms := overload_hint_ms(error)) is not None:
            throttle.refused(time.monotonic(), hint_ms)

    def _pushed_route(self, exchange) -> common_pb2.Route | None:
        """The newer route the first hop sent with the last token, if any: the session moves
        there without asking the orchestrator."""
        pushed = getattr(exchange, "pushed_route", None)
        if pushed is None or pushed.epoch <= exchange.route.epoch or not pushed.hops:
            return None
        if pushed.deployment and pushed.deployment != exchange.route.deployment:
            return None
        return pushed

    def _cached_deployment(self, name: str) -> common_pb2.Deployment | None:
        return self._deployments.get(name)

    def _route_check_due(self) -> bool:
        """Whether to ask for the route now: a failed ask waits a while before the next,
        so a session whose tokens announce a move does not hammer an absent orchestrator."""
        return time.monotonic() - self._route_checked >= ROUTE_CHECK_INTERVAL_S

    def _route_answer(
        self, route: common_pb2.Route, latest: common_pb2.Route | None
    ) -> common_pb2.Route | None:
        """The route to move to: ``latest`` if its epoch is newer, else None (not yet, or,
        with ``latest`` None, the orchestrator unreachable: ask again a while later)."""
        if latest is None:
            self._route_checked = time.monotonic()
            return None
        self._route_checked = 0.0
        return latest if latest.epoch > route.epoch else None

    def _recovery_wait_s(self, exchange, attempt: int, error: grpc.RpcError) -> float:
        """How long to back off before replaying after ``error``. A failure that is not
        recoverable is re-raised as it is; a recoverable one ends the session with
        :class:`SessionFailed` once the session's deadline (``timeout_s`` from its start)
        would pass during the wait, or past ``recoveries``. Records why, in
        ``exchange.recovered_from``."""
        hint_ms = overload_hint_ms(error) if self.retry_overload else None
        if hint_ms is None and not recoverable(error):
            raise error
        elapsed = time.monotonic() - exchange.started
        if hint_ms is not None:  # overloaded: the same route, again after the hint (jittered)
            wait = overload_wait_s(attempt, hint_ms, jitter=random.uniform(1.0, 2.0))
        else:
            wait = backoff_s(attempt, jitter=random.uniform(0.5, 1.0))
        if self.recoveries is not None and attempt > self.recoveries:
            why = f"recoveries={self.recoveries} used up"
            raise SessionFailed(error, exchange.recovered_from, elapsed, why)
        if elapsed + wait >= self.timeout_s:
            why = f"its deadline (timeout_s={self.timeout_s:g}) passed"
            raise SessionFailed(error, exchange.recovered_from, elapsed, why)
        exchange.recovered_from.append(describe(error))
        return wait

    def _recovery_route(
        self,
        exchange,
        latest: common_pb2.Route | grpc.RpcError,
        down: set[str],
        error: grpc.RpcError,
        since: float,
    ) -> common_pb2.Route | None:
        """The route to replay on after a lost hop, or None to ask again in ROUTE_POLL_S.

        ``latest`` is the orchestrator's answer (a route, or how GetRoute failed), ``down`` the
        nodes it found down when the loss was reported, ``since`` when this recovery began
        (time.monotonic()). A route through such a node is
        not taken while the orchestrator re-plans (for up to DOWN_ROUTE_WAIT_S); with no
        node known down, an orchestrator that does not answer leaves the route the
        session had (the data plane may still serve). Past the session's deadline, or
        when the orchestrator no longer knows the deployment: :class:`SessionFailed`."""
        elapsed = time.monotonic() - exchange.started
        if isinstance(latest, grpc.RpcError):
            code = latest.code() if hasattr(latest, "code") else None
            if code == grpc.StatusCode.NOT_FOUND:
                why = "the orchestrator no longer knows the deployment"
                raise SessionFailed(latest, exchange.recovered_from, elapsed, why)
            latest = None
        if elapsed >= self.timeout_s:
            why = f"no route without {sorted(down)} before its deadline (timeout_s={self.timeout_s:g})"
            raise SessionFailed(error, exchange.recovered_from, elapsed, why)
        if down and time.monotonic() - since < DOWN_ROUTE_WAIT_S and (latest is None or _uses(latest, down)):
            return None
        return latest if latest is not None else exchange.route

    def _recheck_report(self, deployment: str, down: set[str]) -> orchestrator_pb2.ReportFailureRequest:
        """Asks the orchestrator again about the nodes a recovering session waits to see
        routed around (DOWN_RECHECK_S)."""
        return orchestrator_pb2.ReportFailureRequest(
            node_ids=sorted(down),
            deployment=deployment,
            reporter=self.reporter,
            reason="still waiting for a route without them",
        )

    def _failure_report(
        self, route: common_pb2.Route, error: grpc.RpcError
    ) -> orchestrator_pb2.ReportFailureRequest | None:
        """What to tell the orchestrator after ``error``: the route's nodes when a hop was
        lost, so it checks them and re-plans at once (None: nothing to report)."""
        nodes = suspects(route, error)
        if not nodes:
            return None
        return orchestrator_pb2.ReportFailureRequest(
            node_ids=nodes, deployment=route.deployment, reporter=self.reporter, reason=describe(error)
        )

    def _generate_exchange(
        self,
        prompt_ids: Sequence[int],
        route: common_pb2.Route,
        sampling: Sampling | None,
        return_logits: bool,
    ) -> GenerateExchange:
        return GenerateExchange(
            route, list(prompt_ids), sampling or Sampling(), return_logits, server_loop=self.server_loop
        )
