"""The benchmark's Llama written as a GGUF file, for llama.cpp to run the same model.

llama.cpp's own converter (``convert_hf_to_gguf.py``) insists on a tokenizer it
recognises, and the benchmark's tokenizer is a small BPE trained in
``resplit/models/tiny.py``. Speed does not depend on the vocabulary's strings, only on
its size, so this writes the checkpoint's tensors under llama.cpp's names, with the
query and key rows permuted as its converter permutes them (llama.cpp rotates
interleaved pairs, transformers rotates halves) and a placeholder SentencePiece-style
vocabulary of the checkpoint's size. The ``gguf`` package is the one in llama.cpp's
source tree (``gguf-py``), so resplit does not depend on it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

#: transformers' name of a block's tensor -> llama.cpp's.
BLOCK_TENSORS = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a query or key projection from rotate-half to interleaved order."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def gguf_name(name: str, config: dict) -> tuple[str, bool] | None:
    """(llama.cpp's tensor name, whether its rows are permuted) for a checkpoint tensor."""
    if name == "model.embed_tokens.weight":
        return "token_embd.weight", False
    if name == "model.norm.weight":
        return "output_norm.weight", False
    if name == "lm_head.weight":
        return "output.weight", False
    parts = name.split(".")
    if parts[:2] != ["model", "layers"]:
        return None
    block, rest = parts[2], ".".join(parts[3:-1])
    return f"blk.{block}.{BLOCK_TENSORS[rest]}.{parts[-1]}", rest in ("self_attn.q_proj", "self_attn.k_proj")


def write_gguf(model_dir: Path, out: Path, llama_cpp_src: Path) -> Path:
    """Write ``model_dir`` (a Llama checkpoint, fp32 safetensors) to ``out`` as an F32 GGUF."""
    sys.path.insert(0, str(llama_cpp_src / "gguf-py"))
    import gguf

    config = json.loads((model_dir / "config.json").read_text())
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name("resplit-benchmark-llama")
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(config["hidden_size"] // heads)
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    vocab = config["vocab_size"]
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"<t{i}>".encode() for i in range(vocab)])
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types([gguf.TokenType.NORMAL] * vocab)
    writer.add_bos_token_id(config.get("bos_token_id", 1))
    writer.add_eos_token_id(config.get("eos_token_id", 2))
    tensors = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(path))
    for name, array in tensors.items():
        mapped = gguf_name(name, config)
        if mapped is None:
            raise ValueError(f"{name}: not a Llama tensor this writer knows")
        target, permuted = mapped
        if permuted:
            array = _permute(array, heads if "attn_q" in target else kv_heads)
        writer.add_tensor(target, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
