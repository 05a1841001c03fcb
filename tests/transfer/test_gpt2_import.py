"""`ember import gpt2`: a random transformers GPT-2, converted, gives the same logits and text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

import ember  # noqa: E402
from ember.errors import ConfigError  # noqa: E402
from ember.generation import generate  # noqa: E402
from ember.plan import plan  # noqa: E402
from ember.transfer.gpt2_import import import_gpt2  # noqa: E402
from tests.transfer.helpers import tiny_gpt2  # noqa: E402


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("gpt2")
    hf = tiny_gpt2(root / "hf")
    run = import_gpt2(hf, root / "run")
    return hf, run.path


def _hf_model(hf: Path):  # noqa: ANN202
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(hf, local_files_only=True).eval()


def test_logits_and_greedy_text_match_transformers(imported: tuple[Path, Path]) -> None:
    hf_dir, run_dir = imported
    hf = _hf_model(hf_dir)
    loaded = ember.load_run(run_dir)
    ids = torch.randint(0, hf.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = hf(ids).logits
        ours = loaded.model(ids)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() < 1e-4
    prompt = ids[:1, :5]
    expected = prompt
    with torch.no_grad():  # greedy decoding with transformers, one token at a time
        for _ in range(12):
            nxt = hf(expected).logits[:, -1].argmax(-1, keepdim=True)
            expected = torch.cat([expected, nxt], dim=1)
    got = torch.cat(list(loaded.model.generate(prompt, 12, temperature=0.0)), dim=1)
    assert got.tolist() == expected[:, 5:].tolist()


def test_generate_plan_and_fine_tune_accept_the_run(imported: tuple[Path, Path], tmp_path: Path) -> None:
    _, run_dir = imported
    text = "".join(generate(run_dir, "def read", max_new_tokens=8, temperature=0.0))
    assert isinstance(text, str) and text
    result = plan(str(run_dir / "config.yaml"))
    assert result["model"]["params"] == json.loads((run_dir / "summary.json").read_text())["params"]
    corpus = tmp_path / "notes.txt"
    corpus.write_text("def write(path, data):\n    with open(path, 'w') as f:\n        f.write(data)\n" * 40)
    cfg = ember.load_config(str(run_dir / "config.yaml"), [
        "data.name=text_files", f"data.paths=[{corpus}]", "data.block_size=32", f"model.init_from={run_dir}",
        "train.max_steps=2", "train.epochs=1", f"log.runs_dir={tmp_path / 'runs'}", "log.report=false"])
    run = ember.train(cfg, verbose=False)
    summary = json.loads(run.summary.read_text())
    assert summary["init_from"]["missing"] == [] and summary["init_from"]["loaded"] > 0
    assert summary["baselines"]["unigram"]["test"]["perplexity"] > 1


def test_bad_sources_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        import_gpt2(tmp_path / "absent")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="model_type is 'bert'"):
        import_gpt2(tmp_path / "bert")
