"""What both clients build before talking to the workers, written once.

The blocking and asyncio clients differ only in how they wait; choosing the
deployment, tokenizing the prompt, defaulting the stop tokens and shaping a
latency sample are the same decisions and live here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import grpc
from transformers import PreTrainedTokenizerBase

from ..v1 import common_pb2, monitor_pb2
from .exchange import Sampling


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


def backoff_s(attempt: int) -> float:
    """Wait before recovery attempt ``attempt`` (1-based): 0.1 s doubling to 2 s."""
    return min(2.0, 0.1 * 2 ** (attempt - 1))


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
