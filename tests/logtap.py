"""Read a running service's output as it goes.

Every ``ServiceProcess`` pipes its stdout and stderr, and a pipe that nobody reads
fills up (64 KiB) and then blocks the service on its next log line: its event loop
stops, and a test sees a hang far from the cause. So ``ServiceProcess.start`` taps
every process: a thread drains the pipe into memory. ``tap(proc)`` returns that tap,
for a test that checks a log line while the service runs.
"""

from __future__ import annotations

import threading
import time


class Tap:
    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream) -> None:
        for line in iter(stream.readline, ""):
            self.lines.append(line)
            if len(self.lines) > 20_000:  # keep memory bounded: the newest lines matter
                del self.lines[:10_000]

    def text(self, timeout: float = 5.0) -> str:
        """Everything kept, once the pipe has closed (the process exited), or after ``timeout``."""
        self._thread.join(timeout)
        return "".join(self.lines)

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
    """The tap of ``proc``, a started ServiceProcess (it owns one from its start)."""
    return proc.log
