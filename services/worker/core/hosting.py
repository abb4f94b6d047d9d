"""The segments this worker hosts, per deployment and epoch.

Rollout is two-phase: a segment is loaded for an epoch (prepare) while the
deployment still serves its active epoch, and the epoch flips on commit.
New sessions open on the active epoch, or on an older one still loaded here
(draining: a client that fetched its route just before the commit); those
sessions learn the newer epoch from their first token and move. A worker
that hosts nothing of a committed epoch still learns that it exists
(``latest_epoch``), so the sessions it serves are told to move too. The same
units of the same model at two epochs share one set of weights: an unchanged
segment costs nothing to prepare.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from resplit.models import Segment
from resplit.v1 import common_pb2

from .errors import NotHosted, StaleEpoch

Key = tuple[str, int, int, int]


@dataclass
class Hosted:
    """One loaded segment of one deployment at one epoch."""

    deployment: str
    epoch: int
    start: int
    end: int
    segment: Segment
    model_dir: str
    compression: int
    dtype: torch.dtype
    device: torch.device
    generative: bool
    hidden_size: int
    sessions: int = 0
    #: The deployment's private depth as LoadSegment said (units 0..private_depth are critical).
    private_depth: int = 0
    #: The weight format the segment was quantized to at load (``resplit.core.weights``).
    weights: str = "fp32"
    #: (block unit, directory) of the blocks read from another checkpoint (swapped layers).
    sources: tuple[tuple[int, str], ...] = ()

    @property
    def key(self) -> Key:
        return (self.deployment, self.epoch, self.start, self.end)

    @property
    def param_bytes(self) -> int:
        return self.segment.param_bytes()


class Hosting:
    def __init__(self) -> None:
        self._segments: dict[Key, Hosted] = {}
        self._active: dict[str, int] = {}
        self._latest: dict[str, int] = {}
        #: The route of each deployment's latest epoch, as its commit announced it.
        self._routes: dict[str, common_pb2.Route] = {}

    def __iter__(self):
        return iter(list(self._segments.values()))

    def get(self, deployment: str, epoch: int, start: int, end: int) -> Hosted | None:
        return self._segments.get((deployment, epoch, start, end))

    def add(self, hosted: Hosted) -> None:
        self._segments[hosted.key] = hosted

    def same_weights(
        self,
        deployment: str,
        start: int,
        end: int,
        model_dir: str,
        dtype_name: str,
        weights: str = "",
        sources: tuple[tuple[int, str], ...] = (),
    ):
        """A segment of these units of this model already loaded at another epoch, in the
        same dtype and weight format, with the same blocks swapped, if any."""
        wanted = (deployment, start, end, model_dir, weights or "fp32", sources)
        for hosted in self._segments.values():
            if (
                hosted.deployment,
                hosted.start,
                hosted.end,
                hosted.model_dir,
                hosted.weights,
                hosted.sources,
            ) == wanted and (not dtype_name or str(hosted.dtype) == f"torch.{dtype_name}"):
                return hosted
        return None

    def active_epoch(self, deployment: str) -> int:
        return self._active.get(deployment, 0)

    def latest_epoch(self, deployment: str) -> int:
        """The newest epoch of ``deployment`` this worker has heard of."""
        return max(self._latest.get(deployment, 0), self.active_epoch(deployment))

    def epoch_for(self, deployment: str, session_epoch: int) -> int:
        """The newest epoch to tell a session running on ``session_epoch``: the latest,
        except for a session that began before the last change of layer weights when
        that change drains (SESSION_POLICY_DRAIN): it is told of nothing newer, so it
        finishes on its epoch with the weights it began with."""
        route = self._routes.get(deployment)
        if route is not None and route.HasField("layers"):
            change = route.layers
            if session_epoch < change.epoch and change.sessions != common_pb2.SESSION_POLICY_REPLAY:
                return session_epoch
        return self.latest_epoch(deployment)

    def route(self, deployment: str) -> common_pb2.Route | None:
        """The route of the newest epoch this worker has heard of, when its commit said it."""
        return self._routes.get(deployment)

    def commit(self, deployment: str, epoch: int, route: common_pb2.Route | None = None) -> None:
        """Make ``epoch`` the one new sessions use here (if this worker hosts part of it);
        either way remember it as the deployment's latest, with its ``route``, which a
        first hop hands to the sessions it serves. Epochs never go back."""
        current = self.active_epoch(deployment)
        if epoch < current:
            raise StaleEpoch(
                f"cannot commit epoch {epoch} of {deployment!r}: epoch {current} is already active"
            )
        if epoch >= self._latest.get(deployment, 0) and route is not None and route.hops:
            self._routes[deployment] = route
        self._latest[deployment] = max(self._latest.get(deployment, 0), epoch)
        if any(k[0] == deployment and k[1] == epoch for k in self._segments):
            self._active[deployment] = epoch

    def release(self, deployment: str, epoch: int, start: int, end: int) -> int:
        """Forget a segment; returns the parameter bytes freed."""
        hosted = self._segments.pop((deployment, epoch, start, end), None)
        if hosted is None:
            raise NotHosted(f"units [{start}, {end}) of {deployment!r} epoch {epoch} are not hosted here")
        if any(other.segment is hosted.segment for other in self._segments.values()):
            return 0  # the weights stay: another epoch shares them
        return hosted.param_bytes

    def for_session(self, deployment: str, epoch: int, start: int, end: int) -> Hosted:
        """The segment a new session on this hop runs, or why there is none."""
        if not any(k[0] == deployment for k in self._segments):
            raise NotHosted(f"deployment {deployment!r} is not hosted on this worker")
        active = self.active_epoch(deployment)
        loaded = epoch < active and any(k[0] == deployment and k[1] == epoch for k in self._segments)
        if epoch != active and not loaded:
            raise StaleEpoch(f"stale epoch {epoch} for {deployment!r}: this worker serves epoch {active}")
        hosted = self.get(deployment, epoch, start, end)
        if hosted is None:
            here = ", ".join(
                f"[{k[2]}, {k[3]})" for k in self._segments if k[0] == deployment and k[1] == epoch
            )
            where = f"units [{start}, {end}) of {deployment!r} epoch {epoch}"
            raise NotHosted(f"{where} are not hosted here (hosted: {here or 'none'})")
        return hosted
