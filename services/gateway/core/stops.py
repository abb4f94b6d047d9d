"""Stop strings over streamed text: what may be shown now, and whether one was hit.

Text that could still turn out to be the start of a stop string is held back until
the next delta decides, so a stream never shows part of a stop string and the
whole answer equals the non-streamed one.
"""

from __future__ import annotations


class StopText:
    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""

    def push(self, delta: str) -> tuple[str, bool]:
        """(text to show now, whether a stop string ended the text: nothing after it is shown)."""
        text = self.pending + delta
        hits = [i for i in (text.find(stop) for stop in self.stops) if i >= 0]
        if hits:
            self.pending = ""
            return text[: min(hits)], True
        keep = self._held(text)
        self.pending = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """What was held back, at the end of the generation (no stop string came)."""
        text, self.pending = self.pending, ""
        return text

    def _held(self, text: str) -> int:
        """Length of the longest end of ``text`` that begins some stop string."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if stop.startswith(text[len(text) - size :]):
                    longest = size
                    break
        return longest
