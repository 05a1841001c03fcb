"""`ember import HF_DIR`: a Hugging Face `LlamaForCausalLM` checkpoint as an Ember llama run.

Ember's Llama uses Hugging Face's module names, so the mapping only drops the `model.` prefix:

    model.embed_tokens / model.norm        -> embed_tokens / norm
    model.layers.i.{self_attn,mlp,...}     -> layers.i.{self_attn,mlp,...}   (same layouts)
    lm_head                                -> lm_head (absent when tied to the embedding)

The run gets `vocab_multiple: 1`, the checkpoint's tokenizer.json, its chat template (from
tokenizer_config.json) as chat_template.jinja, and a config whose data section reuses this
run's tokenizer, as for an imported GPT-2. `write_llama_run` is shared with the GGUF import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ember.config import from_dict, to_yaml
from ember.data.bundle import DataInfo
from ember.errors import ConfigError
from ember.models.llama import Llama, LlamaConfig
from ember.runs import Run, atomic_write_text, new_run_dir
from ember.weights import load_tensors, save_weights, sha256_file

__all__ = ["import_llama_dir", "write_llama_run", "DEFAULT_MAX_BLOCK"]

# A longer window costs a KV cache of that length per sequence (generate, serve); the model's
# own limit applies when it is smaller, and --block-size asks for more.
DEFAULT_MAX_BLOCK = 2048


def _read_config(folder: Path) -> dict[str, Any]:
    raw = json.loads((folder / "config.json").read_text())
    if raw.get("model_type") != "llama":
        raise ConfigError(f"'{folder}': model_type is {raw.get('model_type')!r}; `ember import` reads llama and gpt2")
    if raw.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"'{folder}': hidden_act {raw['hidden_act']!r} is not Llama's silu")
    rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}  # transformers 5 / 4 spelling
    if not isinstance(rope, dict) or rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ConfigError(f"'{folder}': RoPE scaling {rope!r} is not supported (plain RoPE only)")
    if raw.get("mlp_bias"):
        raise ConfigError(f"'{folder}': mlp_bias is not supported")
    hidden, heads = int(raw["hidden_size"]), int(raw["num_attention_heads"])
    if raw.get("head_dim") not in (None, hidden // heads):
        raise ConfigError(f"'{folder}': head_dim {raw['head_dim']} != hidden_size / num_attention_heads")
    return raw


def _rope_theta(raw: dict[str, Any]) -> float:
    params = raw.get("rope_parameters")
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    return float(raw.get("rope_theta", 10000.0))


def model_section(raw: dict[str, Any], block: int) -> dict[str, Any]:
    """Ember's `model:` section for a Hugging Face Llama config.json (as a dict)."""
    return {"name": "llama", "n_layer": int(raw["num_hidden_layers"]), "n_head": int(raw["num_attention_heads"]),
            "n_kv_head": int(raw.get("num_key_value_heads") or raw["num_attention_heads"]),
            "n_embd": int(raw["hidden_size"]), "intermediate_size": int(raw["intermediate_size"]),
            "block_size": block, "rope_theta": _rope_theta(raw),
            "norm_eps": float(raw.get("rms_norm_eps", 1e-6)),
            "tie_embeddings": bool(raw.get("tie_word_embeddings", False)),
            "attention_bias": bool(raw.get("attention_bias", False)), "dropout": 0.0, "vocab_multiple": 1}


def _read_weights(folder: Path) -> dict[str, Tensor]:
    files = sorted(folder.glob("*.safetensors"))  # one file or the shards an index names
    if not files:
        raise ConfigError(f"'{folder}' has no .safetensors file (Ember reads no pytorch_model.bin pickles)")
    tensors: dict[str, Tensor] = {}
    for f in files:
        tensors.update(load_tensors(f))
    return {k.removeprefix("model."): v for k, v in tensors.items() if not k.endswith("rotary_emb.inv_freq")}


def write_llama_run(model_cfg: dict[str, Any], vocab: int, state: dict[str, Tensor], tokenizer_json: str,
                    chat_template: str | None, source: str, recipe: str, out: Path | None,
                    runs_dir: Path) -> Run:
    """Check `state` against a Llama of `model_cfg`, then write weights, config, tokenizer, template.

    Raises:
        ConfigError: a tensor is missing, unexpected, or of the wrong shape.
    """
    cfg_section = LlamaConfig(**model_cfg)
    with torch.device("meta"):  # shapes only: the real tensors come from `state`
        shapes = {k: tuple(v.shape) for k, v in Llama(cfg_section, vocab, 1).state_dict().items()}
    if cfg_section.tie_embeddings:
        shapes.pop("lm_head.weight")
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}  # some files store the tied copy
    absent, unknown = sorted(set(shapes) - set(state)), sorted(set(state) - set(shapes))
    if absent or unknown:
        raise ConfigError(f"'{source}': the weights do not fit a Llama of this config: missing {absent[:3]}, "
                          f"unexpected {unknown[:3]}")
    wrong = [f"{k} {tuple(v.shape)} (expected {shapes[k]})" for k, v in state.items() if tuple(v.shape) != shapes[k]]
    if wrong:
        raise ConfigError(f"'{source}': tensor shapes do not match the config: {'; '.join(wrong[:2])}")
    run = new_run_dir(runs_dir, recipe, out)
    block = int(model_cfg["block_size"])
    cfg = from_dict({
        "recipe": recipe,
        "description": f"Llama weights imported from {source}",
        "data": {"name": "stdlib_text", "tokenizer_from": str(run.path.resolve()), "block_size": min(block, 1024),
                 "batch_size": 8, "eval_batch_size": 8},
        "model": model_cfg,
        "log": {"runs_dir": str(runs_dir)},
    })
    model = Llama(cfg_section, vocab, block)
    with torch.no_grad():
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    info = DataInfo(task="lm", input_kind="tokens", input_shape=(block,), num_outputs=vocab,
                    extra={"vocab_size": vocab, "tokenizer": "bpe", "source": f"imported from {source}"})
    atomic_write_text(run.config, to_yaml(cfg))
    atomic_write_text(run.data_info, info.to_json())
    atomic_write_text(run.path / "tokenizer.json", tokenizer_json)
    if chat_template:
        atomic_write_text(run.path / "chat_template.jinja", chat_template)
    save_weights(model, run.weights)
    summary = {"recipe": recipe, "task": "lm", "imported_from": source,
               "params": sum(p.numel() for p in model.parameters()), "weights_sha256": sha256_file(run.weights)}
    atomic_write_text(run.summary, json.dumps(summary, indent=2))
    return run


def _chat_template(folder: Path) -> str | None:
    for name in ("chat_template.jinja", "chat_template.txt"):
        if (folder / name).is_file():
            return (folder / name).read_text(encoding="utf-8")
    path = folder / "tokenizer_config.json"
    if path.is_file():
        value = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
        return value if isinstance(value, str) and value else None
    return None


def import_llama_dir(folder: str | Path, out: str | Path | None = None, runs_dir: str | Path = "runs",
                     block_size: int | None = None) -> Run:
    """Convert a local Hugging Face Llama directory into a new Ember run and return it.

    Args:
        folder: holds config.json (model_type llama), *.safetensors and tokenizer.json.
        block_size: the run's context length (default: the model's, at most DEFAULT_MAX_BLOCK).

    Raises:
        ConfigError: not a Llama directory, or its weights or tokenizer are missing.
    """
    folder = Path(folder).expanduser()
    raw = _read_config(folder)
    if not (folder / "tokenizer.json").is_file():
        raise ConfigError(f"'{folder}' has no tokenizer.json; generate needs one")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer_json = json.dumps({"kind": "bpe", "tokenizer": json.loads(tok.to_str())})
    block = block_size or min(int(raw.get("max_position_embeddings", DEFAULT_MAX_BLOCK)), DEFAULT_MAX_BLOCK)
    return write_llama_run(model_section(raw, block), int(raw["vocab_size"]), _read_weights(folder), tokenizer_json,
                           _chat_template(folder), str(folder), "llama-import", Path(out) if out else None,
                           Path(runs_dir))
