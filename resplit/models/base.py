"""What every model family provides: units, the tensors of each unit, and a
segment that runs a unit range with its own per-session state.

Units: ``0`` = embedding, ``1..L`` = blocks, ``L+1`` = head. A segment
``[start, end)`` is built from only its own tensors, with its blocks
renumbered to local indexes so its KV cache starts at layer 0 (the global
``layer_idx`` trap in the stack notes).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from resplit.core.weights import WeightsError, weights_name

from .checkpoint import Checkpoint

if TYPE_CHECKING:  # transformers loads on first use: a worker that hosts nothing never pays for it
    from transformers import PretrainedConfig


class UnsupportedModelError(ValueError):
    """No adapter can split this architecture; the message names it and says why."""


class SegmentInputError(ValueError):
    """An activation or token input that does not fit this segment."""


@dataclass
class SessionState:
    """Per-session, per-segment state: the KV cache and how many tokens it has seen."""

    cache: Any = None
    seq_len: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepOutput:
    """What a segment produces for one step."""

    #: Hidden states [rows, T, H] for the next hop, or None at the head.
    hidden: torch.Tensor | None = None
    #: Decoder head: logits of the last position [rows, V].
    logits: torch.Tensor | None = None
    #: Encoder head: pooled, normalized embeddings [rows, H].
    embeddings: torch.Tensor | None = None


class Segment(nn.Module, ABC):
    """A contiguous unit range of one model, ready to run."""

    #: Which code runs this segment's steps: "transformers" (its model classes, with the
    #: lean decode step where ``lean_unavailable`` is None), "lean" (``rotary_lean.py``:
    #: no transformers modeling code at all), "emulated". The worker's load log and
    #: metrics name it.
    engine = "transformers"

    def __init__(self, config: PretrainedConfig, start: int, end: int) -> None:
        super().__init__()
        self.config = config
        self.start, self.end = start, end
        self.num_blocks_total = num_blocks(config)
        #: Take the family's lean one-token step where it has one (``lean.py``); off, every
        #: step goes through transformers' layers. Bitwise the same result either way.
        self.lean_decode = True
        #: Why this segment's decode steps cannot take a lean step (None: they can).
        self.lean_unavailable: str | None = "no lean step for this family"
        #: The dtype of activations and the KV cache when it differs from the first
        #: parameter's (quantized weights: ``set_weights``); None: that parameter's.
        self.activation_dtype: torch.dtype | None = None

    @property
    def has_embedding(self) -> bool:
        return self.start == 0

    @property
    def has_head(self) -> bool:
        return self.end == self.num_blocks_total + 2

    @property
    def block_range(self) -> range:
        """Global block indexes (0-based layer numbers) this segment runs."""
        return range(max(self.start, 1) - 1, min(self.end, self.num_blocks_total + 1) - 1)

    def param_bytes(self) -> int:
        """Bytes of the weights as held (quantized ones at their quantized size)."""
        return sum(p.numel() * p.element_size() for p in self.parameters())

    def set_weights(self, weights: str) -> None:
        """Quantize this segment's weights in place to ``weights`` (``resplit.core.weights``);
        WeightsError when this family cannot run the format. Only fp32 (as loaded) here."""
        if weights_name(weights) != "fp32":
            raise WeightsError(f"weights {weights}: {type(self).__name__} runs fp32 weights only")

    @abstractmethod
    def new_state(self) -> SessionState: ...

    @abstractmethod
    def step(
        self,
        state: SessionState,
        input_ids: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> StepOutput:
        """Run the units for one step; exactly one of input_ids / hidden is given."""

    def batches_decode(self) -> bool:
        """Whether :meth:`step_rows` runs several sessions' one-token steps as one batched
        forward (else it runs them one after another, each exactly as :meth:`step`)."""
        return False

    def step_rows(
        self,
        states: list[SessionState],
        input_ids: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
    ) -> StepOutput:
        """One new token of each of several sessions (row i: ``states[i]``): ``input_ids``
        [N, 1] or ``hidden`` [N, 1, H]; outputs stacked the same way. This default runs
        the rows one by one; a family with a batched step overrides it."""
        outputs = []
        for i, state in enumerate(states):
            rows = slice(i, i + 1)
            outputs.append(
                self.step(
                    state,
                    input_ids=None if input_ids is None else input_ids[rows],
                    hidden=None if hidden is None else hidden[rows],
                )
            )
        return StepOutput(
            **{
                name: torch.cat([getattr(o, name) for o in outputs])
                for name in ("hidden", "logits", "embeddings")
                if getattr(outputs[0], name) is not None
            }
        )

    def batches_prompts(self) -> bool:
        """Whether :meth:`step_packed` runs several sessions' prompts as one forward (else
        it runs them one after another, each exactly as :meth:`step`)."""
        return False

    def step_packed(
        self,
        states: list[SessionState],
        lengths: list[int],
        input_ids: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
    ) -> StepOutput:
        """New tokens of several sessions packed one after another along the sequence
        (session i: ``lengths[i]`` tokens; ``input_ids`` [1, T] or ``hidden`` [1, T, H],
        T = sum of lengths): ``hidden`` packed the same way, or ``logits`` [N, V] of each
        session's last token. This default runs the sessions one by one."""
        outputs, start = [], 0
        for state, length in zip(states, lengths, strict=True):
            span = slice(start, start + length)
            start += length
            outputs.append(
                self.step(
                    state,
                    input_ids=None if input_ids is None else input_ids[:, span],
                    hidden=None if hidden is None else hidden[:, span],
                )
            )
        if outputs[0].hidden is not None:
            return StepOutput(hidden=torch.cat([o.hidden for o in outputs], dim=1))
        return StepOutput(logits=torch.cat([o.logits for o in outputs]))


class Family(ABC):
    """One model family: which tensors belong to which unit, and how to build a segment."""

    model_types: tuple[str, ...] = ()
    #: True for decoders that generate; False for encoders that embed.
    generative: bool = True
    #: The checkpoint's tensors become the segment's weights as read (so they are read
    #: straight into the huge-page arena); False where the family makes new ones at load
    #: (fused MoE experts): those segments are packed into an arena after they are built.
    loads_in_place: bool = True

    @abstractmethod
    def unit_of(self, name: str, config: PretrainedConfig) -> set[int]:
        """Units that need the checkpoint tensor ``name`` (a tied weight needs two)."""

    @abstractmethod
    def build(
        self,
        config: PretrainedConfig,
        start: int,
        end: int,
        tensors: dict[str, torch.Tensor],
        device: torch.device,
        lean: bool = True,
    ) -> Segment:
        """A segment for units [start, end) from exactly its tensors. ``lean``: take the
        family's lean build or step where it has one (off: transformers' layers throughout)."""

    def tensor_names(self, checkpoint: Checkpoint, start: int, end: int) -> list[str]:
        wanted = set(range(start, end))
        return [n for n in checkpoint.names() if self.unit_of(n, checkpoint.config) & wanted]


def num_blocks(config: PretrainedConfig) -> int:
    return int(config.num_hidden_layers)


def num_units(config: PretrainedConfig) -> int:
    return num_blocks(config) + 2


def local_config(config: PretrainedConfig, blocks: range) -> PretrainedConfig:
    """A copy of ``config`` describing only ``blocks``, renumbered from 0.

    Layer types (full / sliding attention) are sliced with the blocks, so the
    local KV cache and masks match what the whole model does at those layers.
    """
    local = copy.deepcopy(config)
    types = getattr(config, "layer_types", None)
    local.num_hidden_layers = len(blocks)
    if types is not None:
        local.layer_types = [types[i] for i in blocks]
    return local


def strip_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def renumber(tensors: dict[str, torch.Tensor], prefix: str, first: int) -> dict[str, torch.Tensor]:
    """``{prefix}{g}.rest`` -> ``{g - first}.rest`` for the block tensors of a segment."""
    out = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, rest = key[len(prefix) :].split(".", 1)
            out[f"{int(index) - first}.{rest}"] = value
    return out


def load_into(module: nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Assign ``tensors`` as the module's parameters; every parameter must be covered."""
    missing, unexpected = module.load_state_dict(tensors, strict=False, assign=True)
    if unexpected:
        raise ValueError(f"{what}: checkpoint tensors not used by the model: {sorted(unexpected)[:5]}")
    if missing:
        raise ValueError(f"{what}: checkpoint lacks tensors {sorted(missing)[:5]}")


def check_materialized(module: nn.Module, what: str) -> None:
    """Fail loudly if anything is still on the meta device (an unhandled buffer)."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_meta:
            raise ValueError(f"{what}: {name} was not loaded (family adapter must materialize it)")
