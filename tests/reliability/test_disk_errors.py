"""A full disk or an unwritable folder while a tool writes into a run: one line naming the file
and the OS's reason, exit 2, and no temp or half-written file left behind."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ember.cli import main
from ember.errors import RunError
from ember.runs import atomic_write_text


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _failing(code: int) -> Callable[..., None]:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    return fail


# A full disk and a read-only file system (root ignores chmod, so it is simulated at the rename
# every atomic write ends with).
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["disk-full", "read-only"])
@pytest.mark.parametrize("command", [["report"], ["explain", "--examples", "1"], ["export"],
                                     ["compress", "--method", "quantize"], ["audit", "--max-samples", "40"]])
def test_full_disk_is_one_line_and_leaves_the_run_as_it_was(command: list[str], code: int, iris_run: Path,
                                                            copy_run: Callable[[Path], Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(iris_run)
    before = _snapshot(run)
    monkeypatch.setattr(os, "replace", _failing(code))  # every atomic rename fails
    argv = [command[0], str(run), *command[1:]]
    if command[0] == "compress":
        argv += ["--run-dir", str(tmp_path / "child")]
    assert main(argv) == 2
    # Progress lines ("[ember] export: ...") may come first; the error itself is one line.
    err = "\n".join(line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("[ember] "))
    assert err.startswith("error: ") and "\n" not in err and os.strerror(code) in err, err
    monkeypatch.undo()
    after = _snapshot(run)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing there changed
    assert not [k for k in after if k.endswith(".tmp") or "/." in f"/{k}" and k not in before]
    assert not (tmp_path / "child").exists()  # a compress child that failed is removed whole


def test_a_folder_that_is_a_file_is_one_line(iris_run: Path, copy_run: Callable[[Path], Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(iris_run)
    (run / "plots").write_text("not a folder")  # writes under it fail, even as root
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "plots" in err and "\n" not in err, err
    with pytest.raises(RunError, match="Not a directory"):
        atomic_write_text(run / "plots" / "x.png", "x")
