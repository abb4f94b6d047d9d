"""One completion as its tokens arrive: the text to show, the logprobs, when and why it ends.

Fed one generated token at a time (its text delta from the SDK's TextStream, its
log-probability, whether the session says it is the last), it decides what a
stream chunk carries. The stop token itself (the tokenizer's EOS) adds no text and
no logprob entry, as with OpenAI; it is counted in ``completion_tokens``. A stop
string ends the completion at the token that completes it; the caller then closes
the session.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .responses import TokenLogprob, finish_reason
from .stops import StopText


@dataclass
class Step:
    """What one token adds: text to show, its logprob entries, and the finish reason
    when the completion ends here (None: it goes on)."""

    text: str
    entries: list[TokenLogprob] = field(default_factory=list)
    #: The text each entry added (text completions' offsets).
    texts: list[str] = field(default_factory=list)
    finish: str | None = None


class Completion:
    def __init__(self, stops: list[str]) -> None:
        self._stops = StopText(stops)
        self.tokens = 0
        self.text = ""
        self.entries: list[TokenLogprob] = []
        self.texts: list[str] = []
        self.finish: str | None = None

    def push(self, text: str, finished: bool, reason: str, entry: TokenLogprob | None = None) -> Step:
        """Add one generated token (``reason``: the SDK's finish reason when ``finished``)."""
        if self.finish is not None:
            raise RuntimeError("the completion has already ended")
        self.tokens += 1
        if finished and reason == "stop_token":
            step = Step(self._stops.flush(), finish="stop")
        else:
            shown, hit = self._stops.push(text)
            step = Step(shown, [entry] if entry else [], [text] if entry else [])
            if hit:
                step.finish = "stop"
            elif finished:
                step.text += self._stops.flush()
                step.finish = finish_reason(reason)
        self.text += step.text
        self.entries += step.entries
        self.texts += step.texts
        self.finish = step.finish
        return step
