"""What the blocking and asyncio clients share: their options and their decisions.

The two clients differ only in how they wait (a thread blocks, a coroutine
awaits). The options, when to look for a newer route, whether a failure is
survived and how long to back off before replaying are the same decisions,
written once here; each client keeps only its I/O.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import grpc

from ..rpc.security import Security
from ..v1 import common_pb2
from .exchange import GenerateExchange, Sampling
from .requests import backoff_s, describe, recoverable

DEFAULT_ORCHESTRATOR = "127.0.0.1:50052"
#: A session asks the orchestrator for its route at most this often while a move is announced.
ROUTE_CHECK_INTERVAL_S = 1.0


class ClientBase:
    """Options and decisions of :class:`resplit.Client` and :class:`resplit.AsyncClient`."""

    def __init__(
        self,
        orchestrator: str = DEFAULT_ORCHESTRATOR,
        *,
        timeout_s: float = 300.0,
        security: Security | None = None,
        monitor: str = "",
        recoveries: int = 8,
        move_cache: bool = True,
        step_timeout_s: float = 60.0,
        server_loop: bool = True,
    ) -> None:
        """``monitor``: host:port of the monitor; when set, each finished request's
        end-to-end latency is reported to it (fire and forget, never an error here).
        ``recoveries``: how many failures one session survives by replaying.
        ``move_cache``: on a route change, move the session's KV cache to the new hops
        (default); False rebuilds it there by replaying the token history instead.
        ``step_timeout_s``: a step unanswered this long counts as a lost hop (0: wait forever).
        ``server_loop``: the first hop feeds each token back as the next step itself (one
        round trip less per token); False sends every step from here, so a consumer that
        stops reading also stops the session's compute."""
        self.orchestrator = orchestrator
        #: TLS material and token of this client; None: the process default
        #: (RESPLIT_TLS_* / RESPLIT_TOKEN*, or a loaded local stack's).
        self.security = security
        self.timeout_s = timeout_s
        self.monitor = monitor
        self.recoveries = recoveries
        self.move_cache = move_cache
        self.step_timeout_s = step_timeout_s
        self.server_loop = server_loop
        self._route_checked = 0.0
        #: Latency reports still going out: grpc futures, or asyncio tasks.
        self._reports: set = set()
        #: One channel per address (grpc.Channel, or grpc.aio.Channel).
        self._channels: dict = {}

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
        """How long to back off before replaying after ``error``; re-raises it when the
        session does not survive it (not recoverable, or out of recoveries). Records why,
        in ``exchange.recovered_from``."""
        if attempt > self.recoveries or not recoverable(error):
            raise error
        exchange.recovered_from.append(describe(error))
        return backoff_s(attempt)

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
