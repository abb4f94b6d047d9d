"""Emulated compute: how long a device would take for one segment step.

A worker started with ``--emulate DEVICE`` computes nothing heavy: each step
waits the time this module predicts for the step's units on ``DEVICE`` and
passes on activations of the real size and dtype. The timing is the
splitter's own: the unit profile of :mod:`resplit.core.profiles` and the
roofline of :mod:`resplit.core.devices` (``max(FLOPs / FLOP/s, bytes read /
memory bandwidth)`` per unit), evaluated for the step actually run:

* a block runs ``rows x tokens`` new positions: ``flops_per_token`` each plus
  attention over the positions before it; it reads its weights once and the
  KV cache of every row (``kv_bytes_per_token x context``);
* the embedding is a gather: it reads ``rows x tokens`` rows of the table, not
  the table (the splitter's cost model counts the whole table, a conservative
  over-estimate of 0.75 ms per token for Llama-3-8B on an A100);
* the head turns the last position of each row into logits (what the segment
  returns), reading its whole weight matrix.

Batch effects follow: weights are read once per step whatever the number of
rows, FLOPs and KV reads grow with them. Background load ``u`` (another
tenant on the device, 0..1) stretches a step by ``1 / (1 - u)`` (processor
sharing), and the device reports utilization ``busy + (1 - busy) u``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .devices import Device, roofline
from .profiles import Unit

#: A background load is capped here: a fully saturated device would never finish a step.
MAX_LOAD = 0.95
#: The most sleep overshoot carried into the next wait.
MAX_CARRY_S = 0.005


def unit_seconds(unit: Unit, device: Device, tokens: int, past: int, rows: int = 1) -> float:
    """Seconds ``device`` needs to run ``unit`` on ``tokens`` new positions per row,
    each row having ``past`` positions cached already, with no other load."""
    if tokens <= 0 or rows <= 0:
        return 0.0
    if unit.kind == "embedding":
        flops, read = 0.0, rows * tokens * unit.activation_bytes_per_token
    elif unit.kind == "head":
        flops, read = rows * unit.flops_per_token, unit.param_bytes
    else:
        attended = tokens * past + tokens * (tokens + 1) / 2.0
        flops = rows * (tokens * unit.flops_per_token + unit.attention_flops_per_position * attended)
        read = unit.param_bytes + rows * unit.kv_bytes_per_token * (past + tokens)
    return float(roofline(flops, read, device.flops_per_s, device.memory_bandwidth_bps))


def step_seconds(
    units: Sequence[Unit], device: Device, tokens: int, past: int, rows: int = 1, load: float = 0.0
) -> float:
    """Seconds one step of ``units`` takes on ``device`` under background ``load``."""
    service = sum(unit_seconds(u, device, tokens, past, rows) for u in units)
    return service / (1.0 - min(max(load, 0.0), MAX_LOAD))


#: How often an emulated device re-reads its load file, in seconds.
LOAD_REFRESH_S = 0.2


class EmulatedDevice:
    """One emulated device: its background load, its busy time, and the wait itself.

    The load comes from ``load_file`` (a number 0..1, re-read at most every
    ``refresh_s``; missing or unreadable = 0), so a testbed can change it
    while the worker runs. Thread-safe: steps run on the worker's compute
    thread, utilization is read by the node agent.
    """

    def __init__(self, device: Device, load_file: str = "", refresh_s: float = LOAD_REFRESH_S) -> None:
        self.device = device
        self.load_file = Path(load_file) if load_file else None
        self.refresh_s = refresh_s
        self._load = 0.0
        self._read_at = -1e9
        self._lock = threading.Lock()
        self._busy_s = 0.0
        self._carry = 0.0
        self._since = time.monotonic()

    @property
    def load(self) -> float:
        if self.load_file is None:
            return 0.0
        now = time.monotonic()
        if now - self._read_at >= self.refresh_s:
            self._read_at = now
            try:
                self._load = min(max(float(self.load_file.read_text().strip() or 0), 0.0), 1.0)
            except (OSError, ValueError):
                self._load = 0.0
        return self._load

    def step_seconds(self, units: Sequence[Unit], tokens: int, past: int, rows: int = 1) -> float:
        return step_seconds(units, self.device, tokens, past, rows, self.load)

    def run(self, seconds: float, started: float | None = None) -> float:
        """Occupy the device for ``seconds`` counted from ``started`` (a perf_counter
        reading; default now), sleeping what is left; returns the seconds it took.

        A sleep wakes late by the scheduler's latency (0.1 ms idle, more on a busy
        machine); the overshoot is taken off the next wait (at most
        ``MAX_CARRY_S``), so over many steps the device runs at the profile's pace."""
        start = time.perf_counter() if started is None else started
        goal = seconds - self._carry
        left = goal - (time.perf_counter() - start)
        if left > 0:
            time.sleep(left)
        waited = time.perf_counter() - start
        if seconds > 0:
            self._carry = min(max(waited - goal, 0.0), MAX_CARRY_S)
        with self._lock:
            self._busy_s += waited
        return waited

    def utilization(self) -> float:
        """Device utilization since the last call: our busy share plus the background's
        share of the rest."""
        now = time.monotonic()
        with self._lock:
            busy, elapsed = self._busy_s, now - self._since
            self._busy_s, self._since = 0.0, now
        share = min(busy / elapsed, 1.0) if elapsed > 0 else 0.0
        return min(share + (1.0 - share) * self.load, 1.0)
