"""The native decode kernels (resplit/kernels) against torch on the same weights.

Each kernel is compared with ``F.linear`` on the weights it stands for (fp32 as given;
bf16 widened, int8 and int4 dequantized in torch), for one to eight activation rows at once and for
more rows in chunks, through the AVX-512 bodies where this CPU has them and through
the portable ones. A row's result must not depend on the rows beside it: a batch of one
is bitwise the call alone, and every row of a batch is within float rounding of it.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from resplit.kernels import linear, native

LIB = native.library()
pytestmark = pytest.mark.skipif(LIB is None, reason="native kernels could not be built here (no C compiler?)")

BODIES = ["portable"] + (["avx512"] if LIB is not None and LIB.resplit_simd() == 512 else [])


@pytest.fixture(params=BODIES)
def body(request):
    LIB.resplit_force_portable(request.param == "portable")
    yield request.param
    LIB.resplit_force_portable(0)


def _int4(n: int, k: int, generator: torch.Generator):
    q = torch.randint(0, 16, (n, k), generator=generator)
    scale = (torch.rand(n, k // 32, generator=generator) * 0.02).to(torch.bfloat16)
    zero = (torch.randn(n, k // 32, generator=generator) * 0.01).to(torch.bfloat16)
    groups = (q.float().view(n, k // 32, 32) - 8) * scale.float()[..., None] + zero.float()[..., None]
    return native.pack_int4(q), scale, zero, groups.view(n, k)


def _blocks(x: torch.Tensor) -> torch.Tensor:
    """``x`` as the int4 kernel sees it: each row in blocks of 32 columns, each block
    rounded to int8 steps of max|block| / 127 (gemv.c's quantize_blocks), dequantized."""
    rows, k = x.shape
    blocks = x.view(rows, k // 32, 32)
    top = blocks.abs().amax(dim=2, keepdim=True)
    inv = torch.where(top > 0, 127 / top, torch.zeros_like(top))
    q = torch.round(blocks * inv).clamp(-127, 127)
    return (q * (top / 127)).view(rows, k)


@pytest.mark.parametrize("rows", [1, 3, 8])
@pytest.mark.parametrize("shape", [(96, 64), (200, 320)])
def test_each_kernel_matches_torch_on_the_weights_it_stands_for(body, rows, shape):
    n, k = shape
    g = torch.Generator().manual_seed(rows * 1000 + n)
    x = torch.randn(rows, k, generator=g)
    w = torch.randn(n, k, generator=g)
    got = native.gemv_dense(LIB, x, w)
    assert torch.allclose(got, F.linear(x, w), atol=1e-4, rtol=1e-5), body
    wide = torch.randn(native.MAX_FP32_ROWS - rows, k, generator=g)  # fp32 takes up to 16 rows
    both = torch.cat([x, wide])
    assert torch.allclose(native.gemv_dense(LIB, both, w), F.linear(both, w), atol=1e-4, rtol=1e-5), body
    half = w.to(torch.bfloat16)  # bf16 weights, widened exactly: fp32 arithmetic on them
    got = native.gemv_dense(LIB, both, half)
    assert torch.allclose(got, F.linear(both, half.float()), atol=1e-4, rtol=1e-5), body

    q = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    scale = (torch.rand(n, generator=g) * 0.01).to(torch.bfloat16)
    expected = F.linear(x, q.float() * scale.float()[:, None])
    got = native.gemv_int8(LIB, x, q, scale)
    # int16 activations: an error of at most 1/65534 of the row's largest value per term
    assert torch.allclose(got, expected, atol=1e-3 * expected.abs().max().item(), rtol=1e-3), body

    if k % 64 == 0:
        packed, s4, o4, w4 = _int4(n, k, g)
        got = native.gemv_int4(LIB, x, packed, s4, o4)
        # int8 activations in blocks of 32: W against the dequantized row, to float rounding
        assert torch.allclose(got, F.linear(_blocks(x), w4), atol=1e-5, rtol=1e-5), body
        expected = F.linear(x, w4)  # and within the activations' rounding of the fp32 row
        assert torch.allclose(got, expected, atol=2e-2 * expected.abs().max().item()), body


def test_a_row_gets_the_same_result_whatever_rows_it_is_batched_with():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(8, 128, generator=g)
    w = torch.randn(64, 128, generator=g)
    q = torch.randint(-127, 128, (64, 128), generator=g, dtype=torch.int8)
    scale = torch.rand(64, generator=g).to(torch.bfloat16)
    packed, s4, o4, _ = _int4(64, 128, g)
    calls = {
        "fp32": lambda rows: native.gemv_dense(LIB, rows, w),
        "bf16": lambda rows: native.gemv_dense(LIB, rows, w.to(torch.bfloat16)),
        "int8": lambda rows: native.gemv_int8(LIB, rows, q, scale),
        "int4": lambda rows: native.gemv_int4(LIB, rows, packed, s4, o4),
    }
    for name, call in calls.items():
        alone = torch.cat([call(x[i : i + 1]) for i in range(8)])
        assert torch.equal(call(x[:1]), alone[:1]), name  # a batch of one is the call alone
        assert torch.allclose(call(x), alone, atol=1e-4, rtol=1e-5), name
        other = x.clone()
        other[1:] = torch.randn(7, 128, generator=g) * 100  # different batch mates, larger values
        assert torch.allclose(call(other)[0], alone[0], atol=1e-4, rtol=1e-5), name


def test_linear_takes_few_rows_and_leaves_more_to_torch(monkeypatch):
    g = torch.Generator().manual_seed(3)
    w, b = torch.randn(96, 64, generator=g), torch.randn(96, generator=g)
    for rows in (1, 8, 9, 33):
        x = torch.randn(1, rows, 64, generator=g)
        out = linear.linear_fp32(x, w, b)
        assert out.shape == (1, rows, 96)
        assert torch.allclose(out, F.linear(x, w, b), atol=1e-4, rtol=1e-5), rows
    assert linear.takes(torch.zeros(1, 64), 64)
    assert not linear.takes(torch.zeros(native.MAX_ROWS + 1, 64), 64)  # fp32: torch's GEMM
    assert linear.takes(torch.zeros(linear.QUANTIZED_ROWS, 64), 64, linear.QUANTIZED_ROWS)
    assert not linear.takes(torch.zeros(linear.QUANTIZED_ROWS + 1, 64), 64, linear.QUANTIZED_ROWS)
    assert not linear.takes(torch.zeros(1, 48), 48)  # not a multiple of 32
    assert not linear.takes(torch.zeros(1, 64, dtype=torch.bfloat16), 64)
    monkeypatch.setenv("RESPLIT_NATIVE_KERNELS", "0")
    assert not linear.takes(torch.zeros(1, 64), 64)


def test_a_kernel_refuses_what_it_cannot_take():
    with pytest.raises(ValueError, match="refused"):
        native.gemv_dense(LIB, torch.zeros(native.MAX_FP32_ROWS + 1, 64), torch.zeros(8, 64))
    with pytest.raises(ValueError, match="refused"):
        native.gemv_int4(
            LIB,
            torch.zeros(1, 32),
            torch.zeros(8, 16, dtype=torch.uint8),
            *torch.zeros(2, 8, 1, dtype=torch.bfloat16),
        )


def test_pack_int4_puts_column_i_and_i_plus_16_in_one_byte():
    q = torch.arange(32).remainder(16).view(1, 32)
    packed = native.pack_int4(q)
    assert packed.shape == (1, 16)
    assert [int(b) & 15 for b in packed[0]] == q[0, :16].tolist()
    assert [int(b) >> 4 for b in packed[0]] == q[0, 16:].tolist()


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_a_quantized_projection_takes_a_batch_in_chunks_and_a_prefill_dequantized(weights):
    from resplit.models.quant import QuantLinear

    g = torch.Generator().manual_seed(11)
    dense = torch.nn.Linear(128, 48)
    with torch.no_grad():
        dense.weight.copy_(torch.randn(48, 128, generator=g))
    projection = QuantLinear(dense, weights)
    assert projection.native
    x = torch.randn(1, 2 * native.MAX_ROWS + 3, 128, generator=g)  # three kernel calls
    alone = torch.cat([projection(x[:, i : i + 1]) for i in range(x.shape[1])], dim=1)
    batched = projection(x)
    assert torch.allclose(batched, alone, atol=1e-5, rtol=1e-5)
    prefill = projection(torch.cat([x] * 4, dim=1))  # more rows than the kernels take
    assert prefill.shape[1] > linear.QUANTIZED_ROWS
    assert torch.allclose(prefill[:, : x.shape[1]], alone, atol=1e-2 * alone.abs().max().item())


def _greedy_logits(segment, prompt: torch.Tensor, steps: int, *, native_blocks: bool) -> torch.Tensor:
    """The logits of ``steps`` greedy steps of one session from ``prompt``, its decode steps on
    block.c (``native_blocks``) or on lean's torch operations."""
    for block in segment._lean:
        block.native.clear()
        if not native_blocks:
            block.native["why_not"] = "turned off by the test"
    state, logits, ids = segment.new_state(), [], prompt
    for _ in range(steps):
        out = segment.step(state, input_ids=ids)
        logits.append(out.logits[0])
        ids = torch.tensor([[int(out.logits[0].argmax())]])
    return torch.stack(logits)


@pytest.mark.parametrize("weights", ["fp32", "bf16", "int8", "int4"])
def test_the_native_block_step_matches_lean_torch_operations(tmp_path, weights):
    """A lone session's steps through block.c against the same segment on lean's torch
    operations (projections on the same kernels): same tokens, logits within 1e-4."""
    from resplit.models import Checkpoint, load_segment
    from resplit.models.tiny import build_tiny

    model_dir = build_tiny("llama", tmp_path / "llama", attention_bias=True)
    segment = load_segment(Checkpoint(model_dir), 0, 6, torch.device("cpu"), weights=weights)

    prompt = torch.tensor([[5, 17, 33, 8, 91]])
    on = _greedy_logits(segment, prompt, 8, native_blocks=True)
    assert all("engine" in block.native for block in segment._lean)  # the native step ran
    off = _greedy_logits(segment, prompt, 8, native_blocks=False)
    assert torch.equal(on.argmax(-1), off.argmax(-1))
    assert torch.allclose(on, off, atol=1e-4, rtol=0)


def test_the_native_attention_matches_lean_over_a_long_cache_and_an_odd_head_size(tmp_path, body):
    """block.c's attention sums q . k in sixteen lanes and a tail: over a 300-token cache,
    with heads of 40 (two lanes' worth and a tail of 8) and grouped kv heads, through both
    bodies, the steps equal lean's torch operations within 1e-4."""
    from resplit.models import Checkpoint, load_segment
    from resplit.models.tiny import build_tiny

    model_dir = build_tiny(
        "llama",
        tmp_path / "llama",
        head_dim=40,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    segment = load_segment(Checkpoint(model_dir), 0, 6, torch.device("cpu"))
    prompt = torch.tensor([[(7 * i) % 300 + 3 for i in range(300)]])

    on = _greedy_logits(segment, prompt, 4, native_blocks=True)
    assert all("engine" in block.native for block in segment._lean), body  # block.c ran
    off = _greedy_logits(segment, prompt, 4, native_blocks=False)
    assert torch.equal(on.argmax(-1), off.argmax(-1))
    assert torch.allclose(on, off, atol=1e-4, rtol=0), (on - off).abs().max()


def test_a_quantized_kernel_refuses_more_rows_than_it_takes():
    q, scale = torch.zeros(8, 64, dtype=torch.int8), torch.zeros(8).bfloat16()
    with pytest.raises(ValueError, match="refused"):
        native.gemv_int8(LIB, torch.zeros(native.MAX_ROWS + 1, 64), q, scale)


@pytest.mark.parametrize("weights", ["fp32", "bf16", "int8", "int4"])
def test_the_native_block_step_takes_a_batch_of_sessions_at_their_own_positions(tmp_path, weights):
    """Five sessions with prompts of different lengths step together through block.c (one
    call per block for the batch): each session's logits within 1e-5 of its own steps
    alone at fp32 and bf16 (1e-4 quantized: the int4 body sums one row in two chains,
    several rows in one), and a batch of one is bitwise the lone step."""
    import copy

    from resplit.models import Checkpoint, load_segment
    from resplit.models.tiny import build_tiny

    model_dir = build_tiny("llama", tmp_path / "llama", attention_bias=True)
    segment = load_segment(Checkpoint(model_dir), 0, 6, torch.device("cpu"), weights=weights)
    prompts = [[5, 17, 33], [8], [91, 4, 4, 60, 2, 7, 19, 3], [11, 12], [40, 41, 42, 43, 44]]
    prefilled = []
    for prompt in prompts:
        state = segment.new_state()
        segment.step(state, input_ids=torch.tensor([prompt]))
        prefilled.append(state)
    tokens = torch.tensor([[3, 9, 27, 81, 243, 100]] * len(prompts)) + torch.arange(len(prompts))[:, None]

    alone = []
    for i, state in enumerate(copy.deepcopy(prefilled)):
        steps = [segment.step(state, input_ids=tokens[i : i + 1, t : t + 1]).logits[0] for t in range(6)]
        alone.append(torch.stack(steps))
    states = copy.deepcopy(prefilled)
    batched = torch.stack(
        [segment.step_rows(states, input_ids=tokens[:, t : t + 1]).logits for t in range(6)], 1
    )
    assert all("engine" in block.native for block in segment._lean)  # block.c ran the batch
    bound = 1e-5 if weights in ("fp32", "bf16") else 1e-4
    assert torch.allclose(batched, torch.stack(alone), atol=bound, rtol=0)
    assert [s.seq_len for s in states] == [len(p) + 6 for p in prompts]

    one = copy.deepcopy(prefilled[2])
    assert torch.equal(segment.step_rows([one], input_ids=tokens[2:3, :1]).logits[0], alone[2][0])


def test_a_built_library_can_be_loaded_by_other_users(tmp_path):
    """The image builds the library as root for a non-root worker (Dockerfile): the file
    must not keep tempfile's private mode."""
    target = tmp_path / "cache" / "resplit-gemv-test.so"
    native._build(target)
    mode = target.stat().st_mode & 0o777
    assert mode & 0o044 == 0o044, oct(mode)  # group and others may read it
    assert not list(target.parent.glob("*.so.*")) and len(list(target.parent.iterdir())) == 1


@pytest.mark.parametrize("shape", [(1, 64), (37, 192), (100, 576), (17, 1024), (33, 2816)])
def test_int4_avx512_body_gives_the_portable_bodys_bits(shape):
    """The AVX-512 int4 body against the portable one on odd shapes (a row of one group
    pair, rows ending inside a superblock of sixteen groups, the model's sizes): the same
    integer products and the same float operations in the same order, so the same bits,
    for one row and for batches of up to MAX_ROWS."""
    if "avx512" not in BODIES:
        pytest.skip("this CPU has no AVX-512 VNNI body to compare with the portable one")
    n, k = shape
    g = torch.Generator().manual_seed(n * 7 + k)
    packed, s4, o4, w4 = _int4(n, k, g)
    x = torch.randn(native.MAX_ROWS, k, generator=g) * torch.rand(native.MAX_ROWS, 1, generator=g) * 10
    x[0, : min(k, 96)] = 0  # all-zero blocks: a zero scale
    try:
        for rows in (1, 3, native.MAX_ROWS):
            LIB.resplit_force_portable(1)
            portable = native.gemv_int4(LIB, x[:rows], packed, s4, o4)
            LIB.resplit_force_portable(0)
            fast = native.gemv_int4(LIB, x[:rows], packed, s4, o4)
            assert torch.equal(fast, portable), (shape, rows)
            assert torch.allclose(fast, F.linear(_blocks(x[:rows]), w4), atol=1e-4, rtol=1e-5), (shape, rows)
    finally:
        LIB.resplit_force_portable(0)


def test_an_int4_row_gets_the_same_bits_whatever_rows_it_is_batched_with(body):
    """Each activation row is quantized and summed on its own: a row in any batch (any
    size, any batch mates) gives the bits it gives alone."""
    g = torch.Generator().manual_seed(5)
    packed, s4, o4, _ = _int4(80, 704, g)
    x = torch.randn(native.MAX_ROWS, 704, generator=g)
    alone = torch.cat([native.gemv_int4(LIB, x[i : i + 1], packed, s4, o4) for i in range(native.MAX_ROWS)])
    for rows in range(2, native.MAX_ROWS + 1):
        assert torch.equal(native.gemv_int4(LIB, x[:rows], packed, s4, o4), alone[:rows]), (body, rows)
    other = x.clone()
    other[1:] = torch.randn(native.MAX_ROWS - 1, 704, generator=g) * 100
    assert torch.equal(native.gemv_int4(LIB, other, packed, s4, o4)[0], alone[0]), body
