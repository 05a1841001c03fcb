"""The run directory: its paths, atomic writes, opening and listing runs.

    runs/<recipe>-<YYYYmmdd-HHMMSS>/
      config.yaml  data_info.json  metrics.jsonl  summary.json  model.safetensors
      tokenizer.json (text)  chat_template.jinja (chat)  compression.json (a compressed child)
      checkpoints/step-NNNNNNNN/  checkpoints/latest  report.html  plots/
      explain/  export/  compression/ ...   what tools wrote; each may hold a section.html

    runs/<study>/   a study of `ember tune`: tune.json base.yaml journal.log study.json study.html
      best.yaml  trial-NNNN/ (each a run folder as above, plus trial.json)

`Run` and `Study` are the owners of these names: code elsewhere asks it for a path, never spells one.
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
from ember.run_lock import LOCK_NAME, lock_run, unlock_run
from ember.safe_paths import check_chain, check_name, inside, read_text, run_root

__all__ = ["Run", "Study", "atomic_write", "atomic_write_text", "new_run_dir", "open_run", "list_runs",
           "list_studies", "lock_run", "unlock_run", "file_mode", "read_json_object", "LOCK_NAME"]



def _umask() -> int:
    """The process umask, read without changing it where Linux allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (a brief race, other threads only)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from `open()` under the current umask (0644 under 022)."""
    return 0o666 & ~_umask()


@contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write to a temp file in the same folder, fsync it, then `os.replace` it into place.

    A crash at any point leaves either the old file or the new one, never a torn file. Inside a
    run folder a link anywhere below it is refused (nothing is written through it), and any
    OSError (full disk, read-only filesystem, a folder that is a file) becomes a one-line RunError
    naming the file, with the temp file removed.
    """
    root = run_root(path)
    if root is not None:
        check_chain(root, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if root is not None:
            check_chain(root, path.parent)  # mkdir may have raced with a planted link
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise RunError(f"could not write '{path}' ({exc.strerror or exc}); nothing was written") from None
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes 0600; a run's files follow the umask like any tool's
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise RunError(f"could not write '{path}' ({exc.strerror or exc}); nothing partial was kept") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object (a run's data_info.json, summary.json).

    Raises:
        RunError: unreadable, not JSON, or not an object.
    """
    try:
        raw = json.loads(read_text(path))
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"'{path}' is not valid JSON ({str(exc).splitlines()[0][:120]}); the run folder is "
                       "damaged") from None
    if not isinstance(raw, dict):
        raise RunError(f"'{path}' should hold a JSON object, got {type(raw).__name__}; the run folder is damaged")
    return raw


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
        return inside(self.path, "config.yaml")

    @property
    def data_info(self) -> Path:
        return inside(self.path, "data_info.json")

    @property
    def metrics(self) -> Path:
        return inside(self.path, "metrics.jsonl")

    @property
    def summary(self) -> Path:
        return inside(self.path, "summary.json")

    @property
    def weights(self) -> Path:
        return inside(self.path, "model.safetensors")

    @property
    def checkpoints(self) -> Path:
        return inside(self.path, "checkpoints")

    @property
    def report(self) -> Path:
        return inside(self.path, "report.html")

    @property
    def tokenizer(self) -> Path:
        return inside(self.path, "tokenizer.json")

    @property
    def chat_template(self) -> Path:
        """`chat_template.jinja`: how conversations become prompts (`ember chat`, the OpenAI routes)."""
        return inside(self.path, "chat_template.jinja")

    @property
    def compression(self) -> Path:
        """`compression.json`: present in a child run that `ember compress` wrote."""
        return inside(self.path, "compression.json")

    @property
    def trial(self) -> Path:
        """`trial.json`: present in a run that `ember tune` made (study, number, params, state)."""
        return inside(self.path, "trial.json")

    @property
    def tensorboard(self) -> Path:
        return inside(self.path, "tensorboard")

    def tool_dir(self, tool: str) -> Path:
        """The folder a tool writes its output into (`explain`, `export`, `compression`, ...)."""
        if tool not in TOOL_SECTIONS:
            raise ValueError(f"unknown tool folder {tool!r}; known: {', '.join(TOOL_SECTIONS)}")
        return inside(self.path, tool)

    def tool_sections(self) -> list[tuple[str, str]]:
        """(title, HTML fragment) for each tool that left a `section.html` in this run.

        The report discovers what tools wrote instead of importing the tools.
        """
        found = []
        for tool, title in TOOL_SECTIONS.items():
            section = inside(self.path, tool, "section.html")
            if section.is_file():
                found.append((title, read_text(section, self.path)))
        return found

    @property
    def plots(self) -> Path:
        return inside(self.path, "plots")

    def read_summary(self) -> dict[str, Any]:
        """`summary.json` ({} before training ends). Raises RunError when it is not a JSON object."""
        if not self.summary.exists():
            return {}
        return read_json_object(self.summary)

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        rows = []
        for line in read_text(self.metrics, self.path).splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line torn by a kill mid-append; resume rewrites the file
        return rows

    def append_metrics(self, row: dict[str, Any]) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.metrics, flags, 0o666)
        except OSError as exc:
            raise RunError(f"could not write '{self.metrics}' ({exc.strerror})") from None
        with os.fdopen(fd, "a") as f:
            f.write(json.dumps(row) + "\n")

    def truncate_metrics(self, step: int) -> None:
        """Keep only points logged at or before `step` (used when resuming)."""
        rows = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in rows))


def check_free(run_dir: Path) -> None:
    """An explicit `--run-dir` must not already hold a run."""
    if (run_dir / "config.yaml").exists():
        raise RunError(f"--run-dir '{run_dir}' already holds a run; use --resume {run_dir} or another folder")


def _candidates(runs_dir: Path, recipe: str) -> Iterator[Path]:
    check_name(recipe, "recipe (the run folder's name)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    yield runs_dir / f"{recipe}-{stamp}"
    for suffix in range(2, 10_000):  # runs started in the same second
        yield runs_dir / f"{recipe}-{stamp}-{suffix}"


def fresh_run_path(runs_dir: Path, recipe: str) -> Path:
    """`runs_dir/<recipe>-<time>`, not yet taken when looked at (not created: see `new_run_dir`)."""
    return next(p for p in _candidates(runs_dir, recipe) if not p.exists())


def _make_dirs(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RunError(f"{what} '{path}' is a file (or under one); give a folder") from None
    except PermissionError:
        raise RunError(f"{what} '{path}' cannot be created (permission denied); give a writable folder") from None


def new_run_dir(runs_dir: Path, recipe: str, run_dir: Path | None = None, lock: bool = True) -> Run:
    """Create a fresh run directory, locked for this process (see `lock_run`).

    Without `run_dir` the name is claimed by `mkdir` itself, retried with a suffix, so
    processes starting runs at the same moment never collide. An explicit `run_dir` must
    not already hold a run.

    Raises:
        RunError: `run_dir` holds a run, is in use, or a folder is a file.
    """
    if run_dir is not None:
        check_free(run_dir)
        _make_dirs(run_dir, "--run-dir")
        if lock:
            lock_run(run_dir)
            if (run_dir / "config.yaml").exists():  # another process got here first
                unlock_run(run_dir)
                check_free(run_dir)
        return Run(run_dir)
    _make_dirs(runs_dir, "log.runs_dir")
    for path in _candidates(runs_dir, recipe):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        if lock:
            lock_run(path)
        return Run(path)
    raise RunError(f"log.runs_dir '{runs_dir}': no free name for {recipe} this second")


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


@dataclass(frozen=True)
class Study:
    """A study folder of `ember tune`: its settings, storage, report and one run per trial."""

    path: Path

    @property
    def settings(self) -> Path:
        """`tune.json`: what defines the objective (base config, space, metric, direction)."""
        return self.path / "tune.json"

    @property
    def base_config(self) -> Path:
        """`base.yaml`: the recipe with its overrides, resolved once; every trial starts from it."""
        return self.path / "base.yaml"

    @property
    def journal(self) -> Path:
        """Optuna's journal file (the default storage)."""
        return self.path / "journal.log"

    def lock(self, name: str) -> Path:
        """A lock file: `driver` (one `ember tune` at a time), `workers`, `ask`."""
        return self.path / f".{name}.lock"

    @property
    def record(self) -> Path:
        """`study.json`: every trial with its state, value, params and run folder."""
        return self.path / "study.json"

    @property
    def report(self) -> Path:
        return self.path / "study.html"

    @property
    def best(self) -> Path:
        """`best.yaml`: the best trial's configuration as a ready recipe."""
        return self.path / "best.yaml"

    @property
    def plots(self) -> Path:
        return inside(self.path, "plots")

    def trial_dir(self, number: int) -> Path:
        return self.path / f"trial-{number:04d}"

    def trials(self) -> list[Run]:
        """The trial runs in this study, by number."""
        return sorted((Run(p) for p in self.path.glob("trial-*") if (p / "config.yaml").is_file()),
                      key=lambda r: r.path.name)


def list_studies(root: str | Path = "runs") -> list[Study]:
    """Study folders of `ember tune` directly under `root`, oldest first."""
    base = Path(root)
    if not base.is_dir():
        return []
    found = [Study(p) for p in base.iterdir() if (p / "tune.json").is_file()]
    return sorted(found, key=lambda s: s.settings.stat().st_mtime)
