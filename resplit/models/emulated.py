"""Emulated-compute segments: the real data path, without the model's weights.

An :class:`EmulatedSegment` is built from ``config.json`` alone. Each step
waits what its device profile predicts (``resplit.core.emulation``) and
returns tensors of the real shape and dtype: hidden states ``[rows, T, H]``
(zeros) for the next hop, or at the head logits ``[rows, V]`` whose argmax is
a deterministic function of the position (so greedy and seeded sampling are
reproducible and a migrated session goes on with the same tokens). The
session state counts the tokens seen and keeps a KV cache of the real size
per layer without its memory (zeros expanded over the sequence), so live
migration moves the bytes a real cache would move.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..core.emulation import EmulatedDevice
from ..core.profiles import load_config, profile
from .base import Segment, SegmentInputError, SessionState, StepOutput, num_units

if TYPE_CHECKING:
    from transformers import PretrainedConfig

#: The chosen token's logit; every other logit is 0, so even temperature 1 picks it.
PEAK = 30.0


def emulated_token(position: int, vocab: int, avoid: frozenset[int] = frozenset()) -> int:
    """The token an emulated head produces after ``position`` tokens of context."""
    token = (position * 7919 + 17) % vocab
    while token in avoid:
        token = (token + 1) % vocab
    return token


class FakeLayer:
    """One layer's KV cache of the right shape and dtype, backed by no memory."""

    def __init__(self, rows: int, width: int, dtype: torch.dtype) -> None:
        self.rows, self.width, self.dtype = rows, width, dtype
        self.cumulative_length = 0
        self.keys = self.values = torch.zeros(0)

    @property
    def is_initialized(self) -> bool:
        return self.cumulative_length > 0

    def grow(self, rows: int, tokens: int) -> None:
        self.rows = rows
        self.cumulative_length += tokens
        self.keys = self.values = torch.zeros(1, dtype=self.dtype).expand(
            rows, 1, self.cumulative_length, self.width
        )

    def lazy_initialization(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.rows = keys.shape[0]


class FakeCache:
    def __init__(self, layers: int, width: int, dtype: torch.dtype) -> None:
        self.layers = [FakeLayer(1, width, dtype) for _ in range(layers)]


class EmulatedSegment(Segment):
    """Units [start, end) of the model in ``model_dir``, timed on an emulated device."""

    engine = "emulated"

    def __init__(
        self,
        model_dir: str | Path,
        start: int,
        end: int,
        device: EmulatedDevice,
        dtype: torch.dtype | None = None,
        weights: str = "fp32",
    ) -> None:
        from transformers import AutoConfig

        config: PretrainedConfig = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        super().__init__(config, start, end)
        self.lean_unavailable = "emulated: a step waits instead of computing"
        total = num_units(config)
        if not 0 <= start < end <= total:
            raise SegmentInputError(f"units [{start}, {end}) are outside the model's [0, {total})")
        declared = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        if dtype is None:
            dtype = declared if isinstance(declared, torch.dtype) else torch.float16
        self.dtype = dtype
        width = torch.finfo(dtype).bits // 8
        raw = load_config(str(model_dir))
        self.model = profile(raw, {2: "float16", 4: "float32"}.get(width, "float16"), weights=weights)
        self.units = self.model.units[start:end]
        self.device = device
        self.hidden_size = int(config.hidden_size)
        self.vocab = int(config.vocab_size)
        eos = getattr(config, "eos_token_id", None)
        self.avoid = frozenset(eos if isinstance(eos, list) else [] if eos is None else [eos])
        block = next((u for u in self.units if u.kind == "block"), None)
        self.kv_width = block.kv_bytes_per_token // (2 * width) if block else 0
        # import_layers reads the dtype and device of the first parameter
        self.anchor = torch.nn.Parameter(torch.zeros(0, dtype=dtype), requires_grad=False)
        #: Seconds waited by the last step (what the profile predicted, as slept).
        self.last_wait_s = 0.0
        self.last_predicted_s = 0.0

    def param_bytes(self) -> int:
        return sum(u.param_bytes for u in self.units)

    def new_state(self) -> SessionState:
        blocks = len(self.block_range)
        return SessionState(cache=FakeCache(blocks, self.kv_width, self.dtype) if blocks else None)

    def step(
        self,
        state: SessionState,
        input_ids: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> StepOutput:
        source = self._source(input_ids, hidden)
        rows, tokens = int(source.shape[0]), int(source.shape[1])
        return self._wait_for([state], rows, tokens)

    def batches_decode(self) -> bool:
        return True

    def step_rows(self, states, input_ids=None, hidden=None) -> StepOutput:
        """One token of each session, as long as the device takes for one forward of that
        many rows (the roofline's batched step: the weights read once for all of them)."""
        self._source(input_ids, hidden)
        return self._wait_for(states, 1, 1)

    def _source(self, input_ids: torch.Tensor | None, hidden: torch.Tensor | None) -> torch.Tensor:
        source = input_ids if self.has_embedding else hidden
        if source is None:
            raise SegmentInputError("the first segment takes input_ids, the others hidden states")
        return source

    def _wait_for(self, states: list[SessionState], rows: int, tokens: int) -> StepOutput:
        """The step of ``states`` (each ``rows`` x ``tokens`` new positions), after waiting
        what the device takes for all of them at once (the longest cache as every row's)."""
        started = time.perf_counter()
        count = len(states) * rows
        past = max(state.seq_len for state in states)
        self.last_predicted_s = self.device.step_seconds(self.units, tokens, past, count)
        for state in states:
            state.seq_len += tokens
            if state.cache is not None:
                for layer in state.cache.layers:
                    layer.grow(rows, tokens)
        if not self.has_head:
            output = StepOutput(hidden=torch.zeros(count, tokens, self.hidden_size, dtype=self.dtype))
        elif getattr(self.config, "model_type", "") == "bert":
            pooled = torch.zeros(count, self.hidden_size)
            pooled[:, 0] = 1.0  # unit norm, like the real pooled and normalized output
            output = StepOutput(embeddings=pooled)
        else:
            logits = torch.zeros(count, self.vocab)
            for i, state in enumerate(states):
                chosen = emulated_token(state.seq_len, self.vocab, self.avoid)
                logits[i * rows : (i + 1) * rows, chosen] = PEAK
            output = StepOutput(logits=logits)
        # the step, bookkeeping included, takes what the device would take
        self.last_wait_s = self.device.run(self.last_predicted_s, started)
        return output
