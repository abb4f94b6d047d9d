"""A testbed run stopped with SIGTERM unwinds through its clean-up instead of dying with its
namespaces, links and processes left behind (testbed/system.py, terminated_as_exit). A real
process and a real signal; no testbed is built."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

PROGRAM = """
import sys, time
from pathlib import Path
from testbed.system import terminated_as_exit

marker = Path(sys.argv[1])
with terminated_as_exit():
    try:
        print("ready", flush=True)
        time.sleep(60)
    finally:
        marker.write_text("cleaned up")
"""


def test_sigterm_runs_the_clean_up_and_exits_143(tmp_path: Path):
    marker = tmp_path / "marker"
    child = subprocess.Popen([sys.executable, "-c", PROGRAM, str(marker)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        started = time.monotonic()
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 128 + signal.SIGTERM
        assert time.monotonic() - started < 30
        assert marker.read_text() == "cleaned up"
    finally:
        child.kill()
        child.wait()


def test_outside_it_sigterm_is_left_as_it_was():
    from testbed.system import terminated_as_exit

    before = signal.getsignal(signal.SIGTERM)
    with terminated_as_exit():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
