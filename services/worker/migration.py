"""Live migration, the worker's side: pull a session's cache when it opens here.

A session crossing to a new epoch opens on every new hop with the old
route's hops in ``migrate_from``. Each new hop pulls the layers of its units
from the old hops that ran them: from its own session table when the old
segment was on this very worker (no copy, no socket), else with
ExportSession on the old worker. Whatever goes wrong is a MigrationFailed
(FAILED_PRECONDITION) for this session only; the client then replays the
token history instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import grpc
from prometheus_client import Counter, Histogram

from resplit.models.kv import KvError, LayerKV, export_layers, import_layers
from resplit.v1 import worker_pb2

from .core.errors import MigrationFailed, NotHosted
from .core.migration import Collector, Source, chunks_of, sources
from .core.sessions import Session, SessionTable
from .streams import Channels

log = logging.getLogger(__name__)

SESSIONS_MIGRATED = Counter(
    "resplit_sessions_migrated_total", "Session segments whose cache moved to this worker", ["path"]
)
MIGRATION_BYTES = Counter("resplit_migration_bytes_total", "KV cache bytes imported by live migration")
MIGRATION_SECONDS = Histogram(
    "resplit_migration_seconds",
    "Time to pull and install one session segment's cache",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def blocks_of(start: int, end: int, num_blocks: int) -> range:
    """Global block indexes run by units [start, end)."""
    return range(max(start, 1) - 1, min(end, num_blocks + 1) - 1)


class Migrator:
    def __init__(
        self, sessions: SessionTable, channels: Channels, node_id: str, chunk_bytes: int, timeout_s: float
    ) -> None:
        self.sessions = sessions
        self.channels = channels
        self.node_id = node_id
        self.chunk_bytes = chunk_bytes
        self.timeout_s = timeout_s

    # -- export (old hop) ------------------------------------------------------
    def export(self, request: worker_pb2.ExportSessionRequest) -> list[LayerKV]:
        """The layers of ``request.units`` of a session open here at ``request.epoch``."""
        held = self.sessions.sessions_of(request.session_id, request.deployment, request.epoch)
        if not held:
            raise NotHosted(
                f"unknown session {request.session_id!r} of {request.deployment!r} at epoch {request.epoch}"
            )
        layers: list[LayerKV] = []
        for session in held:
            segment = session.hosted.segment
            blocks = blocks_of(request.units.start, request.units.end, segment.num_blocks_total)
            layers += export_layers(segment, session.state, blocks)
        return layers

    async def stream(self, request: worker_pb2.ExportSessionRequest) -> AsyncIterator[worker_pb2.KvChunk]:
        for layer in self.export(request):
            for chunk in chunks_of(
                layer, request.deployment, request.session_id, request.epoch, self.chunk_bytes
            ):
                yield chunk

    # -- import (new hop) ------------------------------------------------------
    async def pull(self, session: Session, request: worker_pb2.OpenSession) -> None:
        """Fill ``session`` (just opened here) with its cache from the old route."""
        started = time.perf_counter()
        hosted = session.hosted
        layers: list[LayerKV] = []
        paths = set()
        for source in sources(hosted.start, hosted.end, request.migrate_from):
            if source.hop.node_id == self.node_id:
                layers += self._local(request, source)
                paths.add("local")
            else:
                layers += await self._remote(request, source)
                paths.add("remote")
        try:
            moved = import_layers(hosted.segment, session.state, layers, request.context_tokens)
        except KvError as exc:
            raise MigrationFailed(f"cannot migrate session {request.session_id!r}: {exc}") from None
        for path in paths:
            SESSIONS_MIGRATED.labels(path).inc()
        MIGRATION_BYTES.inc(moved)
        MIGRATION_SECONDS.observe(time.perf_counter() - started)
        log.info(
            "session %s: units [%d, %d) moved to epoch %d (%d layers, %.1f kB, %s)",
            request.session_id,
            hosted.start,
            hosted.end,
            hosted.epoch,
            len(layers),
            moved / 1e3,
            "+".join(sorted(paths)) or "no cache",
        )

    def _export_request(
        self, request: worker_pb2.OpenSession, source: Source
    ) -> worker_pb2.ExportSessionRequest:
        return worker_pb2.ExportSessionRequest(
            deployment=request.deployment,
            session_id=request.session_id,
            epoch=request.migrate_epoch,
            units={"start": source.start, "end": source.end},
        )

    def _local(self, request: worker_pb2.OpenSession, source: Source) -> list[LayerKV]:
        try:
            return self.export(self._export_request(request, source))
        except NotHosted as exc:
            raise MigrationFailed(f"cannot migrate session {request.session_id!r}: {exc}") from None

    async def _remote(self, request: worker_pb2.OpenSession, source: Source) -> list[LayerKV]:
        collector = Collector(request.session_id, max_bytes=1 << 34)
        stub = self.channels.stub(source.hop.address)
        try:
            call = stub.ExportSession(self._export_request(request, source), timeout=self.timeout_s)
            async for chunk in call:
                collector.add(chunk)
        except grpc.aio.AioRpcError as exc:
            where = f"{source.hop.node_id} ({source.hop.address})"
            raise MigrationFailed(
                f"cannot migrate session {request.session_id!r}: old hop {where} answered "
                f"{exc.code().name}: {exc.details()}"
            ) from None
        return collector.layers()
