"""`ember import gpt2 HF_DIR`: a Hugging Face GPT-2 checkpoint (safetensors) as an Ember GPT run.

The mapping, per layer i (HF's Conv1D stores weights as (in, out): transposed for nn.Linear):

    transformer.wte / wpe                 -> wte / wpe
    transformer.h.i.ln_1, ln_2            -> blocks.i.ln_1, ln_2
    transformer.h.i.attn.c_attn, c_proj   -> blocks.i.attn.c_attn, c_proj      (weights .T)
    transformer.h.i.mlp.c_fc, c_proj      -> blocks.i.mlp.c_fc, c_proj         (weights .T)
    transformer.ln_f                      -> ln_f;  lm_head is tied to wte in both

The run gets `gelu: tanh` (GPT-2's "gelu_new"), `vocab_multiple: 1` (no padded logits), the
checkpoint's tokenizer as `tokenizer.json`, and a config whose data section (stdlib_text with
`tokenizer_from` this run) makes `ember plan`, `train --init_from` and fine-tuning work as for
any run. Nothing is downloaded; only safetensors and JSON are read.
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
from ember.models.gpt import GPT, GPTConfig
from ember.runs import Run, atomic_write_text, new_run_dir
from ember.weights import load_tensors, save_weights, sha256_file

__all__ = ["import_gpt2", "convert_state"]

_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "exact"}


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"'{folder}' has no config.json; give a Hugging Face GPT-2 model directory")
    raw = json.loads(path.read_text())
    if raw.get("model_type") != "gpt2":
        raise ConfigError(f"'{folder}': model_type is {raw.get('model_type')!r}; `ember import gpt2` reads gpt2")
    if raw.get("activation_function", "gelu_new") not in _ACTIVATIONS:
        raise ConfigError(f"'{folder}': activation_function {raw['activation_function']!r} has no Ember "
                          f"equivalent; valid: {', '.join(_ACTIVATIONS)}")
    if raw.get("scale_attn_by_inverse_layer_idx") or raw.get("reorder_and_upcast_attn"):
        raise ConfigError(f"'{folder}': scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not "
                          "GPT-2's attention and are not supported")
    return raw


def _read_weights(folder: Path) -> dict[str, Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"'{folder}' has no .safetensors file (Ember reads no pytorch_model.bin pickles)")
    tensors: dict[str, Tensor] = {}
    for f in files:
        tensors.update(load_tensors(f))
    return tensors


def convert_state(hf: dict[str, Tensor], n_layer: int) -> dict[str, Tensor]:
    """HF GPT-2 tensor names and layouts -> Ember GPT's (attention mask buffers dropped).

    Raises:
        ConfigError: a tensor the mapping needs is absent.
    """
    src = {k.removeprefix("transformer."): v for k, v in hf.items()}
    out: dict[str, Tensor] = {}
    for name in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"):
        if name in src:
            out[name] = src[name]
    for i in range(n_layer):
        prefix = f"h.{i}."
        for key, value in src.items():
            if not key.startswith(prefix) or key.endswith((".attn.bias", ".attn.masked_bias")):
                continue
            rest = key[len(prefix):]
            out[f"blocks.{i}.{rest}"] = value.t().contiguous() if rest in _TRANSPOSED else value
    needed = ["wte.weight", "wpe.weight", "ln_f.weight", f"blocks.{n_layer - 1}.attn.c_attn.weight"]
    absent = [n for n in needed if n not in out]
    if absent:
        raise ConfigError(f"the checkpoint lacks {absent[:3]}: is it a GPT-2 model's safetensors?")
    return out


def _tokenizer_json(folder: Path) -> str:
    """The checkpoint's byte-level BPE as Ember's tokenizer.json (kind bpe)."""
    from tokenizers import Tokenizer

    if (folder / "tokenizer.json").is_file():
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        from tokenizers import ByteLevelBPETokenizer

        tok = ByteLevelBPETokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))._tokenizer
    else:
        raise ConfigError(f"'{folder}' has no tokenizer.json (or vocab.json + merges.txt); generate needs one")
    return json.dumps({"kind": "bpe", "tokenizer": json.loads(tok.to_str())})


def import_gpt2(folder: str | Path, out: str | Path | None = None, runs_dir: str | Path = "runs") -> Run:
    """Convert a local Hugging Face GPT-2 directory into a new Ember run and return it.

    Args:
        folder: holds config.json, *.safetensors and tokenizer.json (or vocab.json + merges.txt).
        out: the run directory to create (default: runs_dir/gpt2-import-<time>).

    Raises:
        ConfigError: not a GPT-2 directory, weights or tokenizer missing.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"'{folder}' is not a directory; give a Hugging Face GPT-2 model directory")
    hf_cfg = _read_config(folder)
    n_layer, n_embd = int(hf_cfg["n_layer"]), int(hf_cfg["n_embd"])
    vocab, block = int(hf_cfg["vocab_size"]), int(hf_cfg.get("n_positions", hf_cfg.get("n_ctx", 1024)))
    gelu = _ACTIVATIONS[hf_cfg.get("activation_function", "gelu_new")]
    state = convert_state(_read_weights(folder), n_layer)
    tokenizer = _tokenizer_json(folder)
    run = new_run_dir(Path(runs_dir), "gpt2-import", Path(out) if out else None)
    model_cfg = {"name": "gpt", "n_layer": n_layer, "n_head": int(hf_cfg["n_head"]), "n_embd": n_embd,
                 "block_size": block, "dropout": 0.0, "bias": True, "vocab_multiple": 1, "gelu": gelu}
    cfg = from_dict({
        "recipe": "gpt2-import",
        "description": f"GPT-2 weights imported from {folder}",
        "data": {"name": "stdlib_text", "tokenizer_from": str(run.path.resolve()), "block_size": block,
                 "batch_size": 8, "eval_batch_size": 8},
        "model": model_cfg,
        "log": {"runs_dir": str(runs_dir)},
    })
    model = GPT(GPTConfig(**model_cfg), vocab, block)
    expected = {k for k in model.state_dict() if k != "lm_head.weight"}  # tied to wte
    unknown = sorted(set(state) - expected)
    absent = sorted(expected - set(state))
    if unknown or absent:
        raise ConfigError(f"'{folder}': the weights do not fit a GPT-2 of this config: missing {absent[:3]}, "
                          f"unexpected {unknown[:3]}")
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
    info = DataInfo(task="lm", input_kind="tokens", input_shape=(block,), num_outputs=vocab,
                    extra={"vocab_size": vocab, "tokenizer": "bpe", "source": f"imported from {folder}"})
    atomic_write_text(run.config, to_yaml(cfg))
    atomic_write_text(run.data_info, info.to_json())
    atomic_write_text(run.path / "tokenizer.json", tokenizer)
    save_weights(model, run.weights)
    summary = {"recipe": "gpt2-import", "task": "lm", "imported_from": str(folder),
               "params": sum(p.numel() for p in model.parameters()), "weights_sha256": sha256_file(run.weights)}
    atomic_write_text(run.summary, json.dumps(summary, indent=2))
    return run
