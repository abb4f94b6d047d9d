"""A worker's resident memory within issue 30's bound: 1.2 x its segment's bytes + 300 MiB.

A real worker process (with Redis, the broadcaster and the orchestrator, as
``resplit up`` starts them) serves a Llama from safetensors, built from a config
class, in each weight format. Its RSS (``/proc/<pid>/status``) is read while it is
SERVING with nothing loaded and again after it loaded the whole model as one
segment and generated with it. A Llama segment is built without transformers'
model code (``resplit/models/rotary_lean.py``): the worker's own metric counts the
transformers modeling modules in its process and must read 0 until a GPT-2 segment
arrives, which takes transformers' path and imports them then. The orchestrator that
deployed both never loads torch (services/orchestrator/core/models.py).
"""

from __future__ import annotations

import pytest
from support import LocalStack, greedy, metric_sum, spread

from resplit.models import Checkpoint, load_segment, num_units
from resplit.models.tiny import build_tiny
from resplit.sdk import Client, Sampling

pytestmark = pytest.mark.integration

MIB = 1 << 20
#: Large enough that the weights weigh in the bound (about 50 MB at fp32), small enough to
#: build in a second: 4 blocks at hidden 512.
SIZE = {"hidden_size": 512, "intermediate_size": 1536, "num_attention_heads": 8, "num_key_value_heads": 4}
PROMPT = [5, 17, 33, 40, 41, 8]
TOKENS = 8


def rss_mib(pid: int) -> float:
    """VmRSS of process ``pid`` in MiB, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return build_tiny("llama", tmp_path_factory.mktemp("rss") / "llama", **SIZE)


@pytest.mark.parametrize("weights", ["fp32", "int4"])
def test_worker_rss_is_within_the_bound_and_llama_needs_no_transformers_model_code(
    llama, tiny_models, weights
):
    units = num_units(Checkpoint(llama).config)
    segment_mib = load_segment(Checkpoint(llama), 0, units, weights=weights).param_bytes() / MIB
    expected = greedy(llama, PROMPT, TOKENS)[0] if weights == "fp32" else None
    local = LocalStack(workers=1)
    try:
        local.start()
        worker = local.worker_procs[0]
        pid = worker.proc.pid
        idle = rss_mib(pid)
        local.deploy("rss", llama, spread(units, 1), weights=weights)
        with Client(local.orchestrator.address) as client:
            tokens = list(client.generate_ids(PROMPT, client.route("rss"), Sampling(max_new_tokens=TOKENS)))
        loaded = rss_mib(pid)
        bound = 1.2 * segment_mib + 300
        sizes = f"segment {segment_mib:.1f} MiB, RSS idle {idle:.0f}, loaded {loaded:.0f}, bound {bound:.0f}"
        print(f"{weights}: {sizes}")
        if expected is not None:
            assert [t.token_id for t in tokens] == expected
        assert len(tokens) == TOKENS
        assert loaded <= bound, f"RSS {loaded:.0f} MiB > 1.2 x {segment_mib:.1f} + 300 MiB (idle {idle:.0f})"
        assert metric_sum([worker], 'resplit_worker_segments{engine="lean"}') == 1
        assert metric_sum([worker], "resplit_worker_transformers_modeling_modules") == 0
        assert "engine lean" in worker.log.tail()
        # A family the lean build does not cover takes transformers' path, imported on arrival.
        local.deploy(
            "rss-gpt2", tiny_models["gpt2"], spread(num_units(Checkpoint(tiny_models["gpt2"]).config), 1)
        )
        assert metric_sum([worker], 'resplit_worker_segments{engine="transformers"}') == 1
        assert metric_sum([worker], "resplit_worker_transformers_modeling_modules") >= 2
        # The orchestrator deployed both from their config.json alone: no torch in it.
        with open(f"/proc/{local.orchestrator.proc.pid}/maps") as maps:
            assert "libtorch" not in maps.read()
    finally:
        local.stop()
