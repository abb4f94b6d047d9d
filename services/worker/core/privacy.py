"""The worker's own privacy check: the last line behind the orchestrator's and broadcaster's.

Units 0..private_depth (the embedding and the blocks right after it) and the
head are privacy-critical (``resplit.core.privacy.privacy_critical``). A worker
started without ``--trusted`` refuses to load or run any of them, whatever plan
it is sent, so a wrong plan in Redis or a hostile caller cannot move raw input
or output onto it. Pure: no I/O except reading a model's config.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from resplit.core.families import BLOCK_KEYS

from .errors import NotTrusted


def critical_units(start: int, end: int, private_depth: int, has_head: bool) -> str:
    """The privacy-critical units among [start, end), described for a message ("" for none).
    Ranges, never lists: the bounds come off the wire and may be absurd."""
    parts = []
    last_private = min(end, private_depth + 1)
    if start < last_private:
        parts.append(f"unit {start}" if last_private - start == 1 else f"units {start}-{last_private - 1}")
    if has_head and end > start and end - 1 >= last_private:
        parts.append(f"the head (unit {end - 1})")
    return " and ".join(parts)


def check_trusted(
    trusted: bool, deployment: str, start: int, end: int, private_depth: int, has_head: bool
) -> None:
    """Raise :class:`NotTrusted` unless this worker may host units [start, end)."""
    if trusted:
        return
    critical = critical_units(start, end, private_depth, has_head)
    if critical:
        raise NotTrusted(
            f"{critical} of deployment {deployment!r} (units [{start}, {end}), private depth "
            f"{private_depth}) are privacy-critical: this worker is not trusted (start it with --trusted)"
        )


def ends_with_head(model_dir: str, end: int) -> bool:
    """Whether units [.., end) of the model in ``model_dir`` include its head, from config.json
    alone. An unreadable config counts as no head: loading it fails later with the reason."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
        blocks = next(int(config[k]) for k in BLOCK_KEYS if k in config)
    except (OSError, ValueError, TypeError, StopIteration, AttributeError):
        return False
    return end == blocks + 2
