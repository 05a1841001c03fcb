"""The run directory: its paths, atomic writes, opening and listing runs.

    runs/<recipe>-<YYYYmmdd-HHMMSS>/
      config.yaml  data_info.json  metrics.jsonl  summary.json  model.safetensors
      tokenizer.json (text)  compression.json (a compressed child)
      checkpoints/step-NNNNNNNN/  checkpoints/latest  report.html  plots/
      explain/  export/  compression/ ...   what tools wrote; each may hold a section.html

`Run` is the one owner of these names: code elsewhere asks it for a path, never spells one.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ember.errors import RunError

__all__ = ["Run", "atomic_write", "atomic_write_text", "new_run_dir", "open_run", "list_runs"]


@contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write to a temp file in the same folder, fsync it, then `os.replace` it into place.

    A crash at any point leaves either the old file or the new one, never a torn file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Folders tools write into, in the order their sections appear in the report, with titles.
TOOL_SECTIONS: dict[str, str] = {
    "explain": "Explanations",
    "compression": "Compression",
    "export": "Export",
    "privacy": "Privacy budget",
    "audit": "Privacy audit",
}


@dataclass(frozen=True)
class Run:
    """A run directory and the files in it."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def data_info(self) -> Path:
        return self.path / "data_info.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def weights(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    @property
    def tokenizer(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def compression(self) -> Path:
        """`compression.json`: present in a child run that `ember compress` wrote."""
        return self.path / "compression.json"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    def tool_dir(self, tool: str) -> Path:
        """The folder a tool writes its output into (`explain`, `export`, `compression`, ...)."""
        if tool not in TOOL_SECTIONS:
            raise ValueError(f"unknown tool folder {tool!r}; known: {', '.join(TOOL_SECTIONS)}")
        return self.path / tool

    def tool_sections(self) -> list[tuple[str, str]]:
        """(title, HTML fragment) for each tool that left a `section.html` in this run.

        The report discovers what tools wrote instead of importing the tools.
        """
        found = []
        for tool, title in TOOL_SECTIONS.items():
            section = self.path / tool / "section.html"
            if section.is_file():
                found.append((title, section.read_text()))
        return found

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    def read_summary(self) -> dict[str, Any]:
        if not self.summary.exists():
            return {}
        return json.loads(self.summary.read_text())

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        rows = []
        for line in self.metrics.read_text().splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line torn by a kill mid-append; resume rewrites the file
        return rows

    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")

    def truncate_metrics(self, step: int) -> None:
        """Keep only points logged at or before `step` (used when resuming)."""
        rows = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in rows))


def check_free(run_dir: Path) -> None:
    """An explicit `--run-dir` must not already hold a run."""
    if (run_dir / "config.yaml").exists():
        raise RunError(f"--run-dir '{run_dir}' already holds a run; use --resume {run_dir} or another folder")


def fresh_run_path(runs_dir: Path, recipe: str) -> Path:
    """`runs_dir/<recipe>-<time>`, not yet taken (not created)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = runs_dir / f"{recipe}-{stamp}"
    suffix = 1
    while path.exists():  # two runs started in the same second
        suffix += 1
        path = runs_dir / f"{recipe}-{stamp}-{suffix}"
    return path


def new_run_dir(runs_dir: Path, recipe: str, run_dir: Path | None = None) -> Run:
    """Create a fresh run directory; an explicit `run_dir` must not already hold a run."""
    if run_dir is not None:
        check_free(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        return Run(run_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    path = fresh_run_path(runs_dir, recipe)
    path.mkdir()
    return Run(path)


def open_run(path: str | Path) -> Run:
    """Open an existing run directory, checking it is one."""
    p = Path(path)
    if not p.is_dir():
        raise RunError(f"run directory '{p}' does not exist")
    if not (p / "config.yaml").is_file():
        raise RunError(f"'{p}' is not a run directory (no config.yaml); pass a folder under runs/")
    return Run(p)


def list_runs(root: str | Path = "runs") -> list[Run]:
    """Runs directly under `root`, oldest first."""
    base = Path(root)
    if not base.is_dir():
        return []
    found = [Run(p) for p in base.iterdir() if (p / "config.yaml").is_file()]
    return sorted(found, key=lambda r: r.config.stat().st_mtime)
