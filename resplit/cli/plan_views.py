"""Rich tables for ``resplit plan solve``: the plan's segments and its cost breakdown."""

from __future__ import annotations

from rich.table import Table

from ..scenarios.plan import GIB, Scenario
from ..v1 import splitter_pb2

SOLVERS = {
    splitter_pb2.SOLVER_KIND_EXACT: "exact",
    splitter_pb2.SOLVER_KIND_GREEDY: "greedy",
    splitter_pb2.SOLVER_KIND_BRUTE_FORCE: "brute-force",
}


def _kinds(profile: splitter_pb2.ModelProfile, start: int, end: int) -> str:
    units = profile.units[start:end]
    blocks = [u.index for u in units if u.kind == "block"]
    parts = ["embedding"] if units and units[0].kind == "embedding" else []
    if blocks:
        parts.append(f"block {blocks[0]}" if len(blocks) == 1 else f"blocks {blocks[0]}-{blocks[-1]}")
    if units and units[-1].kind == "head":
        parts.append("head")
    return " + ".join(parts)


def plan_table(
    response: splitter_pb2.SolveResponse, scenario: Scenario, profile: splitter_pb2.ModelProfile
) -> Table:
    trusted = {n.id for n in scenario.nodes if n.trusted} | set(scenario.policy.trusted)
    devices = {n.id: n.device or f"{n.tflops:g} TFLOP/s" for n in scenario.nodes}
    table = Table(title=f"plan for {scenario.name} ({len(response.plan.segments)} segments)")
    for column in ("#", "units", "what", "node", "device", "trusted", "weights + KV"):
        table.add_column(column, justify="right" if column in ("#", "weights + KV") else "left")
    context = scenario.workload.prompt_tokens + scenario.workload.generate_tokens
    sessions = scenario.workload.concurrent_sessions
    for i, seg in enumerate(response.plan.segments):
        start, end = seg.units.start, seg.units.end
        size = sum(
            u.param_bytes + u.kv_bytes_per_token * context * sessions for u in profile.units[start:end]
        )
        table.add_row(
            str(i + 1),
            f"[{start}, {end})",
            _kinds(profile, start, end),
            seg.node_id,
            devices.get(seg.node_id, "?"),
            "yes" if seg.node_id in trusted else "no",
            f"{size / GIB:.2f} GiB",
        )
    return table


def cost_table(response: splitter_pb2.SolveResponse) -> Table:
    c = response.cost
    table = Table(title="predicted cost (Phi = alpha L + beta U + gamma P + migration)")
    table.add_column("term")
    table.add_column("value", justify="right")
    rows = [
        ("Phi", f"{c.phi:,.2f}"),
        ("L: latency per request", f"{c.latency_ms:,.1f} ms"),
        ("  prefill", f"{c.prefill_ms:,.1f} ms"),
        ("  decode, per token", f"{c.decode_ms_per_token:,.2f} ms"),
        (
            "  compute / transfer / queueing",
            f"{c.compute_ms:,.1f} / {c.transfer_ms:,.1f} / {c.queueing_ms:,.1f} ms",
        ),
        ("U: peak node utilization", f"{c.utilization:.3f}"),
        ("P: privacy-critical units off trusted nodes", f"{c.privacy:.0%}"),
        ("migration", f"{c.migration_gib:.2f} GiB"),
        ("throughput (slowest stage)", f"{c.throughput_tps:,.1f} tok/s ({c.bottleneck_ms:.2f} ms/token)"),
        ("solver", f"{SOLVERS.get(response.solver, '?')} in {response.solve_ms:.1f} ms"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table
