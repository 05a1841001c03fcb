"""Compiled decoding: the torch.compile'd one-token step gives the eager step's logits and tokens.

One compile per model (tiny, 2 layers); both streaming loops (the model's `generate` and
`ember.models.decoding.generate_ids`, which `ember generate` and `ember chat` use) go through it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ember.errors import ConfigError
from ember.models.compiled_decoding import compile_decoding, decode_step_of
from ember.models.decoding import generate_ids
from ember.models.gpt import GPT, GPTConfig
from ember.models.llama import Llama, LlamaConfig


def _llama() -> Llama:
    torch.manual_seed(0)
    model = Llama(LlamaConfig(n_layer=2, n_head=4, n_kv_head=2, n_embd=32, intermediate_size=64), 61, 48).eval()
    with torch.no_grad():  # wider embeddings: confident logits, so greedy choices are far from ties
        model.embed_tokens.weight.mul_(8)
    return model


def _greedy(model: torch.nn.Module, prompt: torch.Tensor, n: int) -> list[int]:
    with torch.inference_mode():
        return [int(t) for t in torch.cat(list(model.generate(prompt, n, temperature=0.0)), dim=1)[0]]


def test_compiled_llama_step_matches_eager_logits_and_tokens() -> None:
    model = _llama()
    prompt = torch.randint(0, 61, (1, 5))
    eager = _greedy(model, prompt, 20)
    cache = model.new_cache(1)
    with torch.inference_mode():
        model(prompt, kv_cache=cache)
        ref = model(prompt[:, -1:], kv_cache=cache, start_pos=5)  # (1, 1, V) eager, at position 5
    assert decode_step_of(model) is None
    compile_decoding(model)
    step = decode_step_of(model)
    assert step is not None and "decode_step" not in model.state_dict()
    cache = model.new_cache(1)
    with torch.inference_mode():
        model(prompt, kv_cache=cache)
        out = step(prompt[:, -1:], cache, 5)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert cache.length == 6  # the compiled step extends the cache as the eager one does
    assert _greedy(model, prompt, 20) == eager  # the model's own loop
    with torch.inference_mode():  # the loop ember generate / ember chat use, past the 48-token window
        sampled = list(generate_ids(model, prompt, 50, 48, 61, temperature=0.0))
    compiled = model.__dict__.pop("decode_step")
    with torch.inference_mode():
        assert list(generate_ids(model, prompt, 50, 48, 61, temperature=0.0)) == sampled
    assert compiled is not None


def test_compiled_gpt_generates_the_eager_tokens() -> None:
    torch.manual_seed(1)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16), 50, 32).eval()
    prompt = torch.randint(0, 50, (1, 4))
    eager = _greedy(model, prompt, 12)
    assert _greedy(compile_decoding(model), prompt, 12) == eager


def test_compile_needs_a_cache_and_a_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="no KV cache"):
        compile_decoding(torch.nn.Linear(2, 2))
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(ConfigError, match="needs a C.. compiler"):
        compile_decoding(_llama())


def test_cli_without_a_compiler_exits_2_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from ember.cli import main
    from tests.transfer.helpers import tiny_chat_llama

    run = tiny_chat_llama(tmp_path / "llama")
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    assert main(["generate", str(run), "--prompt", "Paris", "--compile"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "needs a C++ compiler" in err


def test_two_compiled_models_in_one_process_keep_their_own_graphs() -> None:
    from ember.compress.weight_only import to_weight_only

    first, second = _llama(), to_weight_only(_llama())  # the second's Linear layers are int8 modules
    prompt = torch.randint(0, 61, (1, 5))
    eager = _greedy(second, prompt, 10)
    compile_decoding(first)
    compile_decoding(second)
    _greedy(first, prompt, 10)
    assert _greedy(second, prompt, 10) == eager
