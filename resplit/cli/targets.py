"""Where the CLI finds a service: a flag, else the local stack, else the default port."""

from __future__ import annotations

from pathlib import Path

from ..launcher import stack as stack_mod

DEFAULT_PORTS = {"monitor": 50051, "orchestrator": 50052, "splitter": 50053, "broadcaster": 50054}


def service_address(name: str, explicit: str | None, state_dir: Path) -> str:
    """``explicit`` if given; the running local stack's ``name`` if there is one; else localhost default."""
    if explicit:
        return explicit
    try:
        return stack_mod.load(state_dir).by_name(name).address
    except (stack_mod.StackError, KeyError):
        return f"127.0.0.1:{DEFAULT_PORTS[name]}"
