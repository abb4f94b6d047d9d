"""The bandwidth a probe transfer shows, timed on the sender.

The sender times the whole ProbeBandwidth call, which includes one round trip
(the stream's start and its reply); that round trip, measured just before by a
Ping, is taken off. On a fast link (loopback, a LAN) the transfer itself takes
about as long as the round trip, and on a loaded host the Ping may even take
longer than the call: taking it off then left a microsecond or less, and a
loopback link read 2,000,000 Mbit/s. A probe cannot tell apart rates whose
transfer hides in the round trip's noise, so at most half of the call's time is
taken off: such a link reads at most twice size / call time, still far faster
than any shaped or WAN link, and a slow link (transfer >> round trip) reads
the same as before.
"""

from __future__ import annotations


def probe_mbps(size_bytes: int, call_s: float, rtt_s: float) -> float:
    """Mbit/s of a ``size_bytes`` transfer whose call took ``call_s``, one ``rtt_s`` included."""
    if size_bytes <= 0 or call_s <= 0:
        raise ValueError(f"a probe needs bytes and time, got {size_bytes} B in {call_s} s")
    transfer_s = max(call_s - max(rtt_s, 0.0), call_s / 2)
    return size_bytes * 8 / transfer_s / 1e6
