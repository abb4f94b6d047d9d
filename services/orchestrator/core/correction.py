"""The cost model learns: an online correction fitted from predicted vs measured latency.

The splitter's cost model is a roofline on datasheet peaks plus RTT/2 + bytes /
bandwidth per hop. What it leaves out is systematic: the software reaches only a
share of the peak (the same share on every node of one deployment: same kernels,
same framework), a different share in a prefill (many tokens per step) than in a
decode step (one token, per-step overheads dominate), and every hop pays a fixed
overhead the probes do not see (serialisation, gRPC, Python). So the correction
has three terms, all handed to the splitter in the problem (``Correction.apply``
fields), so the plan in force and every candidate are costed with them:

* ``prefill``: measured over modelled compute time of a prefill (Workload.prefill_factor);
* ``decode``: the same for one decode step (Workload.decode_factor);
* ``hop_ms``: a per-hop overhead o in ms, added to every link's one-way time
  (RTT + 2 o, since the model charges RTT/2 per hop).

Each latency signal's prediction is linear in them (compute, and M/M/1 queueing
at a measured utilization, scale with the factor; every hop adds o): TTFT =
``base + k_prefill c + o h``, TPOT = ``base + k_decode c + o h``, an encoder's
request like TTFT. The loop measures ``c`` and ``h`` for the plan in force with
three EVALUATE calls (``Sensitivity.of``) and compares with the median of the
first hops' samples. ``fit`` solves the relative least-squares problem over the
signals, damped toward the previous correction in proportion to what the data
says about each term (Levenberg-Marquardt: scale-free, and a term the signals
do not see stays where it was); with one signal, one equation pins down one
term, so the hop overhead is held. It then takes a step of ``rate`` toward the
solution (an EWMA over checks, so one noisy window moves it only partly) and
clamps every term to ``BOUNDS``: the correction can neither make a node free nor
stall it forever, whatever the samples say.

A check that is off the corrected prediction by more than ``OUTLIER`` times is
held once (:func:`outlying`): what the model has not seen yet, such as a load
that started on a node since the last sample of E(t), is a transient the loop
answers by moving the plan, not a trait of the software to learn. Measured: one
such check (TPOT 219 ms against 11.5 predicted, a node loaded a moment before)
took the decode factor to its bound of 8, and the damped steps back left the
run's corrected error at 71-80 % where the runs without one ended at 10 %. An
outlier that is still there at the next check is real, and is fitted.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

#: Factors in [0.25, 8], o in [0, 25] ms: from 4x faster to 8x slower than the roofline, and at
#: most a few relay/serialisation round trips of overhead per hop.
BOUNDS = {"prefill": (0.25, 8.0), "decode": (0.25, 8.0), "hop_ms": (0.0, 25.0)}
TERMS = ("prefill", "decode", "hop_ms")
#: Damping toward the previous correction, as a share of the data's own curvature per term.
DAMPING = 0.05
#: Step toward each check's solution.
RATE = 0.5
#: The factors' probe (both factors at once: each signal sees one of them).
PROBE_K = 1.25
#: The hop overhead's probe, in ms.
PROBE_HOP_MS = 1.0
#: A check this many times off the corrected prediction (either way) is held once (outlying).
OUTLIER = 3.0
#: Which factor each signal's compute scales with (an encoder's request is one prefill).
FACTOR_OF = {"ttft": "prefill", "tpot": "decode", "request": "prefill"}


@dataclass(frozen=True)
class Correction:
    prefill: float = 1.0
    decode: float = 1.0
    hop_ms: float = 0.0

    @property
    def identity(self) -> bool:
        return self == Correction()

    def value(self, term: str) -> float:
        return float(getattr(self, term))


#: The three problems a check evaluates: uncorrected, the factors probed, the hop probed.
PROBES = (Correction(), Correction(PROBE_K, PROBE_K), Correction(hop_ms=PROBE_HOP_MS))


@dataclass(frozen=True)
class Sensitivity:
    """One signal's prediction for the plan in force: ``base + k c + o h`` (k its factor)."""

    signal: str
    base: float
    per_factor: float
    per_hop_ms: float

    @classmethod
    def of(cls, signal: str, raw: float, slower: float, delayed: float) -> Sensitivity:
        """From the predictions under PROBES: uncorrected, factors at PROBE_K, o at PROBE_HOP_MS."""
        c = max((slower - raw) / (PROBE_K - 1.0), 0.0)
        h = max((delayed - raw) / PROBE_HOP_MS, 0.0)
        return cls(signal, raw - c, c, h)

    @property
    def factor(self) -> str:
        return FACTOR_OF.get(self.signal, "prefill")

    def gradient(self) -> np.ndarray:
        """d prediction / d (prefill, decode, hop_ms)."""
        g = np.zeros(len(TERMS))
        g[TERMS.index(self.factor)] = self.per_factor
        g[TERMS.index("hop_ms")] = self.per_hop_ms
        return g

    def predict(self, correction: Correction) -> float:
        return (
            self.base + correction.value(self.factor) * self.per_factor + correction.hop_ms * self.per_hop_ms
        )

    def raw(self) -> float:
        return self.predict(Correction())


@dataclass(frozen=True)
class Check:
    """One signal of the plan in force: what was measured, and what was predicted without and
    with the correction in force (before this check's fit)."""

    signal: str
    measured: float
    raw: float
    corrected: float

    @staticmethod
    def error(predicted: float, measured: float) -> float:
        """(measured - predicted) / predicted, the sign of resplit_prediction_error_ratio."""
        return (measured - predicted) / predicted if predicted > 0 else math.nan


def _usable(sensitivities: Iterable[Sensitivity], measured: dict[str, float]) -> list[Sensitivity]:
    return [s for s in sensitivities if measured.get(s.signal, 0.0) > 0 and s.raw() > 0]


def checks(
    sensitivities: Iterable[Sensitivity], measured: dict[str, float], correction: Correction
) -> list[Check]:
    """The signals with a measurement (> 0) and a positive prediction."""
    return [
        Check(s.signal, measured[s.signal], s.raw(), s.predict(correction))
        for s in _usable(sensitivities, measured)
    ]


def outlying(
    sensitivities: Iterable[Sensitivity], measured: dict[str, float], correction: Correction
) -> bool:
    """Whether some signal's measurement is more than OUTLIER times off its corrected prediction."""
    for s in _usable(sensitivities, measured):
        predicted = s.predict(correction)
        if predicted > 0 and not 1 / OUTLIER <= measured[s.signal] / predicted <= OUTLIER:
            return True
    return False


@dataclass
class OutlierGate:
    """Per deployment: the first of a run of outlying checks is held, the rest are fitted."""

    last_outlying: bool = False

    def admits(self, outlier: bool) -> bool:
        """Whether to fit this check (``outlier``: :func:`outlying` says so)."""
        first = outlier and not self.last_outlying
        self.last_outlying = outlier
        return not first


def fit(
    previous: Correction, sensitivities: Iterable[Sensitivity], measured: dict[str, float], rate: float = RATE
) -> Correction:
    """The next correction: a step of ``rate`` toward the damped least-squares solution of the
    signals' relative errors, clamped to BOUNDS. No usable signal: unchanged."""
    usable = _usable(sensitivities, measured)
    if not usable:
        return previous
    held = {"hop_ms"} if len(usable) < 2 else set()  # one equation: the factor alone
    x0 = np.array([previous.value(t) for t in TERMS])
    a = np.zeros((len(TERMS), len(TERMS)))
    b = np.zeros(len(TERMS))
    for s in usable:
        m = measured[s.signal]
        g = s.gradient()
        for t in held:
            g[TERMS.index(t)] = 0.0
        w = 1.0 / (m * m)  # relative errors: a 10 ms TPOT counts as much as a 100 ms TTFT
        a += w * np.outer(g, g)
        # the residual of the previous correction, with held terms at their values
        b += w * g * (m - s.predict(previous) + g @ x0)
    damping = DAMPING * np.diag(a) + 1e-12
    x = np.linalg.solve(a + np.diag(damping), b + damping * x0)
    step = x0 + rate * (x - x0)
    low = np.array([BOUNDS[t][0] for t in TERMS])
    high = np.array([BOUNDS[t][1] for t in TERMS])
    return Correction(*(float(v) for v in np.clip(step, low, high)))


#: The latest checks whose errors an ErrorTally keeps for its medians.
TALLY_KEPT = 4096


@dataclass
class ErrorTally:
    """Absolute relative error of the plan in force's predictions, without and with the
    correction, over the checks so far (what the benchmark reports): the mean, and the median,
    which one transient check (a load the model had not seen yet, 20x off) does not set."""

    count: int = 0
    raw_abs: float = 0.0
    corrected_abs: float = 0.0
    kept: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=TALLY_KEPT))

    def add(self, check: Check) -> None:
        raw = abs(Check.error(check.raw, check.measured))
        corrected = abs(Check.error(check.corrected, check.measured))
        self.count += 1
        self.raw_abs += raw
        self.corrected_abs += corrected
        self.kept.append((raw, corrected))

    def means(self) -> tuple[float, float]:
        if not self.count:
            return math.nan, math.nan
        return self.raw_abs / self.count, self.corrected_abs / self.count

    def medians(self) -> tuple[float, float]:
        if not self.kept:
            return math.nan, math.nan
        return (
            statistics.median(raw for raw, _ in self.kept),
            statistics.median(corrected for _, corrected in self.kept),
        )
