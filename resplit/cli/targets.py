"""Where the CLI finds a service: a flag, else the local stack, else the default port.

Loading the local stack also makes its client certificate and token the
credentials of the CLI's channels (see :func:`resplit.launcher.stack.load`);
without a stack they come from ``RESPLIT_TLS_*`` / ``RESPLIT_TOKEN*``.
"""

from __future__ import annotations

from pathlib import Path

from ..launcher import stack as stack_mod

DEFAULT_PORTS = {"monitor": 50051, "orchestrator": 50052, "splitter": 50053, "broadcaster": 50054}


def service_address(name: str, explicit: str | None, state_dir: Path) -> str:
    """``explicit`` if given; the running local stack's ``name`` if there is one; else localhost default."""
    try:
        stack = stack_mod.load(state_dir)
    except stack_mod.StackError:
        stack = None
    if explicit:
        return explicit
    try:
        if stack is not None:
            return stack.by_name(name).address
    except KeyError:
        pass
    return f"127.0.0.1:{DEFAULT_PORTS[name]}"
