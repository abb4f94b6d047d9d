"""A segment's weights in memory the kernel may back with 2 MiB pages.

Why: a decode step reads every weight once, front to back. With 4 KiB pages that
walk through hundreds of megabytes misses the TLB every 4 KiB, and a hop whose
process idled while the others computed starts with the TLB cold. On the 2-core
development VM weights in 2 MiB pages decode 10-12 % faster, cold or warm
(``bench/cold_step.py``). Linux's transparent huge pages back anonymous memory
with them only where asked in its common ``madvise`` mode, and never tensors read
into the allocator's heap, so a checkpoint's tensors are copied into one private
anonymous mapping advised ``MADV_HUGEPAGE``, one tensor at a time (no second copy
of the whole segment at load). Where THP is off, or the platform has no
``MADV_HUGEPAGE``, the mapping is ordinary memory and nothing else changes.
Results are the same within float rounding, not bitwise: safetensors hands
tensors over 8 bytes past a cache line, the arena aligns them to 64 bytes, and
the BLAS kernels then take another path (about 1e-6 on the logits).
"""

from __future__ import annotations

import contextlib
import mmap
import re
from pathlib import Path

import torch

#: Huge page size on x86-64 and arm64 with 4 KiB base pages.
HUGE_PAGE = 2 << 20
#: Every tensor starts at a multiple of this: any dtype's alignment, and a cache line.
ALIGN = 64
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


def thp_mode() -> str:
    """The kernel's THP mode (``always``, ``madvise``, ``never``), or ``unavailable``."""
    try:
        text = Path(THP_SETTING).read_text()
    except OSError:
        return "unavailable"
    found = re.search(r"\[(\w+)\]", text)
    return found.group(1) if found else "unavailable"


class Arena:
    """One private anonymous mapping that tensors are copied into, one after another.

    Sized up front (``nbytes``: the sum of :func:`aligned` sizes of what will be placed).
    The tensors it hands out keep the mapping alive."""

    def __init__(self, nbytes: int) -> None:
        size = aligned(max(nbytes, 1)) + HUGE_PAGE  # room to start on a 2 MiB boundary
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        advice = getattr(mmap, "MADV_HUGEPAGE", None)
        if advice is not None:
            with contextlib.suppress(OSError):  # refused advice: ordinary pages, nothing else changes
                self._map.madvise(advice)
        whole = torch.frombuffer(self._map, dtype=torch.uint8)
        self._space = whole[(-whole.data_ptr()) % HUGE_PAGE :][: aligned(max(nbytes, 1))]
        self._used = 0

    def place(self, tensor: torch.Tensor) -> torch.Tensor:
        """A copy of ``tensor`` (on the CPU) inside the arena."""
        nbytes = tensor.numel() * tensor.element_size()
        if self._used + nbytes > self._space.numel():
            raise ValueError(f"arena of {self._space.numel()} bytes has no room for {nbytes} more")
        out = self._space[self._used : self._used + nbytes].view(tensor.dtype).view(tensor.shape)
        out.copy_(tensor)
        self._used += aligned(nbytes)
        return out


def pack(module: torch.nn.Module) -> None:
    """Move every parameter of ``module`` (on the CPU) into one new arena, one at a time:
    for weights a family made at load (MoE experts fused from per-expert tensors), which
    the arena the checkpoint was read into would not hold. Shared weights stay shared."""
    params = {p.data_ptr(): p for p in module.parameters()}
    arena = Arena(sum(aligned(p.numel() * p.element_size()) for p in params.values()))
    placed: dict[int, torch.Tensor] = {}
    for param in module.parameters():
        key = param.data_ptr()
        if key not in placed:
            placed[key] = arena.place(param.data)
        param.data = placed[key]


def huge_bytes_at(address: int) -> int | None:
    """Bytes of the mapping holding ``address`` that the kernel backs with huge pages now
    (``AnonHugePages`` in ``/proc/self/smaps``), or None where that cannot be read. Adjacent
    mappings alike may have been merged into one: then it counts theirs too."""
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return None
    inside = False
    for line in lines:
        head = line.split(" ", 1)[0]
        if "-" in head and not head.endswith(":"):
            start, end = (int(part, 16) for part in head.split("-"))
            inside = start <= address < end
        elif inside and head == "AnonHugePages:":
            return int(line.split()[1]) * 1024
    return None


def release_freed() -> None:
    """Hand the allocator's freed heap back to the kernel (glibc ``malloc_trim``), after
    a load that freed more than it kept: a segment quantized at load read its tensors
    at full width, and glibc keeps tensors of up to 32 MiB in its heap when freed (the
    15-block benchmark Llama at int4: 1069 MB more resident than before the load, 270
    MB after this, for 104 MB of weights; the rest is transformers' model code). A no-op
    where there is no glibc."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
