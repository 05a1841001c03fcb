"""Start-up time of the `ember` command against `python -c "import torch"`, in one process tree.

Each command runs in a fresh interpreter, `--rounds` times, alternating; the figure is the
median wall time. `ember --help` and `ember train --help` must not import torch, so they
should cost a fraction of the torch import; `import ember.api` is what a command that does
its work (train, evaluate, predict, ...) pays before doing anything.

`ember evaluate`, `ember predict` and `ember recipes` are timed whole, on a tiny digits-cnn
run the script trains first in a temporary folder (evaluate scores its test split, predict
reads one PNG): the figure a user waits for, against the torch import of the same run.

    python benchmarks/startup.py --rounds 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "ember --help": [sys.executable, "-m", "ember", "--help"],
    "ember train --help": [sys.executable, "-m", "ember", "train", "--help"],
    "ember --version": [sys.executable, "-m", "ember", "--version"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "python -c 'import ember'": [sys.executable, "-c", "import ember"],
    "python -c 'import ember.api'": [sys.executable, "-c", "import ember.api"],
}


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def working_commands(folder: Path) -> dict[str, list[str]]:
    """A tiny trained run and one input image; the commands that do real work on them."""
    import numpy as np
    from PIL import Image

    run = folder / "run"
    subprocess.run([sys.executable, "-m", "ember", "train", "digits-cnn", "train.epochs=1", "data.limit=200",
                    "log.report=false", "--run-dir", str(run), "--quiet"], check=True, stdout=subprocess.DEVNULL)
    image = folder / "digit.png"
    Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)).save(image)
    return {"ember evaluate RUN": [sys.executable, "-m", "ember", "evaluate", str(run)],
            "ember predict RUN digit.png": [sys.executable, "-m", "ember", "predict", str(run), str(image)],
            "ember recipes": [sys.executable, "-m", "ember", "recipes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        COMMANDS.update(working_commands(Path(folder)))
        measure(args.rounds)


def measure(rounds: int) -> None:
    for argv in COMMANDS.values():  # warm the file cache once
        timed(argv)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(rounds):
        for name, argv in COMMANDS.items():
            times[name].append(timed(argv))
    torch_s = statistics.median(times["python -c 'import torch'"])
    out = {name: {"median_s": round(statistics.median(t), 3), "min_s": round(min(t), 3),
                  "ratio_to_torch_import": round(statistics.median(t) / torch_s, 3)} for name, t in times.items()}
    over = {name: round(statistics.median(times[name]) - torch_s, 3) for name in times if name.startswith("ember ")}
    print(json.dumps({"rounds": rounds, "torch_import_s": round(torch_s, 3), "commands": out,
                      "seconds_over_torch_import": over}, indent=2))


if __name__ == "__main__":
    main()
