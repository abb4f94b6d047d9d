"""Garbage collection in a serving process: its start-up objects frozen, its pauses measured.

Why: a worker holds about 400,000 objects that the collector tracks once torch and
transformers are imported, and nearly all of them live as long as the process. A full
collection walks every one of them: 290-420 ms measured on the 2-core machine with other
work running (``gc.collect()`` after ``import services.worker.server``), on the event
loop that moves every session's tokens. Frozen once the service is up (``gc.freeze``,
as CPython documents for long-running servers), they are never walked again; what
serving allocates is collected as before. The pauses are a metric,
``resplit_gc_pause_seconds{generation}``, so a tail in a token's latency can be told
from one.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Histogram

GC_PAUSE = Histogram(
    "resplit_gc_pause_seconds",
    "Time the garbage collector held the process, per collection, by generation",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)

_started: list[float] = []


def _observe(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started.append(time.perf_counter())
    elif _started:
        GC_PAUSE.labels(str(info.get("generation", "?"))).observe(time.perf_counter() - _started.pop())


def freeze_startup() -> int:
    """Collect once, then freeze every object alive now; returns how many are frozen.

    Called when a service has imported and built what it keeps for its lifetime (a
    worker: its model code, before SERVING). Idempotent in effect: a second call
    freezes what was made since."""
    if _observe not in gc.callbacks:
        gc.callbacks.append(_observe)
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
