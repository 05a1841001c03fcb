"""`ember generate`: stream text from a finished language-model run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ember.errors import ConfigError
from ember.loading import load_run, load_tokenizer
from ember.models.sampling import generate_text

__all__ = ["generate"]


def generate(run_dir: str | Path, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8,
             top_k: int | None = None, top_p: float | None = None, seed: int = 0,
             stop: list[str] | None = None) -> Iterator[str]:
    """Stream the text a language-model run writes after `prompt`, piece by piece.

    Stops after `max_new_tokens` or when any of `stop` appears (the stop string excluded).
    """
    loaded = load_run(run_dir)
    if loaded.info.task != "lm":
        raise ConfigError(f"generate needs a language-model run; '{loaded.run.path}' is a {loaded.info.task} run")
    yield from generate_text(loaded.model, load_tokenizer(loaded.run.path), loaded.info, prompt, max_new_tokens,
                             temperature, top_k, top_p, seed, stop)
