"""Read a running service's output as it goes.

Every ServiceProcess (resplit.launcher.processes) writes its output to a log file;
``tap(proc)`` returns the :class:`~resplit.launcher.processes.Log` of its latest
start, for a test that checks a log line while the service runs (``wait_for``,
``lines``).
"""

from __future__ import annotations

from resplit.launcher.processes import Log, Process


def tap(proc: Process) -> Log:
    """The log of ``proc``'s latest start (``proc`` must have been started)."""
    assert proc.log is not None, f"{proc.name} was never started"
    return proc.log
