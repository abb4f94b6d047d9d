"""A run's summary (Markdown) and plots (PNG) from its requests and samples."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .run import RunResult


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class Summary:
    requests: int
    failed: int
    ttft_p50_ms: float
    ttft_p95_ms: float
    tpot_p50_ms: float
    tpot_p95_ms: float
    throughput_tps: float
    sla_attainment: float
    utilization_mean: float
    utilization_max_node: float
    plan_changes: int
    #: Mean |measured - predicted| / predicted of the plan in force's latency signals, without
    #: and with the online correction (the orchestrator's checks; nan without any).
    model_error_raw: float = float("nan")
    model_error_corrected: float = float("nan")
    model_checks: int = 0
    #: The same errors' medians (one transient check does not set them), and the checks held as
    #: outliers (not fitted).
    model_error_raw_median: float = float("nan")
    model_error_corrected_median: float = float("nan")
    model_outliers: int = 0
    correction_prefill: float = float("nan")
    correction_decode: float = float("nan")
    correction_hop_ms: float = float("nan")
    #: Mean |measured - predicted| / predicted of the committed changes' SLA signal (decision log).
    change_error: float = float("nan")
    #: Stepped arrivals (workload.steps): per step, and the capacity: the highest step rate that it
    #: and every lower step serve with P95 TTFT <= SLA and no failure (0: not even the first).
    steps: list[dict] = field(default_factory=list)
    capacity_rps: float = float("nan")
    capacity_tps: float = float("nan")
    capacity_utilization: float = float("nan")

    @staticmethod
    def stepped(result: RunResult) -> list[dict]:
        """Per step of stepped arrivals: offered rate, requests sent in it, failures, P95 TTFT (from
        the send, and from the scheduled arrival), generated tokens per second and the busiest
        node's mean utilization."""
        w = result.scenario.workload
        out = []
        for i, rate in enumerate(w.steps):
            lo = i * w.step_s
            hi = (i + 1) * w.step_s if i + 1 < len(w.steps) else result.scenario.duration_s
            sent = [r for r in result.requests if lo <= r.sent_s < hi]
            ok = [r for r in sent if not r.error and r.generated]
            samples = [(n, u) for t, n, u in result.utilization if lo <= t < hi]
            per_node = {n: statistics.fmean(u for m, u in samples if m == n) for n, _ in samples}
            out.append(
                {
                    "rate": rate,
                    "requests": len(sent),
                    "failed": len(sent) - len(ok),
                    "ttft_p95_ms": percentile([r.ttft_ms for r in ok], 95),
                    # counted from the scheduled arrival: a client still busy sends late, and
                    # an open-loop user would have waited that long too (no coordinated omission)
                    "arrival_ttft_p95_ms": percentile([r.late_ms + r.ttft_ms for r in ok], 95),
                    "tps": sum(r.generated for r in ok) / (hi - lo) if hi > lo else 0.0,
                    "utilization_max_node": max(per_node.values()) if per_node else float("nan"),
                }
            )
        return out

    @staticmethod
    def capacity(steps: list[dict], sla_ms: float) -> tuple[float, float, float]:
        """(req/s, tok/s, busiest node's utilization) of the highest step that it and every lower
        step hold with P95 TTFT (from the scheduled arrival) <= ``sla_ms`` and no failure; (0, nan,
        nan) if the first breaks."""
        best = (0.0, float("nan"), float("nan"))
        for step in steps:
            p95 = step.get("arrival_ttft_p95_ms", step["ttft_p95_ms"])
            if not step["requests"] or step["failed"] or not p95 <= sla_ms:
                break
            best = (step["rate"], step["tps"], step["utilization_max_node"])
        return best

    @classmethod
    def of(cls, result: RunResult) -> Summary:
        ok = [r for r in result.requests if not r.error and r.generated]
        ttft = [r.ttft_ms for r in ok]
        tpot = [r.tpot_ms for r in ok if r.tpot_ms > 0]
        sla = result.scenario.policy.sla_ms
        tokens = sum(r.generated for r in ok)
        hosts = {n for _, n, _ in result.utilization}
        per_node = {n: [u for _, m, u in result.utilization if m == n] for n in hosts}
        means = {n: statistics.fmean(v) for n, v in per_node.items() if v}
        steps = cls.stepped(result)
        capacity = cls.capacity(steps, sla)
        return cls(
            requests=len(result.requests),
            failed=len(result.requests) - len(ok),
            ttft_p50_ms=percentile(ttft, 50),
            ttft_p95_ms=percentile(ttft, 95),
            tpot_p50_ms=percentile(tpot, 50),
            tpot_p95_ms=percentile(tpot, 95),
            throughput_tps=tokens / result.scenario.duration_s,
            # a failed request misses the SLA
            sla_attainment=sum(1 for t in ttft if t <= sla) / len(result.requests)
            if result.requests
            else 0.0,
            utilization_mean=statistics.fmean(means.values()) if means else float("nan"),
            utilization_max_node=max(means.values()) if means else float("nan"),
            plan_changes=len(result.changes),
            model_error_raw=result.cost_model.get("raw", float("nan")),
            model_error_corrected=result.cost_model.get("corrected", float("nan")),
            model_checks=int(result.cost_model.get("checks", 0)),
            model_error_raw_median=result.cost_model.get("raw_median", float("nan")),
            model_error_corrected_median=result.cost_model.get("corrected_median", float("nan")),
            model_outliers=int(result.cost_model.get("outliers", 0)),
            correction_prefill=result.cost_model.get("prefill", float("nan")),
            correction_decode=result.cost_model.get("decode", float("nan")),
            correction_hop_ms=result.cost_model.get("hop_ms", float("nan")),
            steps=steps,
            capacity_rps=capacity[0] if steps else float("nan"),
            capacity_tps=capacity[1] if steps else float("nan"),
            capacity_utilization=capacity[2] if steps else float("nan"),
            change_error=statistics.fmean(abs(m - p) / p for p, m in result.change_errors if p > 0)
            if any(p > 0 for p, _ in result.change_errors)
            else float("nan"),
        )


def write_summary(result: RunResult) -> Summary:
    s = result.scenario
    summary = Summary.of(result)
    mode = "adaptive (Alg. 1)" if s.control.adaptive else "static (orchestrator --no-adaptive)"
    lines = [
        f"# {s.name}",
        "",
        s.description.strip(),
        "",
        f"- control: {mode}; seed {s.seed}; duration {s.duration_s:g} s after a warm-up of {s.warmup_s:g} s",
        f"- workload: {s.workload.arrival}, "
        + (
            f"stepped {', '.join(f'{r:g}' for r in s.workload.steps)} req/s, {s.workload.step_s:g} s each"
            if s.workload.steps
            else f"{s.workload.rate_per_s:g} req/s"
        )
        + f", {s.workload.clients} client(s), "
        f"prompt {s.workload.prompt_tokens}, generate {s.workload.generate_tokens}",
        "- nodes: "
        + ", ".join(
            f"{n.id} ({n.device}, {'emulated' if n.emulate else 'real CPU'}"
            f"{', trusted' if n.trusted else ''})"
            for n in s.nodes
        ),
        f"- plan at start: {result.plans[0] if result.plans else '?'}",
        f"- plan at end: {result.plans[-1] if len(result.plans) > 1 else '?'}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| requests (failed) | {summary.requests} ({summary.failed}) |",
        f"| TTFT P50 / P95 (ms) | {summary.ttft_p50_ms:.1f} / {summary.ttft_p95_ms:.1f} |",
        f"| per-token P50 / P95 (ms) | {summary.tpot_p50_ms:.1f} / {summary.tpot_p95_ms:.1f} |",
        f"| throughput (generated tok/s) | {summary.throughput_tps:.2f} |",
        f"| SLA: TTFT <= {s.policy.sla_ms:g} ms | {summary.sla_attainment:.0%} |",
        f"| device utilization, mean of nodes / busiest node | {summary.utilization_mean:.0%} / "
        f"{summary.utilization_max_node:.0%} |",
        f"| plan changes | {summary.plan_changes} |",
        f"| cost model: abs. error of the plan in force's signals, raw / corrected, median (mean) "
        f"({summary.model_checks} checks, {summary.model_outliers} held as outliers) | "
        f"{summary.model_error_raw_median:.0%} ({summary.model_error_raw:.0%}) / "
        f"{summary.model_error_corrected_median:.0%} ({summary.model_error_corrected:.0%}) |",
        f"| correction: prefill, decode factor, hop overhead (ms) | {summary.correction_prefill:.3g}, "
        f"{summary.correction_decode:.3g}, "
        f"{summary.correction_hop_ms:.3g} |",
        f"| committed changes: mean abs. error of the predicted SLA signal | {summary.change_error:.0%} |",
        *(
            [
                f"| capacity: highest step with P95 TTFT <= {s.policy.sla_ms:g} ms (req/s, tok/s, busiest "
                f"node) | {summary.capacity_rps:g}, {summary.capacity_tps:.1f}, "
                f"{summary.capacity_utilization:.0%} |"
            ]
            if summary.steps
            else []
        ),
        "",
    ]
    if summary.steps:
        lines += [
            "| step (req/s offered) | requests (failed) | P95 TTFT (ms) | tok/s | busiest node |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {x['rate']:g} | {x['requests']} ({x['failed']}) | {x['ttft_p95_ms']:.0f} | {x['tps']:.1f} "
            f"| {x['utilization_max_node']:.0%} |"
            for x in summary.steps
        ]
        lines.append("")
    if result.changes:
        lines += ["Plan changes:", ""]
        lines += [f"- t = {t:.1f} s: {outcome}: {reason}" for t, outcome, reason in result.changes]
        lines.append("")
    if result.notes:
        lines += ["Notes:", ""] + [f"- {note}" for note in result.notes] + [""]
    (result.out_dir / "summary.md").write_text("\n".join(lines))
    return summary


def plot(result: RunResult) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    ok = [r for r in result.requests if not r.error and r.generated]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot([r.sent_s for r in ok], [r.ttft_ms for r in ok], ".", label="TTFT")
    top.plot([r.sent_s for r in ok], [r.tpot_ms for r in ok], ".", label="per token")
    top.axhline(result.scenario.policy.sla_ms, color="grey", linestyle="--", label="SLA")
    for t, _, _ in result.changes:
        top.axvline(t, color="red", alpha=0.4)
    top.set_ylabel("latency (ms)")
    top.set_yscale("log")
    top.legend()
    for node in sorted({n for _, n, _ in result.utilization}):
        samples = [(t, u) for t, n, u in result.utilization if n == node]
        bottom.plot([t for t, _ in samples], [u for _, u in samples], label=node)
    bottom.set_ylabel("utilization")
    bottom.set_xlabel("time (s)")
    bottom.legend(fontsize="small")
    fig.suptitle(result.scenario.name)
    fig.tight_layout()
    path = result.out_dir / "timeline.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    out.append(path)
    return out


def report(result: RunResult) -> Summary:
    summary = write_summary(result)
    plot(result)
    return summary


def write_json(summary: Summary, path: Path) -> None:
    import json
    from dataclasses import asdict

    path.write_text(json.dumps(asdict(summary), indent=2))
