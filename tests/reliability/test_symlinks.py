"""A run folder is untrusted: links planted in it, names that climb out of `log.runs_dir` and ONNX
external data outside it are refused with one line (exit 2), and nothing outside is read or written."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ember.cli import main
from ember.errors import RunError
from ember.loading import load_tokenizer
from ember.runs import atomic_write_text, lock_run, new_run_dir, unlock_run
from ember.training.checkpoint import load_checkpoint

SECRET = "root:x:0:0:precious outside file\n"


def _outside(tmp_path: Path) -> Path:
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text(SECRET)
    return victim


def _plant(link: Path, target: Path) -> None:
    if link.is_dir() and not link.is_symlink():
        import shutil

        shutil.rmtree(link)
    elif link.exists() or link.is_symlink():
        link.unlink()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_symlinked_lock_is_refused_and_its_target_untouched(xor_run: Path, copy_run: Callable[[Path], Path],
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, victim = copy_run(xor_run), _outside(tmp_path)
    _plant(run / ".lock", victim)
    _refused(["train", "--resume", str(run), "--quiet"], capsys, ".lock")
    with pytest.raises(RunError, match="symbolic link"):
        lock_run(run)
    unlock_run(run)
    assert victim.read_text() == SECRET


def test_symlinked_section_html_is_never_read_into_the_report(xor_run: Path, copy_run: Callable[[Path], Path],
                                                              tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    run, victim = copy_run(xor_run), _outside(tmp_path)
    _plant(run / "explain" / "section.html", victim)
    _refused(["report", str(run)], capsys, "section.html", "symbolic link")
    assert not (run / "report.html").exists() or "precious" not in (run / "report.html").read_text()


@pytest.mark.parametrize("tool", ["plots", "explain", "export"])
def test_symlinked_tool_folders_are_not_written_through(tool: str, iris_run: Path, copy_run: Callable[[Path], Path],
                                                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(iris_run)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _plant(run / tool, elsewhere)
    command = {"plots": ["report", str(run)], "explain": ["explain", str(run), "--examples", "1"],
               "export": ["export", str(run)]}[tool]
    _refused(command, capsys, f"{tool}'", "symbolic link")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("name", ["config.yaml", "model.safetensors", "data_info.json", "summary.json"])
def test_symlinked_run_files_are_not_read(name: str, xor_run: Path, copy_run: Callable[[Path], Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(xor_run)
    real = run / f"real-{name}"
    (run / name).rename(real)
    (run / name).symlink_to(real)  # even a link to a file inside the folder: links are refused
    _refused(["evaluate", str(run)], capsys, name, "symbolic link")


def test_symlinked_tokenizer_and_checkpoint_files_are_refused(xor_run: Path, copy_run: Callable[[Path], Path],
                                                              tmp_path: Path) -> None:
    run, victim = copy_run(xor_run), _outside(tmp_path)
    _plant(run / "tokenizer.json", victim)
    with pytest.raises(RunError, match="symbolic link"):
        load_tokenizer(run)
    step = sorted((run / "checkpoints").glob("step-*"))[-1]
    _plant(step / "model.safetensors", victim)
    with pytest.raises(RunError, match="symbolic link"):
        load_checkpoint(run / "checkpoints")
    _plant(run / "checkpoints" / "latest", victim)
    with pytest.raises(RunError, match="symbolic link"):
        load_checkpoint(run / "checkpoints")


def test_atomic_writes_refuse_a_linked_folder_below_the_run(xor_run: Path, copy_run: Callable[[Path], Path],
                                                            tmp_path: Path) -> None:
    run = copy_run(xor_run)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _plant(run / "compression", elsewhere)
    with pytest.raises(RunError, match="symbolic link"):
        atomic_write_text(run / "compression" / "section.html", "<p>x</p>")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("recipe", ["../../x", "a/b", "..", ".hidden"])
def test_run_names_must_be_one_folder_name(recipe: str, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="single folder name"):
        new_run_dir(tmp_path / "runs", recipe)
    assert not (tmp_path / "x").exists() and sorted(os.listdir(tmp_path)) in ([], ["runs"])


def test_recipe_climbing_out_of_runs_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "escape.yaml"
    recipe.write_text("recipe: ../../escaped\ndata: {name: xor}\nmodel: {name: mlp}\n"
                      f"log: {{runs_dir: '{tmp_path / 'a' / 'b' / 'runs'}', report: false}}\ntrain: {{epochs: 1}}\n")
    _refused(["train", str(recipe), "--quiet"], capsys, "single folder name")
    assert not list(tmp_path.glob("escaped*")) and not list((tmp_path / "a").glob("escaped*"))


def _onnx_with_external_data(folder: Path, location: str) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "8")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [weight])
    path = folder / "model.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    assert onnx  # imported for its side effect only
    return path


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "linked.bin"])
def test_onnx_external_data_outside_the_folder_is_refused(location: str, tmp_path: Path) -> None:
    from ember.export.onnx import onnx_session

    folder = tmp_path / "run" / "export"
    folder.mkdir(parents=True)
    (folder / "linked.bin").symlink_to(_outside(tmp_path))
    path = _onnx_with_external_data(folder, location)
    with pytest.raises(RunError, match="outside|symbolic link"):
        onnx_session(path)


def test_onnx_external_data_inside_the_folder_still_loads(tmp_path: Path) -> None:
    from ember.export.onnx import onnx_session

    (tmp_path / "w.bin").write_bytes(b"\x00\x00\x80?\x00\x00\x00@")  # 1.0, 2.0 as float32
    session = onnx_session(_onnx_with_external_data(tmp_path, "w.bin"))
    import numpy as np

    assert session.run(None, {"x": np.zeros(2, dtype=np.float32)})[0].tolist() == [1.0, 2.0]
