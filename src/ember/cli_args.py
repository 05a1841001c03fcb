"""Small argument parsers for the CLI (no torch import: `ember --help` stays light)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["unescape", "int_in", "float_in", "add_sampling_flags", "sampling_kwargs"]

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", "'": "'", '"': '"'}
_PATTERN = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|.)", re.DOTALL)


def unescape(text: str) -> str:
    """Interpret backslash escapes the way a user typing `--stop "\\n\\n"` means them.

    `\\n \\t \\r \\0 \\\\ \\' \\"`, `\\xNN` and `\\uNNNN`; any other backslash is kept as typed.
    Unlike `codecs.decode(..., "unicode_escape")`, non-ASCII text passes through unchanged.

    Example:
        >>> unescape(r"\\n\\nclass ") == "\\n\\nclass "
        True
    """
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] in "xu" and len(code) > 1:
            return chr(int(code[1:], 16))
        return _ESCAPES.get(code, match.group(0))

    return _PATTERN.sub(one, text)


def _number_in(kind: type, low: float, high: float | None) -> Callable[[str], Any]:
    """An argparse `type` for finite numbers of `kind` in [low, high]; argparse turns its error into exit 2."""
    import argparse
    import math

    noun = "whole number" if kind is int else "number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a {noun}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"got {text}; give a finite number")
        if value < low or (high is not None and value > high):
            valid = f"{low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{text} is out of range; valid: {valid}")
        return value

    return parse


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """Whole numbers in [low, high] (an argparse `type`)."""
    return _number_in(int, low, high)


def float_in(low: float, high: float | None = None) -> Callable[[str], float]:
    """Finite numbers in [low, high] (an argparse `type`): nan and inf are refused."""
    return _number_in(float, low, high)


def add_sampling_flags(parser: Any, max_new_tokens: int = 200) -> None:
    """The sampling options `ember generate` and `ember chat` share, each bounded (exit 2 outside)."""
    parser.add_argument("--max-new-tokens", type=int_in(1, 1_000_000), default=max_new_tokens,
                        help=f"tokens to write at most (default {max_new_tokens})")
    parser.add_argument("--temperature", type=float_in(0, 100), default=0.8, help="0 = greedy (default 0.8)")
    parser.add_argument("--top-k", type=int_in(1), default=None, help="sample among the k likeliest tokens")
    parser.add_argument("--top-p", type=float_in(0, 1), default=None,
                        help="nucleus sampling: the smallest set of tokens whose probability reaches p, in (0, 1]")
    parser.add_argument("--repetition-penalty", type=float_in(0.01, 100), default=1.0,
                        help="CTRL's: logits of tokens already in the context divided by it (multiplied when "
                             "negative); > 1 discourages repeats, 1 = off (default)")
    parser.add_argument("--presence-penalty", type=float_in(-2, 2), default=0.0,
                        help="OpenAI's: subtracted from every token already in the answer, -2..2 (default 0)")
    parser.add_argument("--frequency-penalty", type=float_in(-2, 2), default=0.0,
                        help="OpenAI's: times the token's count in the answer, subtracted, -2..2 (default 0)")
    parser.add_argument("--seed", type=int_in(0, 2**63 - 1), default=0, help="the same seed, the same text")
    parser.add_argument("--stop", action="append", default=None, type=unescape,
                        help=r"stop string (repeatable), never printed; escapes like \n are interpreted")
    parser.add_argument("--compile", action="store_true",
                        help="decode through torch.compile: faster tokens after a first step that compiles "
                             "(about a minute for a 30-layer model; needs a C++ compiler on a CPU)")
    parser.add_argument("--draft", default=None, metavar="int8|int4|RUN",
                        help="speculative decoding: a fast draft writes tokens the model checks several at a time; "
                             "int8/int4 = this run quantized in memory, or a run folder with the same tokenizer. "
                             "Greedy text stays the model's own")
    parser.add_argument("--draft-tokens", type=int_in(1, 16), default=8,  # speculative.DRAFT_TOKENS; not imported: the CLI stays torch-free
                        help="tokens drafted per check (default 8)")


def sampling_kwargs(args: Any) -> dict[str, Any]:
    """The parsed sampling flags as keyword arguments of `ember.generation.generate` / `ember.chat`."""
    return {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_k": args.top_k,
            "top_p": args.top_p, "seed": args.seed, "stop": args.stop,
            "repetition_penalty": args.repetition_penalty, "presence_penalty": args.presence_penalty,
            "frequency_penalty": args.frequency_penalty, "compile": args.compile, "draft": args.draft,
            "draft_tokens": args.draft_tokens}
