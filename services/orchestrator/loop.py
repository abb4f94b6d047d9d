"""The control loop: Alg. 1 of the paper, one deployment at a time.

Every Delta t (the deployment's ``policy.interval_s``, at least
``control_interval_floor_s``) one *cycle* runs for a deployment:

    E(t)      <- collect_environment()            the monitor's GetEnvironment
    triggers  <- should_reconfigure(E(t), Theta)  core/triggers.py
    if triggers:
        Phi(d_t) <- evaluate_current()            splitter, SOLVE_MODE_EVALUATE
        d-hat    <- decide(...)                   core/decide.py: migration first,
                                                  split revision if it cannot meet Theta
        if d-hat != d_t and hysteresis and T_cool allow:
            broadcast(d-hat)                      the broadcaster's two-phase Rollout
            t_last <- t                           Redis, so it survives a restart
        log_decision(...)                         the deployment's decision stream

Deciding, broadcasting and logging are one commit (commit.py, the path every plan
change takes): under the deployment's lock, so an operator's plan never lands
between the decision and its rollout, with the epoch assigned there.

A cycle in which nothing fires writes no event; every cycle that fires writes
exactly one, also when the monitor, splitter or broadcaster fails (the event is
then KEEP with the failure as its reason) and the loop goes on. On the first
cycle at least ``measure_after_s`` after a change, the mean end-to-end latency
of the requests since the change becomes the event's measured latency.

Every ``correction_every_s`` the loop also checks the cost model: it evaluates the
plan in force uncorrected and with each correction term probed, compares with the
median of the first hops' samples of each signal over the last ``correction_window_s``
since the last change (so no sample predates the plan in force) and fits the correction that every
later problem carries (core/correction.py); ``--no-cost-correction`` keeps the
model as it is (the checks still run, so the error is reported either way).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import statistics
import time

import grpc
from prometheus_client import Counter, Gauge, Histogram

from resplit.core.cancel import raise_if_cancelling, stop_if_cancelled
from resplit.rpc.channels import aio_channel
from resplit.state import StateStore
from resplit.v1 import (
    common_pb2,
    monitor_pb2,
    monitor_pb2_grpc,
    splitter_pb2,
    splitter_pb2_grpc,
)

from .commit import Change, Commits
from .core.correction import (
    PROBES,
    Correction,
    ErrorTally,
    OutlierGate,
    Sensitivity,
    checks,
    fit,
    outlying,
)
from .core.decide import (
    PROTO_TO_OUTCOME,
    Candidate,
    Decision,
    Measured,
    Outcome,
    decide,
    predicted_ms,
    recent_plans,
)
from .core.policy import effective_thresholds, interval_of, latency_bounds
from .core.problem import Shared, WorkloadDefaults, build_problem, own_load
from .core.sharing import Claims, moved_load, other_memory
from .core.switching import live_tokens, moved_bytes, switch_cost
from .core.triggers import describe, latest_links, node_utilization, should_reconfigure, signal_ms

log = logging.getLogger(__name__)

RECONFIGURATIONS = Counter(
    "resplit_reconfigurations_total",
    "Control-loop decisions by outcome (keep, migrate, resplit)",
    ["outcome"],
)
CYCLE_SECONDS = Histogram("resplit_control_cycle_seconds", "Duration of one control cycle of one deployment")
TRIGGERS = Counter("resplit_triggers_total", "Triggers of Alg. 1 that fired", ["trigger"])
PREDICTION_ERROR = Gauge(
    "resplit_prediction_error_ratio",
    "(measured - predicted) / predicted latency signal of the last committed plan, once measured",
    ["deployment", "signal"],
)

COST_CORRECTION = Gauge(
    "resplit_cost_correction",
    "The cost model's online correction per deployment: term prefill / decode (measured over "
    "modelled compute time) and hop_ms (overhead per hop, ms)",
    ["deployment", "term"],
)
MODEL_ERROR = Gauge(
    "resplit_cost_model_error_mean",
    "Mean |measured - predicted| / predicted of the plan in force's latency signals over the checks "
    "so far: model raw (uncorrected) or corrected (the correction in force at each check)",
    ["deployment", "model"],
)
MODEL_ERROR_MEDIAN = Gauge(
    "resplit_cost_model_error_median",
    "Median |measured - predicted| / predicted of the plan in force's latency signals over the "
    "checks so far (the latest 4,096): model raw or corrected, as resplit_cost_model_error_mean",
    ["deployment", "model"],
)
MODEL_OUTLIERS = Counter(
    "resplit_cost_model_outliers_total",
    "Cost-model checks held as outliers (over 3x off the corrected prediction, the first of a run): "
    "not fitted, still counted in the errors",
    ["deployment"],
)
MODEL_CHECKS = Counter(
    "resplit_cost_model_checks_total",
    "Signals of plans in force checked against the cost model",
    ["deployment"],
)

#: Samples of a signal a cost-model check needs in its window.
MIN_SAMPLES = 3

#: Requests per second are counted over this span of the first hops' samples.
RATE_WINDOW_S = 30.0

MODES = {"placement-only": splitter_pb2.SOLVE_MODE_PLACEMENT_ONLY, "resplit": splitter_pb2.SOLVE_MODE_RESPLIT}


class CycleError(Exception):
    """A peer failed during a cycle: the cycle ends as KEEP with this reason."""


class ControlLoop:
    def __init__(self, store: StateStore, commits: Commits) -> None:
        self.store = store
        self.commits = commits
        self.settings = commits.settings
        self.defaults = WorkloadDefaults(
            self.settings.control_prompt_tokens,
            self.settings.control_generate_tokens,
            self.settings.assumed_rtt_ms,
        )
        self._monitor = aio_channel(self.settings.monitor_address)
        self._splitter = aio_channel(self.settings.splitter_address)
        self._profiles: dict[tuple[str, str], splitter_pb2.ModelProfile] = {}
        self._due: dict[str, float] = {}
        self._task: asyncio.Task | None = None
        self._woken = asyncio.Event()
        #: Load moved by recent changes, counted for the other deployments (core/sharing.py).
        self.claims = Claims(self.settings.claim_hold_s)
        #: The cost model's correction per deployment, its next check, and its error so far.
        self.corrections: dict[str, Correction] = {}
        self.model_errors: dict[str, ErrorTally] = {}
        self._next_check: dict[str, float] = {}
        #: Per deployment: whether its last check was an outlier (core/correction.py OutlierGate).
        self._outliers: dict[str, OutlierGate] = {}

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="control-loop")

    def wake(self) -> None:
        """Run every deployment's next cycle now (a node was just found down): the
        ``node_down`` trigger fires without waiting for Delta t."""
        self._due = dict.fromkeys(self._due, 0.0)
        self._woken.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._monitor.close()
        await self._splitter.close()

    async def run(self) -> None:
        """for each monitoring cycle t <- 0, Delta t, 2 Delta t, ...: one cycle per due deployment."""
        while True:
            stop_if_cancelled()  # a cancel swallowed in the last round (resplit/core/cancel.py)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away, or a bug: log it, the loop goes on
                raise_if_cancelling(exc)  # unless it is a cancel in disguise (resplit/core/cancel.py)
                log.exception("control loop tick failed")
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can turn a cancel that
            # lands as its timeout fires into a TimeoutError, and the loop would outlive stop().
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._sleep_s()):
                    await self._woken.wait()
            self._woken.clear()

    async def tick(self) -> None:
        now = time.monotonic()
        deployments = await self.store.list_deployments()
        self._due = {d.name: self._due.get(d.name, now) for d in deployments}
        for deployment in deployments:
            if self._due[deployment.name] > now:
                continue
            interval = max(interval_of(deployment.policy), self.settings.control_interval_floor_s)
            self._due[deployment.name] = now + interval
            started = time.perf_counter()
            try:
                await self.cycle(deployment)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("control cycle of %s failed", deployment.name)
            CYCLE_SECONDS.observe(time.perf_counter() - started)

    def _sleep_s(self) -> float:
        floor = self.settings.control_interval_floor_s
        if not self._due:
            return max(floor, 1.0)
        return min(max(min(self._due.values()) - time.monotonic(), floor), 1.0)

    # -- one cycle of Alg. 1 --------------------------------------------------
    async def cycle(self, deployment: common_pb2.Deployment) -> common_pb2.DecisionEvent | None:
        """Collect E(t), check the triggers, decide, broadcast, log; the event if one fired."""
        name = deployment.name
        try:
            env = await self.collect_environment()
        except CycleError as exc:
            log.warning("control cycle of %s: %s", name, exc)
            return None
        plan = await self.store.get_plan(name)
        if plan is None:
            return None
        bounds = latency_bounds(deployment.policy, deployment.generative)
        await self.follow_up_change(name, bounds[0][0])
        try:
            await self.check_cost_model(env, deployment, plan)
        except CycleError as exc:
            log.warning("cost model check of %s: %s", name, exc)
        thresholds = effective_thresholds(deployment.policy)
        settling = await self.store.registry_age_s() < self.settings.registry_grace_s
        predicted = await self.unmeasured_prediction(env, deployment, plan, bounds)
        triggers = should_reconfigure(env, name, plan, thresholds, settling, bounds, predicted)
        if not triggers:
            return None
        for trigger in triggers:
            TRIGGERS.labels(trigger.name).inc()

        async def propose(current: common_pb2.Plan) -> Change:
            """Under the deployment's lock, on the plan in force: decide, as a change."""
            try:
                decision = await self.decide_reconfiguration(env, deployment, current, triggers, thresholds)
            except CycleError as exc:
                decision = Decision(Outcome.KEEP, None, [], str(exc))
            return self.as_change(deployment, decision, triggers)

        event = (await self.commits.commit(name, propose, fallback=plan)).event
        assert event is not None  # every change the loop proposes is logged
        if event.outcome != common_pb2.DECISION_OUTCOME_KEEP:
            self.claims.add(time.time(), name, moved_load(event.previous, event.chosen, own_load(env, name)))
        RECONFIGURATIONS.labels(PROTO_TO_OUTCOME[event.outcome].value).inc()
        return event

    async def collect_environment(self) -> common_pb2.Environment:
        """E(t) from the monitoring & capacity-profiling module."""
        stub = monitor_pb2_grpc.MonitorServiceStub(self._monitor)
        try:
            return await stub.GetEnvironment(
                monitor_pb2.GetEnvironmentRequest(), timeout=self.settings.control_rpc_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise CycleError(
                f"monitor at {self.settings.monitor_address} failed: {exc.code().name}: {exc.details()}"
            ) from None

    async def decide_reconfiguration(
        self,
        env: common_pb2.Environment,
        deployment: common_pb2.Deployment,
        plan: common_pb2.Plan,
        triggers: list[common_pb2.Trigger],
        thresholds: common_pb2.Thresholds,
    ) -> Decision:
        """Evaluate d_t, then migration first and split revision if needed (core/decide.py)."""
        model = await self.model_profile(deployment)
        now = time.time()
        rate = await self.request_rate(deployment)
        correction = self.corrections.get(deployment.name, Correction())
        problem = await self.problem(env, deployment, plan, correction, rate)
        current_phi = await self.evaluate_current(problem)
        last = await self.store.last_change(deployment.name)
        interval = max(interval_of(deployment.policy), self.settings.control_interval_floor_s)
        events = await self.store.read_events(deployment.name, limit=32)
        measured = measured_of(env)
        tokens = live_tokens(env, deployment.name, plan)
        ahead = rate * max(thresholds.t_cool_s, interval)
        alpha = deployment.policy.alpha or 1.0

        def switch(chosen: common_pb2.Plan):
            moved = moved_bytes(plan, chosen, tokens, model.units)
            return switch_cost(moved, measured.bandwidth_mbps, alpha, ahead)

        return await decide(
            triggers,
            plan,
            current_phi,
            migration=lambda: self.solve(problem, "placement-only"),
            resplit=lambda: self.solve(problem, "resplit"),
            thresholds=thresholds,
            hysteresis=deployment.policy.hysteresis,
            measured=measured,
            last_change=last[0] if last else None,
            now=now,
            bounds=latency_bounds(deployment.policy, deployment.generative),
            switch=switch,
            recent=recent_plans(events, now, interval, self.settings.flap_cycles),
        )

    async def problem(
        self,
        env: common_pb2.Environment,
        deployment: common_pb2.Deployment,
        plan: common_pb2.Plan,
        correction: Correction,
        rate: float,
    ) -> splitter_pb2.Problem:
        """The splitter's problem for ``deployment`` now: the others' memory and claims taken
        off the nodes, its own measured request rate, the cost model's correction applied."""
        model = await self.model_profile(deployment)
        claimed = self.claims.for_others_of(deployment.name, time.time())
        shared = Shared(await self.others_memory(deployment.name), claimed, rate)
        return build_problem(env, deployment, plan, model, self.defaults, shared, correction)

    async def check_cost_model(
        self, env: common_pb2.Environment, deployment: common_pb2.Deployment, plan: common_pb2.Plan
    ) -> None:
        """Compare the plan in force's predicted signals with the measured ones, tally the error
        without and with the correction, and fit the next correction (core/correction.py)."""
        name = deployment.name
        now = time.time()
        if now < self._next_check.get(name, 0.0):
            return
        self._next_check[name] = now + self.settings.correction_every_s
        last = await self.store.last_change(name)
        since = max(now - self.settings.correction_window_s, last[0] if last is not None else 0.0)
        signals = ("ttft", "tpot") if deployment.generative else ("request",)
        measured = {s: await self.median_signal(name, s, since) for s in signals}
        if not any(v > 0 for v in measured.values()):
            return
        rate = await self.request_rate(deployment)
        costs = []
        for probe in PROBES:
            cost = await self.evaluate_cost(await self.problem(env, deployment, plan, probe, rate))
            if cost is None:
                return  # the plan cannot run as it stands (a node gone): nothing to learn from
            costs.append(cost)
        sensitivities = [Sensitivity.of(s, *(predicted_ms(c, s) for c in costs)) for s in signals]
        correction = self.corrections.get(name, Correction())
        tally = self.model_errors.setdefault(name, ErrorTally())
        for check in checks(sensitivities, measured, correction):
            tally.add(check)
            MODEL_CHECKS.labels(name).inc()
        raw, fitted = tally.means()
        MODEL_ERROR.labels(name, "raw").set(raw)
        MODEL_ERROR.labels(name, "corrected").set(fitted)
        raw_median, fitted_median = tally.medians()
        MODEL_ERROR_MEDIAN.labels(name, "raw").set(raw_median)
        MODEL_ERROR_MEDIAN.labels(name, "corrected").set(fitted_median)
        # the first of a run of outliers: a transient the model has not seen (core/correction.py)
        gate = self._outliers.setdefault(name, OutlierGate())
        held = not gate.admits(outlying(sensitivities, measured, correction))
        if held:
            MODEL_OUTLIERS.labels(name).inc()
        if self.settings.cost_correction and not held:
            correction = fit(correction, sensitivities, measured)
            self.corrections[name] = correction
        log.info(
            "cost model of %s: %s; correction prefill x%.3g, decode x%.3g, hop +%.3g ms%s",
            name,
            ", ".join(
                f"{s.signal} measured {measured[s.signal]:.4g} predicted {s.raw():.4g} raw"
                f" (compute {s.per_factor:.3g}, hops {s.per_hop_ms:.3g})"
                for s in sensitivities
            ),
            correction.prefill,
            correction.decode,
            correction.hop_ms,
            " (held: an outlier, fitted only if the next check agrees)" if held else "",
        )
        for term in ("prefill", "decode", "hop_ms"):
            COST_CORRECTION.labels(name, term).set(correction.value(term))

    async def unmeasured_prediction(
        self,
        env: common_pb2.Environment,
        deployment: common_pb2.Deployment,
        plan: common_pb2.Plan,
        bounds: list[tuple[str, float]],
    ) -> dict[str, float]:
        """The plan in force's predicted signals under E(t) (corrected), when a bounded signal
        has no measurement yet (a fresh deployment, no request so far); else nothing to ask."""
        if not self.settings.predict_unmeasured:
            return {}
        if all(signal_ms(env, deployment.name, signal) > 0 for signal, _ in bounds):
            return {}
        correction = self.corrections.get(deployment.name, Correction())
        try:
            problem = await self.problem(env, deployment, plan, correction, 0.0)
            cost = await self.evaluate_cost(problem)
        except CycleError as exc:
            log.warning("prediction of %s's plan in force: %s", deployment.name, exc)
            return {}
        return {} if cost is None else {signal: predicted_ms(cost, signal) for signal, _ in bounds}

    async def median_signal(self, name: str, signal: str, since: float) -> float:
        """The median of the first hops' samples of one signal since ``since`` (0: fewer than
        MIN_SAMPLES). Samples, not the monitor's EWMA, so that none predates the plan in force,
        and the median, so that a migration's stall in the window does not move the fit."""
        samples = await self.store.latency_samples(name, since=since, signal=signal)
        return statistics.median(samples) if len(samples) >= MIN_SAMPLES else 0.0

    async def others_memory(self, name: str) -> dict[str, int]:
        """node -> bytes every other deployment's plan in force holds there (core/sharing.py)."""
        plans = []
        for other in await self.store.list_deployments():
            if other.name == name:
                continue
            plan = await self.store.get_plan(other.name)
            if plan is None:
                continue
            units = (await self.model_profile(other)).units
            context = self.defaults.prompt_tokens + (self.defaults.generate_tokens if other.generative else 0)
            plans.append((plan, units, context))
        return other_memory(plans)

    async def request_rate(self, deployment: common_pb2.Deployment) -> float:
        """Requests per second of ``deployment`` lately: its first hops' TTFT samples (a
        decoder) or request samples (an encoder, or clients' reports), one per request."""
        since = time.time() - RATE_WINDOW_S
        signal = "ttft" if deployment.generative else "request"
        samples = await self.store.latency_samples(deployment.name, since=since, signal=signal)
        if not samples and deployment.generative:
            samples = await self.store.latency_samples(deployment.name, since=since, signal="request")
        return len(samples) / RATE_WINDOW_S

    def as_change(
        self, deployment: common_pb2.Deployment, decision: Decision, triggers: list[common_pb2.Trigger]
    ) -> Change:
        """A decision as a change to commit: d-hat broadcast via RB unless it is a keep,
        and the cycle's decision event either way (a failed rollout turns it into a keep)."""
        event = common_pb2.DecisionEvent(
            deployment=deployment.name,
            triggers=triggers,
            candidates=[c.plan for c in decision.candidates if c.plan is not None],
            reason=decision.reason,
            latency_signal=latency_bounds(deployment.policy, deployment.generative)[0][0],
        )
        reason = f"{decision.outcome.value}: " + ", ".join(describe(t) for t in triggers)
        chosen = decision.chosen if decision.outcome is not Outcome.KEEP else None
        return Change(deployment, chosen, reason, event)

    async def follow_up_change(self, name: str, signal: str = "request") -> None:
        """Measured latency after the last change: the mean of the samples of the deployment's
        latency signal since, once settled."""
        last = await self.store.last_change(name)
        if last is None or last[2] or time.time() - last[0] < self.settings.measure_after_s:
            return
        samples = await self.store.latency_samples(name, since=last[0], signal=signal)
        if samples:
            measured = sum(samples) / len(samples)
            await self.store.put_measured_latency(name, last[1], measured)
            plan = await self.store.get_plan(name)
            predicted = predicted_ms(plan.predicted, signal) if plan is not None else 0.0
            if predicted > 0:  # the committed plan's prediction of what was measured
                PREDICTION_ERROR.labels(name, signal).set((measured - predicted) / predicted)

    # -- the splitter (SR) ----------------------------------------------------
    async def model_profile(self, deployment: common_pb2.Deployment) -> splitter_pb2.ModelProfile:
        key = (deployment.model_dir, deployment.dtype, deployment.weights)
        if key not in self._profiles:
            stub = splitter_pb2_grpc.SplitterServiceStub(self._splitter)
            request = splitter_pb2.ProfileModelRequest(
                model_dir=deployment.model_dir, dtype=deployment.dtype, weights=deployment.weights
            )
            try:
                self._profiles[key] = await stub.ProfileModel(
                    request, timeout=self.settings.control_rpc_timeout_s
                )
            except grpc.aio.AioRpcError as exc:
                raise CycleError(self._splitter_failed("ProfileModel", exc)) from None
        return self._profiles[key]

    async def evaluate_current(self, problem: splitter_pb2.Problem) -> float:
        """Phi of d_t under E(t); inf when d_t cannot run as it stands (a node gone, full, ...)."""
        cost = await self.evaluate_cost(problem)
        return math.inf if cost is None else cost.phi

    async def evaluate_cost(self, problem: splitter_pb2.Problem) -> common_pb2.CostBreakdown | None:
        """The cost of d_t under ``problem``; None when d_t cannot run as it stands."""
        stub = splitter_pb2_grpc.SplitterServiceStub(self._splitter)
        request = splitter_pb2.SolveRequest(problem=problem, mode=splitter_pb2.SOLVE_MODE_EVALUATE)
        try:
            reply = await stub.Solve(request, timeout=self.settings.control_rpc_timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                return None
            raise CycleError(self._splitter_failed("EVALUATE", exc)) from None
        return reply.cost

    async def solve(self, problem: splitter_pb2.Problem, mode: str) -> Candidate:
        """One candidate mapping d' (PLACEMENT_ONLY or RESPLIT), or why there is none."""
        stub = splitter_pb2_grpc.SplitterServiceStub(self._splitter)
        request = splitter_pb2.SolveRequest(problem=problem, mode=MODES[mode])
        try:
            reply = await stub.Solve(request, timeout=self.settings.control_rpc_timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                return Candidate(mode, None, exc.details() or "infeasible")
            raise CycleError(self._splitter_failed(mode, exc)) from None
        plan = reply.plan
        plan.deployment = problem.current.deployment
        plan.reason = f"{mode}: {plan.reason}"
        return Candidate(mode, plan)

    def _splitter_failed(self, what: str, exc: grpc.aio.AioRpcError) -> str:
        return (
            f"splitter at {self.settings.splitter_address} failed ({what}): "
            f"{exc.code().name}: {exc.details()}"
        )


def measured_of(env: common_pb2.Environment) -> Measured:
    """Per-node utilization and per-link bandwidth from E(t), for decide's constraint check."""
    return Measured(
        utilization={m.node_id: node_utilization(m) for m in env.metrics},
        bandwidth_mbps={key: link.bandwidth_mbps for key, link in latest_links(env).items()},
    )
