"""Friction met while following the README: escapes in --stop, natural CSV headers, `ember runs`
piped, consistent epochs in metrics.jsonl. (The README's error example moved to
docs/getting-started.md, where the docs collector compares it with what the CLI prints.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import ember
import ember.generation
from ember.cli import main
from ember.cli_args import unescape


def test_stop_escapes_are_interpreted(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[object] = []

    def fake_generate(run_dir: object, prompt: str, **settings: object) -> list[str]:
        seen.append(settings["stop"])
        return ["x"]

    monkeypatch.setattr(ember.generation, "generate", fake_generate)
    assert main(["generate", "some-run", "--prompt", "def", "--stop", r"\n\n", "--stop", r"\tend\x41é"]) == 0
    assert seen == [["\n\n", "\tendAé"]]
    assert unescape(r"keep \q and \\n") == "keep \\q and \\n"


def test_predict_csv_with_a_natural_header(iris_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    natural = tmp_path / "flowers.csv"
    natural.write_text("sepal_length,sepal_width,petal_length,petal_width,species\n5.1,3.5,1.4,0.2,setosa\n")
    assert main(["predict", str(iris_run), str(natural), "--json"]) == 0
    assert "setosa" in capsys.readouterr().out
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("x,y\n1,2\n")
    assert main(["predict", str(iris_run), str(wrong)]) == 2
    err = capsys.readouterr().err
    assert "expects columns sepal length (cm), sepal width (cm)" in err and "x, y" not in err


def test_runs_piped_is_one_readable_line_per_run(xor_run: Path, iris_run: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for run in (xor_run, iris_run):
        assert main(["runs", str(run.parent)]) == 0  # captured: not a terminal, as when piped
        out = capsys.readouterr().out
        lines = out.splitlines()
        assert lines[0].split()[:3] == ["run", "recipe", "task"]
        assert len(lines) == 2 and lines[1].startswith(run.name)  # the whole name, never folded
        assert not re.search("[│┃─━┏┗]", out)


def test_train_and_val_points_at_one_step_share_the_epoch(tmp_path: Path) -> None:
    # max_steps ends the run in the middle of its first epoch: a val point at that same step.
    run = ember.train("iris-mlp", ["train.max_steps=3", "data.batch_size=8", "log.report=false",
                                   "train.log_every=1"], run_dir=tmp_path / "run", verbose=False)
    rows = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    by_step: dict[int, set[int]] = {}
    for row in rows:
        if row.get("split") in ("train", "val"):
            by_step.setdefault(row["step"], set()).add(row["epoch"])
    assert {r.get("split") for r in rows if r["step"] == 3} >= {"train", "val"}
    assert all(len(epochs) == 1 for epochs in by_step.values()), by_step
    assert by_step[3] == {1}


def test_evaluate_keeps_the_precision_metric_a_number(digits_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The run's numeric precision is reported as `dtype`; `precision` is the metric, never "fp32"."""
    metrics = ember.evaluate(digits_run)
    assert isinstance(metrics["precision"], float) and metrics["dtype"] == "fp32"
    assert main(["evaluate", str(digits_run), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert isinstance(printed["precision"], float) and printed["dtype"] == "fp32"


@pytest.mark.parametrize(("argv", "expected"), [
    (["serve", "RUN", "--port", "70000"], "--port: 70000 is out of range; valid: 1..65535"),
    (["serve", "RUN", "--port", "http"], "--port: 'http' is not a whole number"),
    (["explain", "RUN", "--examples", "-1"], "--examples: -1 is out of range; valid: 1..10000"),
    (["generate", "RUN", "--temperature", "nan"], "--temperature: got nan; give a finite number"),
    (["generate", "RUN", "--temperature", "-1"], "--temperature: -1 is out of range; valid: 0..100"),
    (["generate", "RUN", "--top-p", "inf"], "--top-p: got inf"),
    (["generate", "RUN", "--seed", str(2**70)], f"--seed: {2**70} is out of range"),
])
def test_out_of_range_numbers_exit_2(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and expected in err and "Traceback" not in err


def test_quiet_prints_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """`quiet=True` silences a run as `verbose=False` does: nothing on stdout or stderr."""
    run = ember.train("xor-mlp", ["train.epochs=3", "log.report=false"], run_dir=tmp_path / "q", quiet=True)
    ember.evaluate(run.path)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def _moons() -> tuple[object, object, object]:
    from tests.open.test_objects import _datasets

    return _datasets(60)


def test_a_model_that_cannot_take_the_data_fails_before_a_run_exists(tmp_path: Path) -> None:
    from torch import nn

    from ember.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model Sequential cannot take this data: on a batch of inputs shaped "
                                          r"\(2, 2\) it raised RuntimeError: mat1 and mat2"):
        ember.train(model=nn.Sequential(nn.Linear(3, 2)), data=_moons(), run_dir=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_a_softmax_output_is_warned_about(tmp_path: Path) -> None:
    from torch import nn

    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2), nn.Softmax(dim=-1))
    with pytest.warns(UserWarning, match="returns probabilities .* drop the final softmax"):
        ember.train(model=model, data=_moons(), overrides=["train.epochs=1", "log.report=false"],
                    run_dir=tmp_path / "run", quiet=True)
