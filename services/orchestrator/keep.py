"""The orchestrator's memory of Redis on its own disk (``--memory-file``).

Why: the orchestrator's memory (memory.py) is what gives Redis back its deployments and
plans after Redis restarts empty, but it lived only in the process: an orchestrator
restarted while Redis was empty (or before its first read after a restart) had nothing
to give back, and every deployment was gone for good (the 10-minute soak of 04:24 UTC:
restarted at 398 s, Redis emptied at 400 s, 26,206 requests then refused "has no
plan"). With a file, what the orchestrator knew survives its own restart too: it is
read at start and rewritten (to a new file, then renamed over the old) whenever the
deployments, plans, epochs or tombstones it knows change. The decision log is not in
it (it is large, and only history).
"""

from __future__ import annotations

import base64
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from resplit.v1 import common_pb2

log = logging.getLogger(__name__)


@dataclass
class Kept:
    deployments: dict[str, common_pb2.Deployment] = field(default_factory=dict)
    plans: dict[str, common_pb2.Plan] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)
    forgotten: set[str] = field(default_factory=set)


def _b64(message) -> str:
    return base64.b64encode(message.SerializeToString()).decode()


def encode(kept: Kept) -> str:
    return json.dumps(
        {
            "deployments": {n: _b64(d) for n, d in sorted(kept.deployments.items())},
            "plans": {n: _b64(p) for n, p in sorted(kept.plans.items())},
            "epochs": dict(sorted(kept.epochs.items())),
            "forgotten": sorted(kept.forgotten),
        }
    )


def decode(text: str) -> Kept:
    raw = json.loads(text)
    return Kept(
        {n: common_pb2.Deployment.FromString(base64.b64decode(v)) for n, v in raw["deployments"].items()},
        {n: common_pb2.Plan.FromString(base64.b64decode(v)) for n, v in raw["plans"].items()},
        {n: int(v) for n, v in raw["epochs"].items()},
        set(raw["forgotten"]),
    )


class MemoryFile:
    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self._written = ""

    def load(self) -> Kept:
        """What the file holds (nothing when there is none, or it cannot be read: logged)."""
        if self.path is None or not self.path.exists():
            return Kept()
        try:
            text = self.path.read_text()
            kept = decode(text)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("memory file %s unreadable, starting without it: %s", self.path, exc)
            return Kept()
        self._written = text
        log.info("memory file %s: %d deployment(s) known", self.path, len(kept.deployments))
        return kept

    def save(self, kept: Kept) -> None:
        """Rewrite the file if what is kept changed (best effort: logged when it fails)."""
        if self.path is None:
            return
        text = encode(kept)
        if text == self._written:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            scratch = self.path.with_suffix(self.path.suffix + ".new")
            scratch.write_text(text)
            os.replace(scratch, self.path)
            self._written = text
        except OSError as exc:
            log.warning("memory file %s not written: %s", self.path, exc)
