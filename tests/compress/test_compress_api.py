"""`ember.compress.compress` from Python: chains, every model family, failures that leave
nothing behind, the report's Compression section, and the config pieces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import ember
from ember.api import evaluate, load_run, report
from ember.compress import compress
from ember.compress.config import parse_chain, parse_step
from ember.compress.report import pareto_front
from ember.errors import ConfigError, NonFiniteLossError, RunError
from tests.compress.helpers import PARENT, check_record, record_of, tree_hashes


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compress-api")
    return ember.train("digits-cnn", [*PARENT, f"log.runs_dir={root / 'runs'}"], quiet=True, verbose=False).path


def _own_copy(parent: Path, tmp_path: Path) -> Path:
    """The parent in a runs folder of this test's own, so its children are the only ones there."""
    copy = tmp_path / "runs" / parent.name
    shutil.copytree(parent, copy)
    return copy


def test_chain_writes_one_child_per_step(parent: Path, tmp_path: Path) -> None:
    root = _own_copy(parent, tmp_path)
    hashes = tree_hashes(root)
    chain = parse_chain({"steps": [{"method": "prune", "sparsity": 0.5, "finetune_epochs": 1},
                                   {"method": "finetune", "epochs": 1},
                                   {"method": "quantize", "mode": "static", "calibration_batches": 2}]}, "chain")
    children = [r.path for r in compress(root, chain, verbose=False)]
    assert [record_of(c)["method"] for c in children] == ["prune", "finetune", "quantize"]
    assert tree_hashes(root) == hashes
    for i, child in enumerate(children):
        previous = root if i == 0 else children[i - 1]
        record = check_record(child, previous, ["prune", "finetune", "quantize"][i])
        assert [e["name"] for e in record["lineage"]] == [root.name, *(c.name for c in children[:i])]
        assert len(record["steps"]) == i + 1
        if i:  # a chain measures each model once: a child's figures are its child's parent figures
            assert record["parent"] == {**record_of(previous)["child"], "run": previous.name}
    # Fine-tuning a sparse parent keeps its zeros; the int8 child replays nothing but quantization.
    assert record_of(children[1])["details"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert [t["kind"] for t in record_of(children[2])["transforms"]] == ["quantize"]
    metrics = evaluate(children[2])
    assert metrics["accuracy"] == pytest.approx(record_of(children[2])["child"]["accuracy"], abs=1e-6)

    # The report of the last child shows the whole family; the parent's only when asked.
    html = report(children[2]).read_text()
    assert "<h2>Compression</h2>" in html and all(c.name in html for c in [root, *children])
    assert (children[2] / "plots" / "compression_pareto.png").is_file()
    assert tree_hashes(root) == hashes
    html = report(root).read_text()
    assert "<h2>Compression</h2>" in html and all(c.name in html for c in children)


def test_structured_then_quantized_reloads(parent: Path, tmp_path: Path) -> None:
    root = _own_copy(parent, tmp_path)
    chain = parse_chain([{"method": "prune", "kind": "structured", "sparsity": 0.25, "finetune_epochs": 1},
                         {"method": "quantize", "mode": "dynamic"}], "chain")
    _, child = compress(root, chain, verbose=False)
    assert [t["kind"] for t in record_of(child.path)["transforms"]] == ["structure", "quantize"]
    loaded = load_run(child.path)
    x = torch.zeros(2, 1, 8, 8)
    assert loaded.model(x).shape == (2, 10)
    assert evaluate(child.path)["accuracy"] == pytest.approx(record_of(child.path)["child"]["accuracy"], abs=1e-6)
    with pytest.raises(RunError, match="cannot be resumed"):  # its config alone would build the unpruned model
        ember.train(resume=child.path, quiet=True, verbose=False)


def test_failure_mid_step_leaves_no_child(parent: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _own_copy(parent, tmp_path)
    hashes = tree_hashes(root)

    def explode(*args: object, **kwargs: object) -> None:
        raise NonFiniteLossError("non-finite loss (nan) at step 1")

    monkeypatch.setattr("ember.compress.training.fit", explode)
    with pytest.raises(NonFiniteLossError):
        compress(root, [parse_step({"method": "prune", "finetune_epochs": 1})], verbose=False)
    assert [p.name for p in root.parent.iterdir()] == [root.name]
    assert tree_hashes(root) == hashes


TINY = {  # (recipe, overrides, student): a second or so of training each
    "gpt": ("stdlib-char-gpt", ["data.max_chars=120000", "data.block_size=32", "model.n_layer=1", "model.n_embd=32",
                                "train.max_steps=30"], {"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16}),
    "transformer": ("stdlib-modules-transformer", ["data.max_len=64", "model.d_model=32", "model.n_layer=1",
                                                   "model.d_ff=64", "train.max_steps=20"],
                    {"name": "transformer", "d_model": 16, "n_layer": 1, "d_ff": 32, "n_head": 2}),
    "rnn": ("stdlib-modules-lstm", ["data.max_len=64", "model.hidden_size=32", "model.embed_dim=16",
                                    "train.max_steps=20"], {"name": "rnn", "cell": "gru", "hidden_size": 8,
                                                            "embed_dim": 8}),
    "mlp": ("digits-mlp", ["train.epochs=3"], {"name": "mlp", "hidden": [16]}),
}


@pytest.mark.parametrize("family", list(TINY))
def test_every_method_on_every_family(family: str, tmp_path: Path) -> None:
    recipe, overrides, student = TINY[family]
    run = ember.train(recipe, [*overrides, "train.threads=1", "log.report=false", f"log.runs_dir={tmp_path}"],
                      quiet=True, verbose=False)
    steps = [{"method": "prune", "kind": "structured", "sparsity": 0.5, "finetune_epochs": 1, "max_steps": 3},
             {"method": "prune", "sparsity": 0.5, "finetune_epochs": 1, "max_steps": 3},
             {"method": "quantize", "mode": "dynamic"},
             {"method": "distill", "student": student, "max_steps": 5}]
    metric = "perplexity" if family == "gpt" else "accuracy"
    for raw in steps:
        [child] = compress(run.path, [parse_step(raw)], verbose=False)
        record = record_of(child.path)
        assert all(isinstance(record[s][metric], float) for s in ("parent", "child"))
        again = evaluate(child.path)  # reload through load_run
        assert again[metric] == pytest.approx(record["child"][metric], rel=1e-5), raw
        if raw["method"] == "distill":
            assert record["change"]["params_ratio"] >= 3
        if raw.get("kind") == "structured":
            assert record["child"]["params"] < record["parent"]["params"]
    if family == "gpt":
        from ember.generation import generate

        text = "".join(generate(child.path, "def ", 8, 0.0, None, None, 0, None))
        assert len(text) > 0


def test_config_pieces() -> None:
    assert parse_chain(["prune", {"method": "quantize"}], "x").steps[1].mode == "dynamic"
    assert parse_chain({"compress": {"steps": [{"method": "finetune"}]}}, "x").steps[0].epochs == 2
    with pytest.raises(ConfigError, match="steps.0.sparsity: got 1.0"):
        parse_chain([{"method": "prune", "sparsity": 1.0}], "chain.yaml")
    with pytest.raises(ConfigError, match="follows quantization"):
        parse_chain([{"method": "quantize"}, {"method": "finetune"}], "chain")
    cfg = ember.load_config("digits-cnn", ["compress.steps=[{method: prune, kind: structured}]"])
    assert cfg.compress is not None and cfg.compress.steps[0].kind == "structured"
    with pytest.raises(ConfigError, match="sparsity"):
        ember.load_config("digits-cnn", ["compress.steps=[{method: prune, sparsity: 1.5}]"])
    assert pareto_front([(1.0, 0.9), (2.0, 0.95), (3.0, 0.94), (0.5, 0.5)], maximize=True) == [0, 1, 3]
    assert pareto_front([(1.0, 3.0), (2.0, 2.0), (2.5, 2.5)], maximize=False) == [0, 1]


def test_record_json_is_data(parent: Path, tmp_path: Path) -> None:
    """compression.json holds only JSON values, and a damaged one is a one-line RunError."""
    root = _own_copy(parent, tmp_path)
    [child] = compress(root, [parse_step({"method": "quantize"})], verbose=False)
    json.loads((child.path / "compression.json").read_text())
    (child.path / "compression.json").write_text("{not json")
    with pytest.raises(RunError, match="not valid JSON"):
        load_run(child.path)


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory: pytest.TempPathFactory) -> ember.Run:
    over = ["model.name=llama", "model.n_layer=2", "model.n_embd=64", "model.n_head=4", "model.n_kv_head=2",
            "data.max_chars=120000", "data.block_size=32", "train.max_steps=20", "train.threads=1",
            "log.report=false", f"log.runs_dir={tmp_path_factory.mktemp('llama')}"]
    return ember.train("stdlib-char-gpt", over, quiet=True, verbose=False)


@pytest.mark.parametrize(("mode", "tolerance", "size_share"), [("weight_only", 0.02, 0.6),
                                                               ("weight_only_int4", 0.05, 0.5)])
def test_weight_only_of_a_llama_reloads_and_keeps_its_perplexity(llama_run: ember.Run, mode: str,
                                                                 tolerance: float, size_share: float) -> None:
    [child] = compress(llama_run.path, [parse_step({"method": "quantize", "mode": mode})], verbose=False)
    record = record_of(child.path)
    meta = record["transforms"][-1]["meta"]
    assert meta["scheme"] == "weight_only" and meta["mode"] == mode
    assert "lm_head" in meta["layers"]
    if mode == "weight_only_int4":  # every projection fits the int4 kernel's shapes; the output head stays int8
        assert set(meta["int4_layers"]) == set(meta["layers"]) - {"lm_head"}
    parent_ppl, child_ppl = record["parent"]["perplexity"], record["child"]["perplexity"]
    assert abs(child_ppl / parent_ppl - 1) < tolerance, (parent_ppl, child_ppl)
    assert record["child"]["size_mb"] < size_share * record["parent"]["size_mb"]
    assert evaluate(child.path)["perplexity"] == pytest.approx(child_ppl, rel=1e-5)  # reloaded through load_run
    from ember.generation import generate

    assert "".join(generate(child.path, "def ", 8, 0.0, None, None, 0, None))
    with pytest.raises(ConfigError, match="follows quantization|already int8"):
        compress(child.path, [parse_step({"method": "prune", "sparsity": 0.5})], verbose=False)
