"""`ember generate`: stream text from a finished language-model run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from ember.errors import ConfigError
from ember.loading import load_run, load_tokenizer
from ember.models.decoding import generate_text
from ember.models.sampling import check_sampling
from ember.models.speculative import DRAFT_TOKENS, check_draft
from ember.safe_paths import inside, read_text

__all__ = ["generate", "load_lm_run", "load_draft", "QUANTIZED_DRAFTS"]

QUANTIZED_DRAFTS = {"int8": 8, "int4": 4}  # --draft int8|int4: the run itself, weight-only quantized in memory


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


def load_draft(draft: str | Path | None, loaded: Any, draft_tokens: int = DRAFT_TOKENS, compile: bool = False) -> nn.Module | None:
    """The draft model for speculative decoding of `loaded` (a loaded language-model run), or None.

    `draft`: "int8" or "int4" (the run's own model, weight-only quantized in memory, as
    `ember compress --method quantize --mode weight_only[_int4]` would write it), or the
    folder of another language-model run with the same tokenizer (a compressed child, a
    smaller model trained on the same tokens); "./int8" names a folder called int8.

    Raises:
        ConfigError: a draft that is not a language model, has another tokenizer or vocabulary,
            a shorter context, or a `draft_tokens` outside 1..16.
    """
    if draft is None:
        return None
    if str(draft) in QUANTIZED_DRAFTS:
        import copy

        from ember.compress.weight_only import available, to_weight_only

        bits = QUANTIZED_DRAFTS[str(draft)]
        if not available(8) or not available(bits):
            raise ConfigError(f"draft: {draft} needs torch's int{bits} weight-pack kernel, which this torch lacks; "
                              "give a draft run folder instead")
        model = to_weight_only(copy.deepcopy(loaded.model).cpu().eval(), bits)
    else:
        other = load_run(draft)
        if other.info.task != "lm":
            raise ConfigError(f"draft: '{other.run.path}' is a {other.info.task} run; a draft must be a language model")
        if read_text(inside(other.run.path, "tokenizer.json"), other.run.path) != read_text(
                inside(loaded.run.path, "tokenizer.json"), loaded.run.path):
            raise ConfigError(f"draft: '{other.run.path}' has another tokenizer than '{loaded.run.path}'; "
                              "a draft must share the model's tokenizer")
        model = other.model.eval()
    vocab = int(loaded.info.extra.get("vocab_size", loaded.info.num_outputs))
    check_draft(loaded.model, model, vocab, int(getattr(loaded.model, "block_size", 0)), draft_tokens)
    if compile:
        from ember.models.compiled_decoding import compile_decoding

        compile_decoding(model)
    return model


def generate(run_dir: str | Path, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8,
             top_k: int | None = None, top_p: float | None = None, seed: int = 0,
             stop: list[str] | None = None, *, repetition_penalty: float = 1.0, presence_penalty: float = 0.0,
             frequency_penalty: float = 0.0, compile: bool = False, draft: str | Path | None = None,
             draft_tokens: int = DRAFT_TOKENS) -> Iterator[str]:
    """Stream the text a language-model run writes after `prompt`, piece by piece.

    Stops after `max_new_tokens`, at the tokenizer's end-of-sequence token, or when any of
    `stop` appears (the stop string excluded, even when it spans tokens). `repetition_penalty`
    (CTRL's: > 1 discourages tokens already in the context), `presence_penalty` and
    `frequency_penalty` (OpenAI's, -2..2, over the completion) reshape the logits before
    sampling; see `ember.models.sampling`. The same `seed` gives the same text. `compile`:
    the one-token steps through torch.compile (`ember.models.compiled_decoding`; the first
    step compiles, about a minute for a 30-layer model). `draft`: decode speculatively with
    this draft (see `load_draft`; "int8" is the usual choice), `draft_tokens` drafted per
    pass of the model; greedy text is the model's own, sampled text has its distribution
    (`ember.models.speculative`).
    """
    loaded = load_lm_run(run_dir, "generate", max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                         presence_penalty, frequency_penalty, compile)
    draft_model = load_draft(draft, loaded, draft_tokens, compile)
    yield from generate_text(loaded.model, load_tokenizer(loaded.run.path), loaded.info, prompt, max_new_tokens,
                             temperature, top_k, top_p, seed, stop, repetition_penalty=repetition_penalty,
                             presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
                             draft=draft_model, draft_tokens=draft_tokens)
