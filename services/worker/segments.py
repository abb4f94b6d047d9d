"""Segments a worker hosts: LoadSegment's logic (reuse, trust checks, loading).

An untrusted worker refuses privacy-critical units twice: before anything is
loaded (from the request and config.json) and once the loaded model says where
its head really is. The same units of the same model loaded at another epoch
are re-filed under the new one, so preparing an unchanged segment costs nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from prometheus_client import Gauge

from resplit.core.emulation import EmulatedDevice
from resplit.v1 import worker_pb2

from .config import WorkerSettings
from .core.hosting import Hosted, Hosting
from .core.loading import decode_path, huge_page_share, load_hosted
from .core.privacy import check_trusted, ends_with_head

log = logging.getLogger(__name__)
#: transformers' model code: a family's modeling module, or the base classes every one imports.
MODELING = re.compile(r"^transformers\.(models\.[^.]+\.modeling_[^.]+|modeling_utils)$")
SEGMENTS = Gauge(
    "resplit_worker_segments",
    "Segments this worker hosts, by the code that runs them (lean: no transformers model code)",
    ["engine"],
)
MODELING_MODULES = Gauge(
    "resplit_worker_transformers_modeling_modules",
    "transformers' model-code modules imported in this process (0 while it hosts lean segments only)",
)
MODELING_MODULES.set_function(lambda: sum(1 for name in list(sys.modules) if MODELING.match(name)))


class Segments:
    """Loads segments on their own thread, so serving goes on meanwhile."""

    def __init__(
        self,
        hosting: Hosting,
        settings: WorkerSettings,
        device: torch.device,
        emulated: EmulatedDevice | None,
        on_change: Callable[[], None],
    ) -> None:
        self.hosting = hosting
        self.settings = settings
        self.device = device
        self.emulated = emulated
        #: Called after the hosted set changed (the node record lists it).
        self.on_change = on_change
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="loader")

    async def on_loader(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._loader, fn)

    async def load(self, request: worker_pb2.LoadSegmentRequest) -> worker_pb2.LoadSegmentResponse:
        """Host the request's units at its epoch, or raise why not (a WorkerError)."""
        start = time.perf_counter()
        units = request.units
        hosted = self.hosting.get(request.deployment, request.epoch, units.start, units.end)
        await self._check_request(request, hosted)  # before anything is loaded or re-filed
        if hosted is not None:  # never lower what an earlier load said
            hosted.private_depth = max(hosted.private_depth, request.private_depth)
        if hosted is None:
            hosted = self._reuse(request)
        if hosted is None:
            hosted = await self._load(request)
        self._changed()
        return worker_pb2.LoadSegmentResponse(
            param_bytes=hosted.param_bytes,
            load_ms=(time.perf_counter() - start) * 1e3,
            device=str(hosted.device),
        )

    def release(self, request: worker_pb2.ReleaseSegmentRequest) -> int:
        freed = self.hosting.release(
            request.deployment, request.epoch, request.units.start, request.units.end
        )
        self._changed()
        return freed

    def _changed(self) -> None:
        """The hosted set changed: the node record and the per-engine count follow."""
        engines: dict[str, int] = {}
        for hosted in self.hosting:
            engines[hosted.segment.engine] = engines.get(hosted.segment.engine, 0) + 1
        for engine in ("lean", "transformers", "emulated"):
            SEGMENTS.labels(engine).set(engines.get(engine, 0))
        self.on_change()

    async def _check_request(self, request: worker_pb2.LoadSegmentRequest, existing: Hosted | None) -> None:
        """NotTrusted if this (untrusted) worker is asked for privacy-critical units."""
        if self.settings.trusted:
            return
        units, depth = request.units, request.private_depth
        if existing is not None:
            has_head, depth = existing.segment.has_head, max(depth, existing.private_depth)
        else:  # config.json only, on the loader thread; the weights are not touched
            has_head = await self.on_loader(lambda: ends_with_head(request.model_dir, units.end))
        check_trusted(False, request.deployment, units.start, units.end, depth, has_head)

    async def _load(self, request: worker_pb2.LoadSegmentRequest) -> Hosted:
        settings = self.settings
        hosted = await self.on_loader(
            lambda: load_hosted(
                request.deployment,
                request.epoch,
                request.units.start,
                request.units.end,
                request.model_dir,
                request.dtype,
                request.compression,
                self.device,
                self.emulated,
                settings.lean_decode,
                settings.huge_pages,
                request.weights,
                _sources(request),
            )
        )
        hosted.private_depth = request.private_depth
        # The model itself says where its head is; config.json may have been unclear.
        check_trusted(
            settings.trusted,
            request.deployment,
            hosted.start,
            hosted.end,
            hosted.private_depth,
            hosted.segment.has_head,
        )
        self.hosting.add(hosted)
        log.info(
            "loaded %s epoch %d units [%d, %d): %.1f MB (%s); engine %s; decode steps %s",
            request.deployment,
            request.epoch,
            hosted.start,
            hosted.end,
            hosted.param_bytes / 1e6,
            huge_page_share(hosted.segment),
            hosted.segment.engine,
            decode_path(hosted.segment),
        )
        return hosted

    def _reuse(self, request: worker_pb2.LoadSegmentRequest) -> Hosted | None:
        """The same units of the same model loaded at another epoch, re-filed under this one:
        preparing an unchanged segment costs nothing and both epochs share the weights."""
        same = self.hosting.same_weights(
            request.deployment,
            request.units.start,
            request.units.end,
            request.model_dir,
            request.dtype,
            request.weights,
            tuple(sorted(_sources(request).items())),
        )
        if same is None or request.epoch < 1:
            return None
        hosted = dataclasses.replace(
            same,
            epoch=request.epoch,
            compression=request.compression,
            sessions=0,
            private_depth=request.private_depth,
        )
        self.hosting.add(hosted)
        log.info(
            "%s epoch %d units [%d, %d): weights shared with epoch %d",
            request.deployment,
            request.epoch,
            hosted.start,
            hosted.end,
            same.epoch,
        )
        return hosted

    def close(self) -> None:
        self._loader.shutdown(wait=False, cancel_futures=True)


def _sources(request: worker_pb2.LoadSegmentRequest) -> dict[int, str]:
    """The request's swapped blocks inside its units: block unit -> checkpoint directory."""
    units = request.units
    return {s.unit: s.model_dir for s in request.unit_sources if units.start <= s.unit < units.end}
