"""The Redis state store: everything services share lives here.

Services hold nothing they cannot rebuild from Redis and the workers, so this
wrapper is the only place that talks to Redis. Values are serialized protobuf
messages. Connection loss is retried with exponential backoff by redis-py's own
asyncio ``Retry`` (never a refused password: retrying cannot fix it); callers that
must not block on Redis (the data plane) call with a timeout or check :meth:`ping`
first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, RedisError, WatchError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..config import redact_url
from ..v1 import broadcaster_pb2, common_pb2
from . import keys

T = TypeVar("T")

#: Connections one store keeps to Redis at most (each service has one store; a worker two).
MAX_CONNECTIONS = 16
#: How long a command waits for a free connection of the pool before it fails (a RedisError).
POOL_WAIT_S = 10.0

# Store a plan only if its epoch is above the committed one: epochs only go up.
_PUT_PLAN = """
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
local epoch = tonumber(ARGV[1])
if epoch <= current then return current end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
local counter = tonumber(redis.call('GET', KEYS[3]) or '0')
if counter < epoch then redis.call('SET', KEYS[3], ARGV[1]) end
return 0
"""

# Next epoch: above both the counter and the committed epoch, so a counter lost
# in a Redis restart (but re-seeded from a plan) never hands out an old epoch.
_NEXT_EPOCH = """
local counter = tonumber(redis.call('GET', KEYS[1]) or '0')
local committed = tonumber(redis.call('GET', KEYS[2]) or '0')
local floor = tonumber(ARGV[1])
local nxt = math.max(counter, committed, floor) + 1
redis.call('SET', KEYS[1], nxt)
return nxt
"""


def _stream_id(entry_id: str) -> tuple[int, int]:
    """A Redis stream id ``ms-seq`` as a number pair, to order ids."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _transient(error: Exception) -> bool:
    """A refused password is a ``ConnectionError`` too, but no retry will fix it."""
    return not isinstance(error, AuthenticationError)


class ConnectionRetry(Retry):
    """redis-py's asyncio ``Retry`` for dropped connections and timeouts, never for a
    refused password.

    redis-py retries the whole connect-and-authenticate handshake with it, so a wrong
    password would otherwise be retried with backoff and reported late. The filter is
    passed per call (``is_retryable``), which redis-py 8.1 and 8.2 both accept.
    """

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        def retryable(error: Exception) -> bool:
            return _transient(error) and (is_retryable is None or is_retryable(error))

        return await super().call_with_retry(do, fail, retryable, with_failure_count)


class StaleEpochError(ValueError):
    """A plan's epoch is not above the committed epoch of its deployment."""

    def __init__(self, deployment: str, epoch: int, committed: int) -> None:
        super().__init__(
            f"plan for {deployment!r} has epoch {epoch}, but epoch {committed} is already committed; "
            "epochs only increase"
        )
        self.committed = committed


class RouteWatch:
    """Routes published on one deployment's channel, from a subscription already made."""

    def __init__(self, client: aioredis.Redis, pubsub: Any) -> None:
        self._client = client
        self._pubsub = pubsub

    def __aiter__(self) -> AsyncIterator[common_pb2.Route]:
        return self._routes()

    async def _routes(self) -> AsyncIterator[common_pb2.Route]:
        async for message in self._pubsub.listen():
            if message.get("type") == "message":
                yield common_pb2.Route.FromString(message["data"])

    async def aclose(self) -> None:
        await self._pubsub.aclose()
        await self._client.aclose()


class StateStore:
    """Async access to resplit's shared state in Redis."""

    def __init__(
        self,
        url: str,
        *,
        socket_timeout_s: float = 2.0,
        retries: int = 3,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.url = url
        self.retries = retries
        self._backoff = ExponentialBackoff(cap=1.0, base=0.05)
        self._options: dict[str, Any] = {
            "socket_timeout": socket_timeout_s,
            "socket_connect_timeout": socket_timeout_s,
            "retry": ConnectionRetry(self._backoff, retries),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError],
            "health_check_interval": 5,
        }
        # A bounded pool: callers beyond it wait for a connection (up to POOL_WAIT_S) instead
        # of opening more. redis-py's default pool has no bound and keeps every connection it
        # ever opened: under the soak's bursts (32 clients' GetRoutes piling up while Redis
        # restarted) the orchestrator's grew to 31 more sockets, and Redis's file count with it.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=POOL_WAIT_S, **self._options
        )
        self.redis = aioredis.Redis.from_pool(pool)
        self._put_plan = self.redis.register_script(_PUT_PLAN)
        self._next_epoch = self.redis.register_script(_NEXT_EPOCH)

    async def close(self) -> None:
        await self.redis.aclose()

    async def _transact(self, build: Callable[[Any], None]) -> None:
        """One MULTI/EXEC of idempotent writes (``build`` queues them on the pipeline),
        retried on a dropped connection as single commands are: redis-py retries a
        pipeline only on a timeout, and after Redis restarts every pooled connection it
        closed fails the first pipeline that draws it ("Connection closed by server")."""
        for attempt in range(self.retries + 1):
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    build(pipe)
                    await pipe.execute()
                return
            except RedisConnectionError:
                if attempt == self.retries:
                    raise
                await asyncio.sleep(self._backoff.compute(attempt + 1))

    async def ping(self) -> tuple[bool, str]:
        """(reachable, reason) without raising."""
        try:
            await self.redis.ping()
        except RedisError as exc:
            return False, f"redis unreachable at {redact_url(self.url)}: {exc}"
        return True, "redis reachable"

    # -- node registry -----------------------------------------------------
    async def register_node(self, node: common_pb2.Node, ttl_s: float) -> None:
        """Write the node's record and start its heartbeat TTL."""
        node.last_heartbeat = time.time()
        node.state = common_pb2.NODE_STATE_UNSPECIFIED  # derived on read, never stored
        raw, alive_ms = node.SerializeToString(), int(ttl_s * 1000)

        def write(pipe) -> None:
            pipe.sadd(keys.nodes(), node.node_id)
            pipe.set(keys.node(node.node_id), raw)
            pipe.set(keys.node_alive(node.node_id), str(node.last_heartbeat), px=alive_ms)
            pipe.set(keys.registry_since(), str(node.last_heartbeat), nx=True)

        await self._transact(write)

    async def registry_age_s(self) -> float:
        """Seconds since the registry took its first node after Redis last started empty;
        0.0 while it holds none."""
        since = await self.redis.get(keys.registry_since())
        return 0.0 if since is None else max(time.time() - float(since), 0.0)

    async def heartbeat(self, node_id: str, ttl_s: float) -> bool:
        """Refresh the TTL. False means the record is gone (e.g. Redis restarted
        empty) and the node must register again."""
        if not await self.redis.exists(keys.node(node_id)):
            return False
        await self.redis.set(keys.node_alive(node_id), str(time.time()), px=int(ttl_s * 1000))
        return True

    async def mark_down(self, node_id: str) -> None:
        """End the heartbeat now (graceful shutdown): the node reads DOWN at once."""
        await self.redis.delete(keys.node_alive(node_id))

    async def deregister_node(self, node_id: str) -> None:
        def write(pipe) -> None:
            pipe.srem(keys.nodes(), node_id)
            pipe.delete(keys.node(node_id), keys.node_alive(node_id))

        await self._transact(write)

    async def list_nodes(self, include_down: bool = True) -> list[common_pb2.Node]:
        """Every registered node, UP while its heartbeat key lives, else DOWN."""
        ids = sorted(m.decode() for m in await self.redis.smembers(keys.nodes()))
        if not ids:
            return []
        records = await self.redis.mget([keys.node(node_id) for node_id in ids])
        beats = await self.redis.mget([keys.node_alive(node_id) for node_id in ids])
        out = []
        for record, alive in zip(records, beats, strict=True):
            if record is None:
                continue
            node = common_pb2.Node.FromString(record)
            if alive is not None:
                node.state = common_pb2.NODE_STATE_UP
                node.last_heartbeat = float(alive)
            else:
                node.state = common_pb2.NODE_STATE_DOWN
            if include_down or node.state == common_pb2.NODE_STATE_UP:
                out.append(node)
        return out

    # -- telemetry time series (E(t)) ----------------------------------------
    # Each series is a Redis stream trimmed by age (XADD MINID, exact: approximate
    # trimming never trims a small stream): retention is a time span, whatever the
    # reporting rate. The latest value sits beside it, so E(t) is assembled with
    # one round trip per kind.
    @staticmethod
    def _min_id(retention_s: float) -> str:
        return str(max(int((time.time() - retention_s) * 1000), 0))

    async def put_metrics(self, report: common_pb2.NodeMetrics, retention_s: float) -> None:
        raw = report.SerializeToString()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.metrics_latest(report.node_id), raw, px=int(retention_s * 1000))
            pipe.xadd(
                keys.metrics_series(report.node_id),
                {"m": raw},
                minid=self._min_id(retention_s),
                approximate=False,
            )
            await pipe.execute()

    async def latest_metrics(self, node_ids: list[str]) -> dict[str, common_pb2.NodeMetrics]:
        if not node_ids:
            return {}
        raws = await self.redis.mget([keys.metrics_latest(n) for n in node_ids])
        return {n: common_pb2.NodeMetrics.FromString(r) for n, r in zip(node_ids, raws, strict=True) if r}

    async def metrics_history(self, node_id: str, since: float = 0.0) -> list[common_pb2.NodeMetrics]:
        """Reports of ``node_id`` since unix time ``since``, oldest first."""
        rows = await self.redis.xrange(keys.metrics_series(node_id), min=str(int(since * 1000)))
        return [common_pb2.NodeMetrics.FromString(fields[b"m"]) for _, fields in rows]

    async def put_links(self, src: str, links: list[common_pb2.Link], retention_s: float) -> None:
        """Replace the latest estimates of the links out of ``src`` and append each to its series."""
        bundle = common_pb2.Environment(timestamp=time.time(), links=links)
        min_id = self._min_id(retention_s)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.links_from(src), bundle.SerializeToString(), px=int(retention_s * 1000))
            for link in links:
                pipe.xadd(
                    keys.link_series(link.src, link.dst),
                    {"l": link.SerializeToString()},
                    minid=min_id,
                    approximate=False,
                )
            await pipe.execute()

    async def list_links(self, node_ids: list[str], max_age_s: float = 0.0) -> list[common_pb2.Link]:
        """Latest estimate of every directed link out of ``node_ids`` (younger than
        ``max_age_s`` when > 0)."""
        if not node_ids:
            return []
        raws = await self.redis.mget([keys.links_from(n) for n in node_ids])
        floor = time.time() - max_age_s if max_age_s > 0 else float("-inf")
        found = []
        for raw in raws:
            if raw:
                found.extend(x for x in common_pb2.Environment.FromString(raw).links if x.timestamp >= floor)
        return found

    async def link_history(self, src: str, dst: str, since: float = 0.0) -> list[common_pb2.Link]:
        rows = await self.redis.xrange(keys.link_series(src, dst), min=str(int(since * 1000)))
        return [common_pb2.Link.FromString(fields[b"l"]) for _, fields in rows]

    async def put_latency(
        self, deployment: str, sample_ms: float, ewma_ms: float, retention_s: float, signal: str = "request"
    ) -> None:
        await self.put_latencies([(deployment, signal, sample_ms, ewma_ms)], retention_s)

    async def put_latencies(self, rows: list[tuple[str, str, float, float]], retention_s: float) -> None:
        """(deployment, signal, sample ms, EWMA ms) rows: each sample appended to its
        deployment's series, each EWMA's last value kept; one round trip for them all."""
        if not rows:
            return
        ewmas = {keys.latency_field(deployment, signal): repr(ewma) for deployment, signal, _, ewma in rows}
        minid = self._min_id(retention_s)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(keys.latency_ewma(), mapping=ewmas)
            for deployment, signal, sample_ms, _ in rows:
                pipe.xadd(
                    keys.latency_series(deployment),
                    {"ms": repr(sample_ms), "s": signal},
                    minid=minid,
                    approximate=False,
                )
            await pipe.execute()

    async def put_first_hop_latency(
        self, samples: list[tuple[str, str, float, float]], retention_s: float
    ) -> None:
        """A first hop's (deployment, signal, ms, unix time) samples, for the monitor to fold."""
        if not samples:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for deployment, signal, ms, t in samples:
                pipe.xadd(
                    keys.first_hop_latency(),
                    {"d": deployment, "s": signal, "ms": repr(ms), "t": repr(t)},
                    minid=self._min_id(retention_s),
                    approximate=True,
                )
            await pipe.execute()

    async def first_hop_latency(
        self, after: str, count: int = 10_000
    ) -> tuple[list[tuple[str, str, float, float]], str]:
        """First-hop samples after stream id ``after`` (``"0"``: all), and the last id read."""
        rows = await self.redis.xrange(keys.first_hop_latency(), min=f"({after}", count=count)
        samples = [(f[b"d"].decode(), f[b"s"].decode(), float(f[b"ms"]), float(f[b"t"])) for _, f in rows]
        return samples, (rows[-1][0].decode() if rows else after)

    async def latency_ewma(self) -> dict[str, float]:
        raw = await self.redis.hgetall(keys.latency_ewma())
        return {k.decode(): float(v) for k, v in raw.items()}

    async def put_environment(self, env: common_pb2.Environment, keep: int) -> None:
        """Append an E(t) snapshot, keeping about the last ``keep`` (snapshots repeat the
        metric and link series, so they are capped by count, not only by age)."""
        await self.redis.xadd(
            keys.environment_series(), {"e": env.SerializeToString()}, maxlen=keep, approximate=True
        )

    async def environment_history(self, since: float = 0.0) -> list[common_pb2.Environment]:
        rows = await self.redis.xrange(keys.environment_series(), min=str(int(since * 1000)))
        return [common_pb2.Environment.FromString(fields[b"e"]) for _, fields in rows]

    # -- deployments and plans --------------------------------------------
    async def put_deployment(self, deployment: common_pb2.Deployment) -> None:
        raw = deployment.SerializeToString()

        def write(pipe) -> None:
            pipe.sadd(keys.deployments(), deployment.name)
            pipe.set(keys.deployment(deployment.name), raw)

        await self._transact(write)

    async def get_deployment(self, name: str) -> common_pb2.Deployment | None:
        raw = await self.redis.get(keys.deployment(name))
        return None if raw is None else common_pb2.Deployment.FromString(raw)

    async def list_deployments(self) -> list[common_pb2.Deployment]:
        names = sorted(m.decode() for m in await self.redis.smembers(keys.deployments()))
        found = [await self.get_deployment(name) for name in names]
        return [d for d in found if d is not None]

    async def delete_deployment(self, name: str) -> None:
        """Forget a deployment and its plan; its epoch counters stay, so epochs never repeat."""

        def write(pipe) -> None:
            pipe.srem(keys.deployments(), name)
            pipe.delete(keys.deployment(name), keys.plan(name))

        await self._transact(write)

    async def next_epoch(self, deployment: str, floor: int = 0) -> int:
        """A fresh epoch for ``deployment``: above every epoch seen so far and ``floor``."""
        return int(
            await self._next_epoch(
                keys=[keys.epoch_counter(deployment), keys.committed_epoch(deployment)], args=[floor]
            )
        )

    async def put_plan(self, plan: common_pb2.Plan) -> None:
        """Commit ``plan`` atomically; raises :class:`StaleEpochError` unless its
        epoch is above the committed one."""
        committed = int(
            await self._put_plan(
                keys=[
                    keys.plan(plan.deployment),
                    keys.committed_epoch(plan.deployment),
                    keys.epoch_counter(plan.deployment),
                ],
                args=[plan.epoch, plan.SerializeToString()],
            )
        )
        if committed:
            raise StaleEpochError(plan.deployment, plan.epoch, committed)

    async def get_plan(self, deployment: str) -> common_pb2.Plan | None:
        raw = await self.redis.get(keys.plan(deployment))
        return None if raw is None else common_pb2.Plan.FromString(raw)

    # -- rollouts ----------------------------------------------------------
    async def put_rollout(self, status: broadcaster_pb2.RolloutStatus) -> None:
        """Record the latest rollout of ``status.deployment`` (it outlives a
        broadcaster restart and an undeploy, like the epoch counter)."""
        await self.redis.set(keys.rollout(status.deployment), status.SerializeToString())

    async def get_rollout(self, deployment: str) -> broadcaster_pb2.RolloutStatus | None:
        raw = await self.redis.get(keys.rollout(deployment))
        return None if raw is None else broadcaster_pb2.RolloutStatus.FromString(raw)

    # -- decision log ------------------------------------------------------
    async def append_event(self, event: common_pb2.DecisionEvent, max_len: int = 10_000) -> str:
        """Append to the deployment's decision stream; returns the stream id."""
        entry_id = await self.redis.xadd(
            keys.events(event.deployment),
            {"event": event.SerializeToString()},
            maxlen=max_len,
            approximate=True,
        )
        return entry_id.decode()

    async def read_events(self, deployment: str, limit: int = 100) -> list[common_pb2.DecisionEvent]:
        """The ``limit`` most recent events, oldest first, with the measured latency
        recorded after each change (:meth:`put_measured_latency`) merged in."""
        rows = list(reversed(await self.redis.xrevrange(keys.events(deployment), count=limit)))
        events = [common_pb2.DecisionEvent.FromString(fields[b"event"]) for _, fields in rows]
        if rows:
            measured = await self.redis.hmget(keys.measured_latency(deployment), [i for i, _ in rows])
            for event, value in zip(events, measured, strict=True):
                if value is not None:
                    event.measured_latency_ms = float(value)
        return events

    async def events_after(self, deployment: str, after: str | None, limit: int) -> list[tuple[str, bytes]]:
        """(stream id, serialized event) of the decision log, oldest first: the newest
        ``limit`` with ``after`` None, else from ``after`` on, ``after`` itself included
        when the stream still holds it (so a caller tells a stream that lost it)."""
        if after is None:
            rows = list(reversed(await self.redis.xrevrange(keys.events(deployment), count=limit)))
        else:
            rows = await self.redis.xrange(keys.events(deployment), min=after, count=limit + 1)
        return [(row_id.decode(), fields[b"event"]) for row_id, fields in rows]

    async def measured_latencies(self, deployment: str, ids: list[str]) -> dict[str, float]:
        """The measured latency recorded for each of ``ids`` that has one."""
        if not ids:
            return {}
        values = await self.redis.hmget(keys.measured_latency(deployment), ids)
        return {i: float(v) for i, v in zip(ids, values, strict=True) if v is not None}

    async def restore_events(
        self, deployment: str, kept: list[tuple[str, bytes]], measured: dict[str, float]
    ) -> bool:
        """Write ``kept`` (oldest first, with their stream ids) back in front of whatever the
        decision log holds now (events appended since Redis lost it), with their measured
        latencies. One transaction, watched: False (nothing written) when an event was
        appended meanwhile, so the caller tries again with a fresh read."""
        key = keys.events(deployment)
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                newer = [(i.decode(), f[b"event"]) for i, f in await pipe.xrange(key)]
                kept_ids = {i for i, _ in kept}
                pipe.multi()
                pipe.delete(key)
                last: tuple[int, int] | None = (0, 0)
                for entry_id, raw in kept + [(i, raw) for i, raw in newer if i not in kept_ids]:
                    # From an id at or below the last written on (a clock gone back), new ids.
                    if last is not None and _stream_id(entry_id) <= last:
                        last = None
                    pipe.xadd(key, {"event": raw}, id=entry_id if last is not None else "*")
                    last = _stream_id(entry_id) if last is not None else None
                if measured:
                    values = {i: repr(v) for i, v in measured.items()}
                    pipe.hset(keys.measured_latency(deployment), mapping=values)
                await pipe.execute()
            except WatchError:
                return False
        return True

    # -- control loop: t_last and measured latency after a change ------------
    async def record_change(self, deployment: str, at: float, event_id: str) -> None:
        """Remember t_last (Alg. 1) and the event of the change, whose latency is not measured yet."""
        await self.redis.hset(
            keys.last_change(deployment), mapping={"at": repr(at), "event": event_id, "measured": "0"}
        )

    async def last_change(self, deployment: str) -> tuple[float, str, bool] | None:
        """(t_last, event id, measured yet) of the last applied change, or None."""
        raw = await self.redis.hgetall(keys.last_change(deployment))
        if b"at" not in raw:
            return None
        return float(raw[b"at"]), raw.get(b"event", b"").decode(), raw.get(b"measured") == b"1"

    async def put_measured_latency(self, deployment: str, event_id: str, latency_ms: float) -> None:
        """The latency measured after the change of ``event_id``; read_events merges it in."""

        def write(pipe) -> None:
            pipe.hset(keys.measured_latency(deployment), event_id, repr(latency_ms))
            pipe.hset(keys.last_change(deployment), "measured", "1")

        await self._transact(write)

    async def latency_samples(
        self, deployment: str, since: float = 0.0, signal: str | None = None
    ) -> list[float]:
        """Latency samples (ms) of ``deployment`` reported since unix time ``since``: of one
        signal (``ttft``, ``tpot``, ``request``: a sample without one is a request's), or all."""
        rows = await self.redis.xrange(keys.latency_series(deployment), min=str(int(since * 1000) + 1))
        return [
            float(fields[b"ms"])
            for _, fields in rows
            if signal is None or fields.get(b"s", b"request").decode() == signal
        ]

    # -- route publication -------------------------------------------------
    async def publish_route(self, route: common_pb2.Route) -> int:
        """Tell subscribers about a committed route; returns how many got it."""
        return int(await self.redis.publish(keys.route_channel(route.deployment), route.SerializeToString()))

    async def watch_routes(self, deployment: str) -> RouteWatch:
        """A subscription to ``deployment``'s published routes, in place when this returns.

        Why subscribed before it returns: a watcher reads the current plan and then waits
        for newer routes; subscribed only once it starts waiting, a route published in
        between was lost to it (and its client kept the old route until the next change).
        Iterate it for the routes; ``aclose`` it when done."""
        # Its own connection, outside the bounded pool: a subscription holds one for as long
        # as it lasts, and watchers must not starve the pool's short commands.
        client = aioredis.Redis.from_url(self.url, **self._options)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(keys.route_channel(deployment))
        except BaseException:
            await pubsub.aclose()
            await client.aclose()
            raise
        return RouteWatch(client, pubsub)
