"""Every example of README.md and docs/*.md runs: documentation that cannot drift.

One test per page. Its `bash`, `console` and `python` blocks run in page order in one
temporary directory (conventions: tests/docs/markdown_blocks.py and docs/contributing-docs.md).
`ember ...` lines run in this process through `ember.cli.main` (a subprocess would pay the
torch import, seconds, for every line); other shell lines run in bash; Python blocks share one
namespace per page. A training command seen before with the same arguments and `--run-dir`
copies that run instead of training again, so pages can share their expensive runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import shlex
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest

from ember.errors import EmberWarning
from tests.docs.markdown_blocks import (
    Step,
    console_pairs,
    output_matches,
    pages,
    parse_page,
    requirements,
    shell_commands,
)

ROOT = Path(__file__).resolve().parents[2]
PAGES = pages(ROOT)


def _page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


class PageRunner:
    """Runs one page's steps in `cwd`, sharing trained runs across pages through `cache`."""

    def __init__(self, cwd: Path, cache: Path) -> None:
        self.cwd = cwd
        self.cache = cache
        self.namespace: dict[str, Any] = {"__name__": "__docs__"}

    def ember(self, argv: list[str]) -> tuple[int, str]:
        """`ember ARGV` in this process: (exit status, stdout and stderr together)."""
        from ember.cli import main

        cached = self._cached_run(argv)
        if cached is not None:
            return 0, cached
        buf = io.StringIO()
        # catch_warnings: main() installs its warning printer, undone here; "always": a warning
        # an earlier test of this process raised from the same line still shows, as in a shell
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), warnings.catch_warnings():
            warnings.simplefilter("always", EmberWarning)
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse's own exits (usage errors, --help, --version)
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == 0:
            self._store_run(argv)
        return code, buf.getvalue()

    def _run_key(self, argv: list[str]) -> str | None:
        """A cache key for a training whose result depends on its arguments alone."""
        if argv[:1] != ["train"] or "--run-dir" not in argv or "--resume" in argv:
            return None
        at = argv.index("--run-dir")
        others = argv[:at] + argv[at + 2:]
        if any((self.cwd / a).exists() for a in others[1:] if "=" not in a):
            return None  # reads a file of this page (a config, data): not shareable
        return hashlib.sha256("\0".join(argv).encode()).hexdigest()[:16]

    def _cached_run(self, argv: list[str]) -> str | None:
        key = self._run_key(argv)
        if key is None or not (self.cache / key).is_dir():
            return None
        dest = self.cwd / argv[argv.index("--run-dir") + 1]
        if dest.exists():
            return None  # this page made it already: run the command as written
        shutil.copytree(self.cache / key, dest)
        return f"(the run of an earlier page, copied to {dest})\n"

    def _store_run(self, argv: list[str]) -> None:
        key = self._run_key(argv)
        run = self.cwd / argv[argv.index("--run-dir") + 1] if key else None
        if key and run is not None and run.is_dir() and not (self.cache / key).exists():
            shutil.copytree(run, self.cache / key)

    def shell(self, command: str) -> tuple[int, str]:
        """One shell command: `ember ...` in this process, anything else in bash."""
        words = shlex.split(command, comments=True)
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        plumbing = any(set(tok) <= set("();<>|&") for tok in lexer) or "$" in command
        if words and words[0] == "ember" and not plumbing:  # a pipe, redirect or variable: bash's
            return self.ember(words[1:])
        proc = subprocess.run(["bash", "-c", command], cwd=self.cwd, capture_output=True, text=True,
                              timeout=120)
        return proc.returncode, proc.stdout + proc.stderr

    def run(self, step: Step) -> None:
        if step.lang == "python":
            exec(compile(step.code, f"<{step.where}>", "exec"), self.namespace)  # noqa: S102
        elif step.lang == "bash":
            for command in shell_commands(step.code):
                code, out = self.shell(command)
                assert code == 0, f"{step.where}: `{command}` exited {code}:\n{out}"
        else:  # console: compare with the output the page shows
            for command, expected in console_pairs(step.code):
                _, out = self.shell(command)
                assert output_matches(expected, out), (
                    f"{step.where}: `{command}` printed\n{out}\nbut the page shows\n{expected}")


@pytest.fixture(scope="session")
def run_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("doc-runs")


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_examples(page: Path, tmp_path: Path, run_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = page.read_text()
    steps = [s for s in parse_page(text) if s.skip is None]
    if not steps:
        pytest.skip(f"{_page_id(page)} has no runnable example")
    for need in requirements(text):
        module = need.removeprefix("python:")
        if (importlib.util.find_spec(module) is None) if need.startswith("python:") else shutil.which(need) is None:
            pytest.skip(f"{_page_id(page)}: its examples need {module}, not installed here (make test installs it)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster than two fighting over 2 cores
    try:
        runner = PageRunner(tmp_path, run_cache)
        for step in steps:
            runner.run(step)
    finally:
        torch.set_num_threads(threads)


def test_every_skip_has_a_reason_and_skips_stay_rare() -> None:
    skipped = [(p, s) for p in PAGES for s in parse_page(p.read_text()) if s.skip is not None]
    runnable = [s for p in PAGES for s in parse_page(p.read_text())]
    assert all(s.skip for _, s in skipped)
    assert len(skipped) <= len(runnable) // 3, [f"{_page_id(p)}:{s.line} {s.skip}" for p, s in skipped]
