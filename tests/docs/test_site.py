"""The documentation site builds with `mkdocs build --strict`: no broken link, no missing
reference, no docstring the API reference cannot read, and a CLI page generated from the parser."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_site_builds_strict_with_a_generated_cli_reference(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    from ember.cli import build_parser

    _, commands = build_parser()
    for name in commands:  # every subcommand has its section, with its own usage line
        assert f"usage: ember {name}" in cli, name
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    import ember

    documented = set(re.findall(r'id="ember\.[\w.]*?\.(\w+)"', api))
    missing = [name for name in ember.__all__ if name != "__version__" and name not in documented]
    assert not missing, f"public names missing from docs/reference/api.md: {missing}"
