"""Conversations for instruction tuning: JSONL files of {"messages": [...]}, scored on the answers.

Each line is one conversation, `{"messages": [{"role": "system"|"user"|"assistant", "content":
"..."}, ...]}`. It is written out by the chat template of the base run (`tokenizer_from`) and
tokenized by that run's tokenizer, the way `ember chat` will prompt the tuned model. The target
of a position is the next token only where that token belongs to an assistant's answer or is
the end-of-turn marker the template writes after it; everything else (system and user turns,
the template's markup, padding) is IGNORE_INDEX and carries no loss.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ember.chat_format import answer_segments, find_chat_template
from ember.data.bundle import ArrayDataset, DataBundle, DataInfo
from ember.data.splits import split_indices
from ember.data.text_config import ChatJsonlConfig
from ember.data.tokenizer import tokenizer_from
from ember.errors import DataError
from ember.pretrained import resolve
from ember.tasks import IGNORE_INDEX

__all__ = ["load_chat_jsonl", "read_conversations", "encode_conversation", "PaddedTokens", "CHAT_ROLES"]

CHAT_ROLES = ("system", "user", "assistant")
_SHAPE = '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}'

Conversation = list[dict[str, str]]


class PaddedTokens(ArrayDataset):
    """Right-padded token rows whose batches are cut to their longest row.

    Padding sits after a row's last token and the models are causal, so cutting it changes
    no logit of a real position; it only saves the work on padding.
    """

    def __init__(self, x: Tensor, y: Tensor, lengths: Tensor) -> None:
        super().__init__(x, y)
        self.lengths = lengths

    def batch(self, indices: Tensor, epoch: int = 0, train: bool = False) -> tuple[Tensor, Tensor]:
        x, y = super().batch(indices, epoch, train)
        width = max(int(self.lengths[indices].max()), 1) if len(indices) else 1
        return x[:, :width], y[:, :width]

    def subset(self, indices: Tensor) -> PaddedTokens:
        return PaddedTokens(self.x[indices], self.y[indices], self.lengths[indices])


def _message(raw: Any, where: str, j: int) -> dict[str, str]:
    if not isinstance(raw, dict) or not isinstance(raw.get("role"), str) or not isinstance(raw.get("content"), str):
        raise DataError(f"{where}, message {j}: each message needs a 'role' and a 'content' string, like "
                        '{"role": "user", "content": "..."}')
    if raw["role"] not in CHAT_ROLES:
        raise DataError(f"{where}, message {j}: role '{raw['role'][:40]}' is not one of {', '.join(CHAT_ROLES)}")
    return {"role": raw["role"], "content": raw["content"]}


def read_conversations(path: Path) -> list[tuple[int, Conversation]]:
    """(line number, messages) for each conversation in one JSONL file; blank lines are skipped.

    Raises:
        DataError: a missing or unreadable file, a line that is not a JSON object with a
            'messages' list of {role, content} strings, an unknown role, a conversation
            without an assistant turn, or a file holding no conversation at all.
    """
    if not path.is_file():
        raise DataError(f"data.paths: '{path}' does not exist (give JSONL files, one conversation per line)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[:e.start].count(b"\n") + 1
        raise DataError(f"data.paths: {path} line {line} is not UTF-8 text; save the file as UTF-8") from None
    except OSError as e:
        raise DataError(f"data.paths: cannot read '{path}': {e.strerror or e}") from None
    out: list[tuple[int, Conversation]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"data.paths: {path} line {n}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where} is not JSON ({e.msg} at column {e.colno}); each line must be one "
                            f"object like {_SHAPE}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("messages"), list) or not raw["messages"]:
            raise DataError(f"{where} has no 'messages' list; each line must be one object like {_SHAPE}")
        messages = [_message(m, where, j) for j, m in enumerate(raw["messages"], start=1)]
        if not any(m["role"] == "assistant" for m in messages):
            raise DataError(f"{where} has no assistant message; each conversation needs at least one "
                            "(the assistant's answers are what is trained)")
        out.append((n, messages))
    if not out:
        raise DataError(f"data.paths: {path} holds no conversations; write one JSON object per line, like {_SHAPE}")
    return out


def _encode(tok: Any, text: str, first: bool) -> list[int]:
    inner = getattr(tok, "tok", None)  # a `tokenizers` tokenizer: special tokens added once, at the start
    if inner is None:
        return list(tok.encode(text))
    return list(inner.encode(text, add_special_tokens=first).ids)


def encode_conversation(messages: Conversation, template: str, tok: Any) -> tuple[list[int], list[bool]]:
    """The conversation's token ids and, per token, whether it is trained (answer or end-of-turn).

    Raises:
        ValueError: the template fails on these messages or does not render them turn by turn.
    """
    ids: list[int] = []
    scored: list[bool] = []
    bos, eos = getattr(tok, "bos_token", "") or "", getattr(tok, "eos_token", "") or ""
    for text, kind in answer_segments(messages, template, bos, eos):
        piece = _encode(tok, text, first=not ids)
        ids += piece
        if kind == "end":  # the end-of-turn marker is learnt; what follows it is the next turn's markup
            scored += [True] + [False] * (len(piece) - 1) if piece else []
        else:
            scored += [kind == "answer"] * len(piece)
    return ids, scored


def _rows(convs: list[tuple[str, Conversation]], template: str, tok: Any, cfg: ChatJsonlConfig
          ) -> tuple[list[list[int]], list[list[int]], dict[str, int]]:
    """Inputs and targets per conversation (next tokens, IGNORE_INDEX where not trained)."""
    xs, ys = [], []
    counts = {"truncated": 0, "dropped": 0, "scored_tokens": 0}
    for where, messages in convs:
        try:
            ids, scored = encode_conversation(messages, template, tok)
        except Exception as exc:  # noqa: BLE001  (a template error is the base run's, told in one line)
            raise DataError(f"{where}: the chat template of data.tokenizer_from failed: {exc}") from None
        if len(ids) - 1 > cfg.max_length:
            if cfg.overflow == "drop":
                counts["dropped"] += 1
                continue
            counts["truncated"] += 1
            ids, scored = ids[:cfg.max_length + 1], scored[:cfg.max_length + 1]
        y = [t if s else IGNORE_INDEX for t, s in zip(ids[1:], scored[1:], strict=True)]
        trained = sum(t != IGNORE_INDEX for t in y)
        if not trained:  # its first answer starts past max_length: nothing to learn from it
            counts["dropped"] += 1
            continue
        counts["scored_tokens"] += trained
        xs.append(ids[:-1])
        ys.append(y)
    return xs, ys, counts


def _padded(xs: list[list[int]], ys: list[list[int]]) -> PaddedTokens:
    width = max((len(x) for x in xs), default=1)
    x = torch.zeros(len(xs), width, dtype=torch.long)  # pad id 0: never a target, never seen by a real position
    y = torch.full((len(xs), width), IGNORE_INDEX, dtype=torch.long)
    for i, (a, b) in enumerate(zip(xs, ys, strict=True)):
        x[i, :len(a)] = torch.tensor(a, dtype=torch.long)
        y[i, :len(b)] = torch.tensor(b, dtype=torch.long)
    return PaddedTokens(x, y, torch.tensor([len(a) for a in xs], dtype=torch.long))


def load_chat_jsonl(cfg: ChatJsonlConfig, seed: int) -> DataBundle:
    """The conversations of `cfg.paths`, split by conversation from `seed`, scored on the answers."""
    convs: list[tuple[str, Conversation]] = []
    files: dict[str, str] = {}
    for path in cfg.paths:
        for n, messages in read_conversations(path):
            convs.append((f"data.paths: {path} line {n}", messages))
        files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    base = resolve(cfg.tokenizer_from, "data.tokenizer_from")
    template = find_chat_template(base)
    if not template:
        raise DataError(f"data.tokenizer_from: '{cfg.tokenizer_from}' has no chat template (chat_template.jinja); "
                        "give the run of a chat model, e.g. one made by ember import smollm2-135m-instruct")
    tok = tokenizer_from(cfg.tokenizer_from)
    parts = dict(zip(("train", "val", "test"), split_indices(len(convs), cfg, seed), strict=True))
    splits: dict[str, PaddedTokens] = {}
    counts: dict[str, dict[str, int]] = {}
    for name, idx in parts.items():
        xs, ys, counts[name] = _rows([convs[i] for i in idx.tolist()], template, tok, cfg)
        counts[name]["conversations"] = len(xs)
        splits[name] = _padded(xs, ys)
    if cfg.limit is not None:
        splits["train"] = splits["train"].subset(torch.arange(min(cfg.limit, len(splits["train"]))))
    if not len(splits["train"]):
        raise DataError(f"data.max_length={cfg.max_length} leaves no training conversation with an answer "
                        "inside it; raise data.max_length")
    info = DataInfo(
        task="lm", input_kind="tokens", input_shape=(cfg.max_length,), num_outputs=tok.vocab_size,
        extra={"source": "chat jsonl", "files": files, "vocab_size": tok.vocab_size, "tokenizer": tok.kind,
               "tokenizer_from": cfg.tokenizer_from, "conversations": counts,
               "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest()},
    )
    return DataBundle(splits["train"], splits["val"], splits["test"], info, tokenizer=tok, chat_template=template)
