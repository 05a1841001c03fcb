"""`ember compress` end to end on a small digits CNN: every method writes a child run that
`ember evaluate` and `ember predict` reload; bad inputs exit 2 in one line; the parent's
files stay byte-identical throughout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

import ember
from tests.compress.helpers import PARENT, check_record, digit_png, run_main, tree_hashes


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compress-cli")
    return ember.train("digits-cnn", [*PARENT, f"log.runs_dir={root / 'runs'}"], quiet=True, verbose=False).path


@pytest.fixture(scope="module")
def parent_hashes(parent: Path) -> dict[str, str]:
    return tree_hashes(parent)


METHODS: dict[str, tuple[list[str], str]] = {
    "prune-unstructured": (["--method", "prune", "--sparsity", "0.6", "--finetune-epochs", "1"], "prune"),
    "prune-structured": (["--method", "prune", "--kind", "structured", "--sparsity", "0.5",
                          "--finetune-epochs", "2", "--lr", "0.003"], "prune"),
    "quantize-dynamic": (["--method", "quantize", "--mode", "dynamic"], "quantize"),
    "quantize-static": (["--method", "quantize", "--mode", "static", "--calibration-batches", "4"], "quantize"),
    "quantize-qat": (["--method", "quantize", "--mode", "qat", "--finetune-epochs", "1"], "quantize"),
    "distill": (["--method", "distill", "--student", "{name: mlp, hidden: [16]}", "--epochs", "6"], "distill"),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_method_writes_a_reloadable_child(name: str, parent: Path, parent_hashes: dict[str, str], tmp_path: Path,
                                          cli, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    args, method = METHODS[name]
    child = tmp_path / "child"
    proc = cli("compress", parent, *args, "--run-dir", child, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "latency_ms_b1" in proc.stdout and ("x faster" in proc.stdout or "x slower" in proc.stdout)
    record = check_record(child, parent, method)
    parent_acc, child_acc = record["parent"]["accuracy"], record["child"]["accuracy"]
    assert parent_acc > 0.85

    # Reload like any run: evaluate gives the recorded figures, predict labels an image.
    code, out, err = run_main(capsys, "evaluate", child, "--json")
    assert code == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(child_acc, abs=1e-6)
    code, out, err = run_main(capsys, "predict", child, digit_png(tmp_path), "--json")
    assert code == 0, err
    assert json.loads(out)[0]["label"] in [str(i) for i in range(10)]

    weights = load_file(str(child / "model.safetensors"))
    config = yaml.safe_load((child / "config.yaml").read_text())
    assert config["compress"] is None and config["data"] == yaml.safe_load((parent / "config.yaml").read_text())["data"]
    if name == "prune-unstructured":
        assert record["details"]["sparsity"] == pytest.approx(0.6, abs=0.01)
        matrices = [t for k, t in weights.items() if k.endswith("weight") and t.ndim >= 2]
        zeros = sum(int((t == 0).sum()) for t in matrices) / sum(t.numel() for t in matrices)
        assert zeros == pytest.approx(0.6, abs=0.01)  # real zeros in the saved weights, no masks
        assert not any(k.endswith(("_orig", "_mask")) for k in weights)
        assert child_acc > parent_acc - 0.1
        assert any(r.get("phase") == "prune-1" for r in map(json.loads, (child / "metrics.jsonl").open()))
    elif name == "prune-structured":
        assert record["change"]["params_ratio"] > 2 and record["child"]["size_mb"] < record["parent"]["size_mb"]
        assert weights["features.0.weight"].shape[0] == 4  # 8 channels, half removed
        # Removed, not zeroed: the record says the share of parameters removed, not "sparsity 0.0".
        assert "sparsity" not in record["details"]
        assert record["details"]["params_removed"] == pytest.approx(1 - 1 / record["change"]["params_ratio"], abs=1e-4)
        assert child_acc > 0.5
    elif name.startswith("quantize"):
        assert any(t.dtype.is_floating_point is False and t.element_size() == 1 for t in weights.values())
        assert record["child"]["size_mb"] < record["parent"]["size_mb"]
        assert record["child"]["params"] == record["parent"]["params"]
        assert config["train"]["device"] == "cpu"
        assert record["transforms"][-1]["kind"] == "quantize"
        assert abs(child_acc - parent_acc) <= 0.03
        for command in (("explain", child), ("export", child)):  # int8 has no gradients / traced ONNX
            code, out, err = run_main(capsys, *command)
            assert code == 2 and "holds an int8 model" in err and "Traceback" not in err
    else:
        assert config["model"]["name"] == "mlp"
        assert record["change"]["params_ratio"] >= 3
        assert child_acc > 0.6
    assert tree_hashes(parent) == parent_hashes


def test_compress_section_of_the_run_config(parent: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    copy = tmp_path / "runs" / parent.name
    shutil.copytree(parent, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["compress"] = {"steps": [{"method": "quantize", "mode": "dynamic"}]}
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    code, out, err = run_main(capsys, "compress", copy, "--quiet")
    assert code == 0, err
    [child] = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("digits-cnn-quantize-")]
    assert json.loads((child / "compression.json").read_text())["step"]["mode"] == "dynamic"


def _chain(tmp_path: Path, steps: str) -> Path:
    path = tmp_path / "chain.yaml"
    path.write_text(steps)
    return path


BAD: dict[str, tuple[list[str], list[str]]] = {
    "missing run": (["compress", "{tmp}/nope", "--method", "quantize"], ["does not exist"]),
    "sparsity 1": (["--method", "prune", "--sparsity", "1"], ["--sparsity", "[0, 1)"]),
    "sparsity negative": (["--method", "prune", "--sparsity", "-0.1"], ["--sparsity", "[0, 1)"]),
    "unknown method": (["--method", "prun"], ["--method", "did you mean 'prune'"]),
    "unknown kind": (["--method", "prune", "--kind", "channels"], ["--kind", "structured"]),
    "student missing": (["--method", "distill"], ["--student", "required"]),
    "student file missing": (["--method", "distill", "--student", "{tmp}/nope.yaml"], ["does not exist"]),
    "student does not fit": (["--method", "distill", "--student", "{name: gpt}"], ["student", "gpt"]),
    "student bad key": (["--method", "distill", "--student", "{name: mlp, hiden: [8]}"], ["hiden", "hidden"]),
    "flag of another method": (["--method", "quantize", "--sparsity", "0.5"], ["--sparsity", "--method quantize"]),
    "finetune on dynamic": (["--method", "quantize", "--finetune-epochs", "2"], ["mode: qat"]),
    "flag without method": (["--sparsity", "0.5"], ["needs --method"]),
    "method and recipe": (["--method", "prune", "--recipe", "{tmp}/chain.yaml"], ["give one"]),
    "chain order": (["--recipe", "{tmp}/chain.yaml"], ["quantiz", "prun"]),
    "no compress section": ([], ["compress: section"]),
    "run-dir is the parent": (["--method", "quantize", "--run-dir", "{parent}"], ["is the parent run"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_in_one_line(case: str, parent: Path, parent_hashes: dict[str, str], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    args, needles = BAD[case]
    _chain(tmp_path, "steps:\n  - {method: quantize}\n  - {method: prune, sparsity: 0.5}\n")
    args = [a.replace("{tmp}", str(tmp_path)).replace("{parent}", str(parent)) for a in args]
    if args[:1] != ["compress"]:
        args = ["compress", str(parent), *args]
    before = sorted(p.name for p in parent.parent.iterdir())
    code, out, err = run_main(capsys, *args)
    assert code == 2, (out, err)
    line = err.strip()
    assert line.startswith("error: ") and "\n" not in line and "Traceback" not in err, err
    for needle in needles:
        assert needle in line, line
    assert sorted(p.name for p in parent.parent.iterdir()) == before  # no child folder left behind
    assert tree_hashes(parent) == parent_hashes


def test_bad_input_in_a_fresh_process(parent: Path, parent_hashes: dict[str, str], cli) -> None:  # noqa: ANN001
    proc = cli("compress", parent, "--method", "prune", "--sparsity", "1.5")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--sparsity" in proc.stderr
    assert tree_hashes(parent) == parent_hashes


def test_ratios_below_one_are_said_the_other_way_round() -> None:
    from ember.cli_tables import ratio_words

    assert ratio_words(0.56, "x faster", "x slower") == "1.79x slower"
    assert ratio_words(2.0, "x faster", "x slower") == "2.00x faster"
    assert ratio_words(0.5, "x smaller", "x larger") == "2.00x larger"
    assert ratio_words(None, "x faster", "x slower") == "-"
