"""A GGUF file's GPT-2-style BPE (`tokenizer.ggml.*` metadata) as a Hugging Face `tokenizers` Tokenizer.

tokens + merges make a byte-level BPE; tokens typed CONTROL (3) or USER_DEFINED (4) become
special added tokens, so `<|im_start|>` in a chat prompt is one id and is skipped by nothing.
`tokenizer.ggml.pre` "smollm" (and the other digit-splitting pre-tokenizers) also splits digits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ember.errors import ConfigError

__all__ = ["tokenizer_json"]

_CONTROL, _USER_DEFINED = 3, 4
_SPLIT_DIGITS = ("smollm", "starcoder", "refact", "command-r", "qwen2")


def tokenizer_json(reader: Any, source: Path, vocab: int, field: Callable[..., Any]) -> dict[str, Any]:
    """Ember's tokenizer.json content ({"kind": "bpe", "tokenizer": ...}) for the file's vocabulary."""
    import json

    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    kind = field("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ConfigError(f"'{source}': tokenizer.ggml.model is {kind!r}; Ember reads GGUF tokenizers of kind gpt2 "
                          "(byte-level BPE)")
    tokens, merges = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.merges")
    types = field("tokenizer.ggml.token_type", [])
    if not isinstance(tokens, list) or len(tokens) != vocab or len(set(tokens)) != len(tokens):
        raise ConfigError(f"'{source}': tokenizer.ggml.tokens must list {vocab} distinct tokens")
    if not isinstance(merges, list) or any(not isinstance(m, str) or m.count(" ") != 1 for m in merges):
        raise ConfigError(f"'{source}': tokenizer.ggml.merges must be 'left right' strings")
    pairs = [tuple(m.split(" ")) for m in merges]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=pairs))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if field("tokenizer.ggml.pre", "default") in _SPLIT_DIGITS:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    specials = [t for t, ty in zip(tokens, types, strict=False) if ty in (_CONTROL, _USER_DEFINED)]
    if specials:
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    if tok.get_vocab_size() != vocab:
        raise ConfigError(f"'{source}': the tokenizer has {tok.get_vocab_size()} ids, the model {vocab}")
    return {"kind": "bpe", "tokenizer": json.loads(tok.to_str())}
