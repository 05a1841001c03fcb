"""Write a tiny Hugging Face Llama (see helpers.tiny_llama) as a GGUF file, the way llama.cpp's converter does."""

from __future__ import annotations

import json
from pathlib import Path

_NAMES = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
          "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def _permute(w, n_head: int):  # noqa: ANN001, ANN202 - llama.cpp's row order for RoPE (adjacent pairs)
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(hf_dir: Path, path: Path, qtype: str = "F32", arch: str = "llama", drop: str | None = None) -> Path:
    """`hf_dir`'s weights, hyper-parameters, tokenizer and chat template as a GGUF file at `path`.

    qtype: F32, F16 or a type gguf.quants can quantize (Q8_0...) for the 2-D weights; `drop`
    leaves one tensor out (to test a broken file).
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    cfg = json.loads((hf_dir / "config.json").read_text())
    tok = json.loads((hf_dir / "tokenizer.json").read_text())
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"] if "rope_parameters" in cfg else cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    vocab = tok["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    specials = {t["content"] for t in tok.get("added_tokens", []) if t.get("special")}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in specials else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_chat_template(json.loads((hf_dir / "tokenizer_config.json").read_text())["chat_template"])
    qt = gguf.GGMLQuantizationType[qtype]
    for name, value in load_file(str(hf_dir / "model.safetensors")).items():
        name = name.removeprefix("model.")
        if name == "embed_tokens.weight":
            out = "token_embd.weight"
        elif name == "norm.weight":
            out = "output_norm.weight"
        elif name == "lm_head.weight":
            out = "output.weight"
        else:
            _, i, rest = name.split(".", 2)
            out = f"blk.{i}.{_NAMES[rest.removesuffix('.weight')]}.weight"
            if rest.startswith("self_attn.q_proj"):
                value = _permute(value, n_head)
            elif rest.startswith("self_attn.k_proj"):
                value = _permute(value, n_kv)
        if out == drop:
            continue
        value = np.ascontiguousarray(value, dtype=np.float32)
        if value.ndim == 2 and qt != gguf.GGMLQuantizationType.F32:
            w.add_tensor(out, gguf.quants.quantize(value, qt), raw_dtype=qt)
        else:
            w.add_tensor(out, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
