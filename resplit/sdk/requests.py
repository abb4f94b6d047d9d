"""What both clients build before talking to the workers, written once.

The blocking and asyncio clients differ only in how they wait; choosing the
deployment, tokenizing the prompt, defaulting the stop tokens and shaping a
latency sample are the same decisions and live here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import grpc

from ..core.limits import RETRY_METADATA_KEY, hint_in
from ..v1 import common_pb2, monitor_pb2
from .exchange import Sampling

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def pick_deployment(listed: Iterable[common_pb2.Deployment], name: str) -> common_pb2.Deployment:
    """The deployment called ``name``, or a LookupError that lists the known ones."""
    known = list(listed)
    for deployment in known:
        if deployment.name == name:
            return deployment
    raise LookupError(f"deployment {name!r} is not deployed (known: {[d.name for d in known]})")


def prompt_and_sampling(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str | Sequence[int],
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    seed: int,
    stop_token_ids: Sequence[int] | None,
) -> tuple[list[int], Sampling]:
    """Token ids of ``prompt`` and the sampling; stop tokens default to the tokenizer's EOS."""
    ids = tokenizer(prompt)["input_ids"] if isinstance(prompt, str) else list(prompt)
    if stop_token_ids is None:
        stop_token_ids = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    return ids, Sampling(max_new_tokens, temperature, top_k, top_p, seed, stop_token_ids)


def latency_sample(deployment: str, started: float, tokens: int) -> monitor_pb2.LatencySample:
    """One end-to-end latency sample for the monitor's EWMA, measured from ``started``."""
    return monitor_pb2.LatencySample(
        deployment=deployment,
        latency_ms=(time.perf_counter() - started) * 1000,
        tokens=tokens,
        timestamp=time.time(),
    )


#: Failures a session survives by moving to a (possibly newer) route and replaying:
#: a hop gone or restarting, a stale epoch or released segment, a cache that could
#: not be moved. Anything else (bad input, limits, the client's own deadline) is the
#: caller's to see.
RECOVERABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)


def recoverable(exc: grpc.RpcError) -> bool:
    code = exc.code() if hasattr(exc, "code") else None
    return code in RECOVERABLE


def describe(exc: grpc.RpcError) -> str:
    """``CODE: details`` of a failed call, as a session records why it recovered."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{code.name if code is not None else 'UNKNOWN'}: {details}"


#: The longest wait between two recovery attempts: a re-plan after a reported failure
#: takes well under a second, and a session should take the new route soon after.
BACKOFF_CAP_S = 1.0


def backoff_s(attempt: int, jitter: float = 1.0) -> float:
    """Wait before recovery attempt ``attempt`` (1-based): 0.1 s doubling to
    ``BACKOFF_CAP_S``, times ``jitter`` (0.5-1: sessions that failed together do not
    retry in lockstep)."""
    return min(BACKOFF_CAP_S, 0.1 * 2 ** (attempt - 1)) * jitter


#: The longest wait between two tries of a call refused as overloaded, unless its hint asks more.
OVERLOAD_CAP_S = 2.0


def overload_hint_ms(exc: grpc.RpcError) -> int | None:
    """The retry hint (ms) of a RESOURCE_EXHAUSTED refusal that passes with time (a service
    over its RPC caps, a worker full of sessions), or None: any other failure, or a limit
    that retrying cannot fix (a session too long), which carries no hint. Read from trailing
    metadata ``retry-after-ms``, else from the message (a hint relayed across hops)."""
    code = exc.code() if hasattr(exc, "code") else None
    if code != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == RETRY_METADATA_KEY and str(value).isdigit():
            return int(value)
    return hint_in(exc.details() if hasattr(exc, "details") else str(exc))


def overload_wait_s(attempt: int, hint_ms: int, jitter: float = 1.0) -> float:
    """Wait before try ``attempt`` (1-based) after an overload refusal: the hint, or 50 ms
    doubling per attempt if longer, at most ``OVERLOAD_CAP_S`` (or the hint, if longer),
    times ``jitter`` (1-2: never before the hint; clients refused together spread out)."""
    hint_s = hint_ms / 1000
    return max(hint_s, min(OVERLOAD_CAP_S, 0.05 * 2 ** (attempt - 1))) * jitter


def suspects(route: common_pb2.Route, error: grpc.RpcError) -> list[str]:
    """The nodes to report after ``error`` on ``route``: every node of the route when
    a hop was lost (UNAVAILABLE: refused, gone, or silent past the step timeout) or does
    not host its part (NOT_FOUND: a worker that restarted empty while the plan still
    names it; the orchestrator then rolls the plan out again), none otherwise. The
    client cannot tell which hop behind the first one failed; the orchestrator checks
    each node itself, so naming a healthy one costs one Ping (and one GetStatus)."""
    code = error.code() if hasattr(error, "code") else None
    if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
        return []
    return list(dict.fromkeys(hop.node_id for hop in route.hops if hop.node_id))


class SessionFailed(grpc.RpcError):
    """A session gave up recovering: the last failure's status, with its cause, how
    many recoveries were tried and for how long."""

    def __init__(self, last: grpc.RpcError, recoveries: list[str], elapsed_s: float, why: str) -> None:
        self.last = last
        self.recoveries = list(recoveries)
        code = last.code() if hasattr(last, "code") else None
        self._code = code if code is not None else grpc.StatusCode.UNKNOWN
        tried = "; ".join(dict.fromkeys(recoveries)) or "none"
        details = last.details() if hasattr(last, "details") else str(last)
        self._details = (
            f"{details} (gave up: {why}, after {len(recoveries)} recoveries in "
            f"{elapsed_s:.1f} s; causes seen: {tried})"
        )
        super().__init__(self._details)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def __str__(self) -> str:
        return f"{self._code.name}: {self._details}"


def hop_timeout_details(timeout_s: float, answered: bool) -> str:
    """Why a stream counts as lost: which timeout ran out."""
    which = "step_timeout_s" if answered else "prefill_timeout_s, before the stream's first answer"
    return f"no reply within {timeout_s:g} s ({which}): a hop is not answering"


class HopTimeout(grpc.RpcError):
    """A step got no reply within the client's step timeout (UNAVAILABLE, recoverable)."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._details

    def __str__(self) -> str:
        return f"UNAVAILABLE: {self._details}"
