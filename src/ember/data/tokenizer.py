"""Tokenizers for text sources: characters, or byte-level BPE (Hugging Face `tokenizers`).

Both are fitted on the training split only and saved into the run as `tokenizer.json`.
"""

from __future__ import annotations

import json
from typing import Any

from ember.errors import DataError

__all__ = ["CharTokenizer", "BPETokenizer", "tokenizer_from_json", "fit_tokenizer"]


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


class BPETokenizer:
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

    @property
    def vocab_size(self) -> int:
        return int(self.tok.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text).ids)

    def decode(self, ids: list[int]) -> str:
        return str(self.tok.decode(list(ids)))

    def to_json(self) -> str:
        return json.dumps({"kind": "bpe", "tokenizer": json.loads(self.tok.to_str())})


def fit_tokenizer(kind: str, text: str, vocab_size: int = 2048) -> CharTokenizer | BPETokenizer:
    return CharTokenizer.fit(text) if kind == "char" else BPETokenizer.fit(text, vocab_size)


def tokenizer_from_json(text: str) -> CharTokenizer | BPETokenizer:
    """Rebuild a tokenizer saved with `to_json` (a run's tokenizer.json)."""
    try:
        raw = json.loads(text)
        kind = raw["kind"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DataError("tokenizer.json is not a tokenizer Ember wrote") from None
    if kind == "char":
        return CharTokenizer(list(raw["chars"]))
    if kind == "bpe":
        from tokenizers import Tokenizer

        return BPETokenizer(Tokenizer.from_str(json.dumps(raw["tokenizer"])))
    raise DataError(f"tokenizer.json: unknown kind {kind!r}; valid: char, bpe")
