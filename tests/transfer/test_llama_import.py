"""The llama family and `ember import` of a Hugging Face Llama: a random transformers model, converted."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

import ember  # noqa: E402
from ember.cli import main  # noqa: E402
from ember.generation import generate  # noqa: E402
from ember.plan import plan  # noqa: E402


@pytest.fixture(scope="session")
def llama_run(llama_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("llama-run") / "run"
    assert main(["import", str(llama_hf), "--out", str(out)]) == 0
    return out


def _greedy_hf(hf, prompt: torch.Tensor, n: int) -> torch.Tensor:  # noqa: ANN001
    ids = prompt
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, hf(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[:, prompt.shape[1]:]


def test_logits_cache_and_greedy_tokens_match_transformers(llama_hf: Path, llama_run: Path) -> None:
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(llama_hf, local_files_only=True).eval()
    model = ember.load_run(llama_run).model.eval()
    ids = torch.randint(0, hf.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = hf(ids).logits
        assert (model(ids) - theirs).abs().max().item() < 1e-4
        cache = model.new_cache(2)  # the prompt, then one position at a time, then per-row positions
        parts = [model(ids[:, :16], cache), model(ids[:, 16:17], cache), model(ids[:, 17:20], cache),
                 model(ids[:, 20:], cache, start_pos=torch.tensor([20, 20]))]
        assert (torch.cat(parts, dim=1) - theirs).abs().max().item() < 1e-4
    prompt = ids[:1, :5]
    got = torch.cat(list(model.generate(prompt, 10, temperature=0.0)), dim=1)
    assert got.tolist() == _greedy_hf(hf, prompt, 10).tolist()
    got = torch.cat(list(model.generate(prompt, 10, temperature=0.0, use_cache=False)), dim=1)
    assert got.tolist() == _greedy_hf(hf, prompt, 10).tolist()


def test_run_works_with_generate_plan_serve_and_chat_template(llama_run: Path) -> None:
    from ember.serve.openai_api import find_chat_template

    text = "".join(generate(llama_run, "def read", max_new_tokens=6, temperature=0.0))
    assert isinstance(text, str) and text
    result = plan(str(llama_run / "config.yaml"))
    assert result["model"]["params"] > 0
    assert "<|assistant|>" in (find_chat_template(llama_run) or "")


def test_tiny_llama_trains_on_stdlib_text_with_lora(tmp_path: Path) -> None:
    over = ["model.name=llama", "model.n_layer=2", "model.n_embd=32", "model.n_head=4", "model.n_kv_head=2",
            "model.tie_embeddings=false", "data.block_size=32", "data.max_chars=120000", "data.limit=128", "train.max_steps=3",
            "train.epochs=1", f"log.runs_dir={tmp_path}", "log.report=false",
            "model.lora.targets=['layers.*.self_attn.q_proj','layers.*.self_attn.v_proj']"]
    run = ember.train("stdlib-char-gpt", over, verbose=False)
    assert run.summary.is_file()
    assert type(ember.load_run(run.path).model).__name__ in ("Llama", "PeftModel", "LoraModel")


def test_import_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    for argv in (["import", str(tmp_path / "absent")], ["import", str(tmp_path / "bert")],
                 ["import", "llama"], ["import", "bert", str(tmp_path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_continuous_batching_gives_each_request_its_solo_greedy_tokens(llama_run: Path) -> None:
    import asyncio

    from ember.data.tokenizer import tokenizer_from
    from ember.serve.continuous import GenRequest, Scheduler

    model, tok = ember.load_run(llama_run).model.eval(), tokenizer_from(str(llama_run))
    prompts = [[5, 9, 30, 41, 7, 100, 3], [12, 200]]
    solo = [[int(t) for t in model.generate(torch.tensor([p]), 8, temperature=0.0)] for p in prompts]

    async def both() -> list[list[int]]:
        sched = Scheduler(model, tok, model.vocab_size, 32, max_batch=2)
        sched.start()
        loop = asyncio.get_running_loop()
        reqs = [GenRequest(list(p), 8, 0.0, loop=loop) for p in prompts]
        try:
            for r in reqs:
                sched.submit(r)
            for r in reqs:
                while (await asyncio.wait_for(r.events.get(), 60))[0] != "done":
                    pass
        finally:
            sched.stop()
        return [r.completion_ids for r in reqs]

    assert asyncio.run(both()) == solo
