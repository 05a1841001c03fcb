"""The README's "Bring your own model" example runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_bring_your_own_model_example(tmp_path: Path) -> None:
    text = README.read_text()
    section = text[text.index("### Bring your own model"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONHASHSEED": "0"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:5]] == [f"epoch {i}" for i in range(1, 6)]
    assert float(lines[-1]) > 0.6
    [run] = (tmp_path / "runs").iterdir()
    assert (run / "tensorboard").is_dir() and (run / "report.html").is_file()
