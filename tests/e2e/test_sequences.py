"""Sequence runs end to end: a tiny char GPT generates (streamed, seeded, with stop strings),
predict reads text/series, the report shows samples, attention and forecasts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ember
from ember.generation import generate
from tests.conftest import run_cli

TINY_GPT = ["data.max_chars=120000", "data.block_size=32", "model.n_layer=1", "model.n_embd=32",
            "train.max_steps=40", "train.checkpoint_every=20", "train.log_every=10", "data.eval_batch_size=256"]


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gpt")
    return ember.train("stdlib-char-gpt", [*TINY_GPT, f"log.runs_dir={root}"], verbose=False).path


def test_lm_run_files_and_report(gpt_run: Path) -> None:
    summary = json.loads((gpt_run / "summary.json").read_text())
    for split in ("val", "test"):
        assert summary[split]["perplexity"] > 1 and summary[split]["bits_per_char"] > 0
    assert (gpt_run / "tokenizer.json").exists()
    rows = [json.loads(line) for line in (gpt_run / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("split") == "sample" and r["text"] for r in rows)
    html = (gpt_run / "report.html").read_text()
    assert "Generated samples" in html and "Attention" in html
    assert (gpt_run / "plots" / "attention.png").exists()


def test_generate_is_seeded_and_stops(gpt_run: Path) -> None:
    a = "".join(generate(gpt_run, "def ", max_new_tokens=40, seed=3))
    b = "".join(generate(gpt_run, "def ", max_new_tokens=40, seed=3))
    c = "".join(generate(gpt_run, "def ", max_new_tokens=40, seed=4, temperature=1.5))
    assert a == b and len(a) == 40 and a != c
    greedy = "".join(generate(gpt_run, "import ", max_new_tokens=30, temperature=0))
    assert greedy == "".join(generate(gpt_run, "import ", max_new_tokens=30, temperature=0, seed=99))
    full = "".join(generate(gpt_run, "x", max_new_tokens=60, temperature=0))
    stop = next((ch for ch in full[5:] if ch.strip()), None)
    if stop:
        cut = "".join(generate(gpt_run, "x", max_new_tokens=60, temperature=0, stop=[stop]))
        assert cut == full[: full.index(stop)]


def test_generate_cli_streams(gpt_run: Path) -> None:
    proc = run_cli("generate", gpt_run, "--prompt", "class ", "--max-new-tokens", "20", "--seed", "1", check=True)
    assert proc.stdout.startswith("class ") and len(proc.stdout.rstrip("\n")) >= len("class ") + 1
    bad = run_cli("generate", gpt_run, "--prompt", "x", "--top-p", "2")
    assert bad.returncode == 2 and "--top-p" in bad.stderr


def test_generate_on_a_classifier_is_refused(tmp_path: Path) -> None:
    run = ember.train("iris-mlp", ["train.epochs=1", f"log.runs_dir={tmp_path}", "log.report=false"], verbose=False)
    proc = run_cli("generate", run.path, "--prompt", "x")
    assert proc.returncode == 2 and "language-model run" in proc.stderr


def test_resume_is_exact_for_gpt(tmp_path: Path, gpt_run: Path) -> None:
    """Kill-free variant: stop after step 20 (max_steps) then continue to 40 by resuming."""
    import shutil

    from ember.training.checkpoint import load_checkpoint

    run = tmp_path / "resumed"
    shutil.copytree(gpt_run, run)
    for f in ("model.safetensors", "summary.json"):
        (run / f).unlink()
    ckpt_dir = run / "checkpoints"
    for d in ckpt_dir.glob("step-*"):
        if d.name != "step-00000020":
            shutil.rmtree(d)
    (ckpt_dir / "latest").write_text("step-00000020\n")
    assert load_checkpoint(ckpt_dir).state["step"] == 20
    ember.train(resume=run, verbose=False)
    assert (run / "model.safetensors").read_bytes() == (gpt_run / "model.safetensors").read_bytes()


def test_forecast_and_classifier_reports(tmp_path: Path) -> None:
    run = ember.train("sunspots-lstm", ["train.epochs=2", "model.hidden_size=8", f"log.runs_dir={tmp_path}"],
                      verbose=False)
    assert (run.path / "plots" / "forecast.png").exists()
    assert "rmse" in json.loads(run.summary.read_text())["test"]
    cls = ember.train("stdlib-modules-transformer", ["train.max_steps=5", "data.per_class=8", "data.max_len=32",
                                                     "model.d_model=16", "model.d_ff=16", f"log.runs_dir={tmp_path}"],
                      verbose=False)
    assert (cls.path / "plots" / "attention.png").exists()
    assert len(json.loads(cls.summary.read_text())["test"]["confusion_matrix"]) >= 8


def test_predict_text_and_series(tmp_path: Path, gpt_run: Path) -> None:
    cls = ember.train("stdlib-modules-lstm", ["train.max_steps=3", "data.per_class=8", "data.max_len=32",
                                              "model.hidden_size=8", f"log.runs_dir={tmp_path}", "log.report=false"],
                      verbose=False)
    snippet = tmp_path / "snippet.py"
    snippet.write_text("import asyncio\n\nasync def main():\n    await asyncio.sleep(1)\n")
    preds = ember.predict(cls.path, [snippet], texts=["import json\njson.dumps({})"])
    assert len(preds) == 2 and all(p["label"] in p["probabilities"] for p in preds)
    out = run_cli("predict", cls.path, "--text", "x = 1", "--json", check=True).stdout
    assert json.loads(out)[0]["input"] == "text#1"
    lm = ember.predict(gpt_run, [], texts=["def main("])
    assert len(lm[0]["next_tokens"]) == 5
    series = ember.train("sunspots-lstm", ["train.epochs=1", "model.hidden_size=8", f"log.runs_dir={tmp_path}",
                                           "log.report=false"], verbose=False)
    csv_path = tmp_path / "recent.csv"
    csv_path.write_text("year,spots\n" + "\n".join(f"{1980 + i},{50 + 10 * (i % 11)}" for i in range(30)))
    forecast = ember.predict(series.path, [csv_path])
    assert "t+1" in forecast[0]["prediction"]
    short = tmp_path / "short.csv"
    short.write_text("v\n1\n2\n")
    bad = run_cli("predict", series.path, short)
    assert bad.returncode == 2 and "needs the last 24" in bad.stderr
    wrong = run_cli("predict", cls.path, csv_path)
    assert wrong.returncode == 2 and "takes text" in wrong.stderr
