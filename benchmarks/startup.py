"""Start-up time of the `ember` command against `python -c "import torch"`, in one process tree.

Each command runs in a fresh interpreter, `--rounds` times, alternating; the figure is the
median wall time. `ember --help` and `ember train --help` must not import torch, so they
should cost a fraction of the torch import; `import ember.api` is what a command that does
its work (train, evaluate, predict, ...) pays before doing anything.

    python benchmarks/startup.py --rounds 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    for argv in COMMANDS.values():  # warm the file cache once
        timed(argv)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, argv in COMMANDS.items():
            times[name].append(timed(argv))
    torch_s = statistics.median(times["python -c 'import torch'"])
    out = {name: {"median_s": round(statistics.median(t), 3), "min_s": round(min(t), 3),
                  "ratio_to_torch_import": round(statistics.median(t) / torch_s, 3)} for name, t in times.items()}
    print(json.dumps({"rounds": args.rounds, "commands": out}, indent=2))


if __name__ == "__main__":
    main()
