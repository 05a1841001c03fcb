"""`ember generate`: stream text from a finished language-model run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ember.errors import ConfigError
from ember.loading import load_run, load_tokenizer
from ember.models.sampling import check_sampling, generate_text

__all__ = ["generate", "load_lm_run"]


def load_lm_run(run_dir: str | Path, command: str, max_new_tokens: int, temperature: float, top_k: int | None,
                top_p: float | None, repetition_penalty: float, presence_penalty: float,
                frequency_penalty: float, compile: bool = False) -> Any:
    """The loaded language-model run at `run_dir`, after checking the sampling settings.

    With `compile`, its decoding steps go through torch.compile (`compile_decoding`).

    Raises:
        ConfigError: a setting out of range, or a run that is not a language model.
    """
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens: got {max_new_tokens}; must be >= 1")
    check_sampling(temperature, top_k, top_p, repetition_penalty, presence_penalty, frequency_penalty)
    loaded = load_run(run_dir)
    if loaded.info.task != "lm":
        raise ConfigError(f"{command} needs a language-model run; '{loaded.run.path}' is a {loaded.info.task} run")
    if compile:
        from ember.models.compiled_decoding import compile_decoding

        compile_decoding(loaded.model)
    return loaded


def generate(run_dir: str | Path, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8,
             top_k: int | None = None, top_p: float | None = None, seed: int = 0,
             stop: list[str] | None = None, *, repetition_penalty: float = 1.0, presence_penalty: float = 0.0,
             frequency_penalty: float = 0.0, compile: bool = False) -> Iterator[str]:
    """Stream the text a language-model run writes after `prompt`, piece by piece.

    Stops after `max_new_tokens`, at the tokenizer's end-of-sequence token, or when any of
    `stop` appears (the stop string excluded, even when it spans tokens). `repetition_penalty`
    (CTRL's: > 1 discourages tokens already in the context), `presence_penalty` and
    `frequency_penalty` (OpenAI's, -2..2, over the completion) reshape the logits before
    sampling; see `ember.models.sampling`. The same `seed` gives the same text. `compile`:
    the one-token steps through torch.compile (`ember.models.compiled_decoding`; the first
    step compiles, about a minute for a 30-layer model).
    """
    loaded = load_lm_run(run_dir, "generate", max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                         presence_penalty, frequency_penalty, compile)
    yield from generate_text(loaded.model, load_tokenizer(loaded.run.path), loaded.info, prompt, max_new_tokens,
                             temperature, top_k, top_p, seed, stop, repetition_penalty=repetition_penalty,
                             presence_penalty=presence_penalty, frequency_penalty=frequency_penalty)
