"""The native decode kernels (``gemv.c``, ``block.c``): built once per machine, called through ctypes.

Why C and not torch: a decode step's projections are matrix-vector products bound by
memory bandwidth, and on the development CPU torch's fp32 GEMV and its packed int8/int4
kernels stream weights at a third to a half of the rate llama.cpp reaches
(``bench/vs_llamacpp.py``, docs/BENCHMARKS.md). ``gemv.c`` is ~250 lines of plain C with
an AVX-512 body picked at run time, so it needs no torch headers (a build takes about a
second, not a minute) and no download: the machine's C compiler builds it the first
time a worker needs it, into a cache folder keyed by the source's hash; a process that
finds no compiler, or a build that fails, gets ``None`` from :func:`library` and keeps
torch's kernels (the worker logs which it runs). ``RESPLIT_NATIVE_KERNELS=0`` turns the
kernels off.

The library links the system's ``libgomp.so.1``; torch, imported first, has already
loaded its own copy under that name, so the loader binds both to one OpenMP runtime and
``torch.set_num_threads`` governs these kernels' threads as well.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)

#: The sources, built as one library: block.c includes gemv.c.
SOURCES = (Path(__file__).with_name("gemv.c"), Path(__file__).with_name("block.c"))
#: Most activation rows one int8/int4 call takes (``MAX_ROWS`` in gemv.c).
MAX_ROWS = 8
#: Most activation rows one fp32 call takes (``MAX_FP32_ROWS``): its tiles of four weight
#: rows by four activation rows keep a batch's weights in L1.
MAX_FP32_ROWS = 16
#: Most sessions one native block step takes (``MAX_BLOCK_ROWS`` in block.c).
MAX_BLOCK_ROWS = 64
#: Inner sizes must be multiples of this (the int4 group, two AVX-512 vectors of fp32).
ALIGN = 32
GROUP = 32

_F = ctypes.c_void_p
_I = ctypes.c_int


def cache_dir() -> Path:
    """Where built libraries are kept: ``$RESPLIT_KERNEL_CACHE``, else ``~/.cache/resplit/kernels``."""
    given = os.environ.get("RESPLIT_KERNEL_CACHE")
    return Path(given) if given else Path.home() / ".cache" / "resplit" / "kernels"


#: Compiler flags (part of the cache key): fp contraction off, so the portable bodies'
#: multiply-adds round as written and give the AVX-512 bodies' bits.
FLAGS = ("-O3", "-fPIC", "-shared", "-fopenmp", "-ffp-contract=off")


def _build(target: Path, source: Path = SOURCES[-1]) -> None:
    """Compile ``source`` (block.c, which includes gemv.c beside it) into ``target``."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc or gcc) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the target, then renamed: processes building at once never load half a file.
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".so", delete=False) as tmp:
        partial = Path(tmp.name)
    try:
        argv = [compiler, *FLAGS, str(source), "-o", str(partial), "-lm"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}")
        # tempfile makes it private (0600); others on the machine (an image's non-root user,
        # a second account sharing $RESPLIT_KERNEL_CACHE) must be able to load it.
        partial.chmod(0o755)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


@cache
def library() -> ctypes.CDLL | None:
    """The loaded kernels, built first if this machine has none yet; None where they
    cannot be had (turned off, no compiler, a failed build), with the reason logged."""
    if os.environ.get("RESPLIT_NATIVE_KERNELS", "1") == "0":
        log.info("native decode kernels turned off (RESPLIT_NATIVE_KERNELS=0): torch's kernels run")
        return None
    sources = b"".join(source.read_bytes() for source in SOURCES)
    digest = hashlib.sha256(sources + " ".join(FLAGS).encode()).hexdigest()[:16]
    target = cache_dir() / f"resplit-gemv-{digest}.so"
    try:
        if not target.exists():
            _build(target)
        lib = ctypes.CDLL(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        log.warning("native decode kernels unavailable, torch's kernels run: %s", exc)
        return None
    return bind(lib)


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """``lib`` with its entry points' argument types declared (also for a library built
    from another revision's sources, which ``bench/gemv.py`` times against this one)."""
    lib.resplit_gemv_fp32.argtypes = [_F, _F, _F, _I, _I, _I, _I]
    lib.resplit_gemv_bf16.argtypes = [_F, _F, _F, _I, _I, _I, _I]
    lib.resplit_gemv_int8.argtypes = [_F, _F, _F, _F, _I, _I, _I, _I]
    lib.resplit_gemv_int4.argtypes = [_F, _F, _F, _F, _F, _I, _I, _I, _I]
    for fn in (lib.resplit_gemv_fp32, lib.resplit_gemv_bf16, lib.resplit_gemv_int8, lib.resplit_gemv_int4):
        fn.restype = _I
    lib.resplit_simd.restype = _I
    lib.resplit_block_qkv.argtypes = [_F, _I] + [_F] * 6 + [_I]
    # A library from before strided caches (no resplit_kv_strides) takes no strides and
    # contiguous caches: block.py reads ``kv_strides`` to call either.
    lib.kv_strides = hasattr(lib, "resplit_kv_strides")
    lib.resplit_block_out.argtypes = [_F, _I] + [_F] * (6 if lib.kv_strides else 5) + [_F, _I]
    lib.resplit_block_qkv.restype = lib.resplit_block_out.restype = _I
    lib.resplit_force_portable.argtypes = [_I]
    lib.resplit_force_portable.restype = None
    return lib


def active() -> bool:
    """Whether projections take the kernels now: they are available and not turned off
    (``RESPLIT_NATIVE_KERNELS=0``, read on every call so a test can turn them off)."""
    return os.environ.get("RESPLIT_NATIVE_KERNELS", "1") != "0" and library() is not None


def simd() -> str:
    """Which body the kernels run here: "avx512", "portable", or "none" (unavailable)."""
    lib = library()
    return "none" if lib is None else ("avx512" if lib.resplit_simd() == 512 else "portable")


def describe() -> str:
    """What runs a decode step's projections here, for a log line (builds the kernels if
    this machine has none yet, so a worker pays that once, before its first step)."""
    if os.environ.get("RESPLIT_NATIVE_KERNELS", "1") == "0":
        return "torch's (native ones turned off)"
    which = simd()
    return "torch's (no native ones here)" if which == "none" else f"native ({which}) CPU"


def _out(x: torch.Tensor, features: int) -> torch.Tensor:
    return torch.empty(x.shape[0], features, dtype=torch.float32)


def _check(code: int, what: str) -> None:
    if code != 0:
        raise ValueError(f"native {what} kernel refused its arguments (code {code})")


def gemv_dense(lib: ctypes.CDLL, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w.T`` for fp32 ``x`` [R, K] (contiguous, R <= MAX_FP32_ROWS) and ``w`` [N, K],
    fp32 or bfloat16 (widened to fp32 as it is read)."""
    (rows, k), n = x.shape, w.shape[0]
    y = _out(x, n)
    wide = w.dtype == torch.bfloat16
    call = lib.resplit_gemv_bf16 if wide else lib.resplit_gemv_fp32
    code = call(x.data_ptr(), w.data_ptr(), y.data_ptr(), rows, k, n, torch.get_num_threads())
    _check(code, "bf16" if wide else "fp32")
    return y


def gemv_int8(lib: ctypes.CDLL, x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x @ (q * scale[:, None]).T`` for int8 ``q`` [N, K] and bfloat16 ``scale`` [N]."""
    (rows, k), n = x.shape, q.shape[0]
    y = _out(x, n)
    code = lib.resplit_gemv_int8(
        x.data_ptr(), q.data_ptr(), scale.data_ptr(), y.data_ptr(), rows, k, n, torch.get_num_threads()
    )
    _check(code, "int8")
    return y


def gemv_int4(
    lib: ctypes.CDLL, x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor
) -> torch.Tensor:
    """``x @ W.T`` for W = (q - 8) * scale + zero in groups of GROUP columns (``packed``:
    :func:`pack_int4`; ``scale``, ``zero``: bfloat16 [N, K / GROUP]), each row of ``x``
    rounded to int8 steps of max|block| / 127 per block of GROUP columns (gemv.c)."""
    (rows, k), n = x.shape, packed.shape[0]
    y = _out(x, n)
    code = lib.resplit_gemv_int4(
        x.data_ptr(),
        packed.data_ptr(),
        scale.data_ptr(),
        zero.data_ptr(),
        y.data_ptr(),
        rows,
        k,
        n,
        torch.get_num_threads(),
    )
    _check(code, "int4")
    return y


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """uint8 [N, K/2] from 4-bit values ``q`` [N, K] (0..15): in each group of 32 columns,
    byte i holds column i in its low nibble and column i + 16 in its high one."""
    rows, cols = q.shape
    groups = q.to(torch.uint8).reshape(rows, cols // GROUP, 2, GROUP // 2)
    return (groups[:, :, 0] | (groups[:, :, 1] << 4)).reshape(rows, cols // 2).contiguous()
