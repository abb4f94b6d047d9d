"""A run's summary (Markdown) and plots (PNG) from its requests and samples."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
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
        f"- control: {mode}; seed {s.seed}; duration {s.duration_s:g} s",
        f"- workload: {s.workload.arrival}, {s.workload.rate_per_s:g} req/s, {s.workload.clients} client(s), "
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
        "",
    ]
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
