"""Read a running service's output as it goes.

``ServiceProcess`` pipes a service's stdout and stderr and reads them only once
it has exited. A test that makes a long-running (shared) service log a lot - the
fuzzers - would fill that pipe and block the service on its next log line, and a
test that checks a log line needs it while the service runs. ``tap(proc)``
starts (once per process) a thread that drains the pipe into memory.
"""

from __future__ import annotations

import threading
import time

_taps: dict[int, Tap] = {}
_lock = threading.Lock()


class Tap:
    def __init__(self, proc) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._drain, args=(proc.proc.stdout,), daemon=True)
        self._thread.start()

    def _drain(self, stream) -> None:
        for line in iter(stream.readline, ""):
            self.lines.append(line)
            if len(self.lines) > 20_000:  # keep memory bounded: the newest lines matter
                del self.lines[:10_000]

    def wait_for(self, *fragments: str, timeout: float = 10.0) -> str:
        """The first line (from now back to the start) holding every fragment."""
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.lines):
                if all(f in line for f in fragments):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no log line with {fragments}; last lines:\n{''.join(self.lines[-20:])}"
                )
            time.sleep(0.05)


def tap(proc) -> Tap:
    """The tap of ``proc`` (a started ServiceProcess), started on first use."""
    with _lock:
        key = id(proc.proc)
        if key not in _taps:
            _taps[key] = Tap(proc)
        return _taps[key]
