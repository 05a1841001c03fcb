"""The `ember textbook` command line, kept apart so that `ember --help` imports no NumPy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["add_parser", "TOLERANCE"]

TOLERANCE = {"fp64": 1e-6, "fp32": 1e-3}  # fp32: float32 rounding, amplified by the unstable phase


def add_parser(subparsers: Any) -> None:
    """Register `ember textbook xor` on the top-level subparsers."""
    p = subparsers.add_parser("textbook", help="the textbook's formulas in NumPy, checked against Ember")
    topics = p.add_subparsers(dest="topic", required=True, parser_class=type(p))
    x = topics.add_parser("xor", help="train the 2-4-1 tanh XOR network in NumPy and with ember train xor-mlp")
    x.add_argument("--steps", type=int, default=1000, help="full-batch optimizer steps (default 1000)")
    x.add_argument("--seed", type=int, default=0, help="train.seed of both runs (the initial weights)")
    x.add_argument("--print-every", type=int, default=100, metavar="K", help="print the loss every K steps")
    x.add_argument("--precision", choices=sorted(TOLERANCE), default="fp64",
                   help="the dtype of Ember's run (fp64: agreement to 1e-6; fp32: as Ember trains by default)")
    x.add_argument("--tolerance", type=float, default=None,
                   help="largest weight or loss difference accepted (default: 1e-6 in fp64, 1e-3 in fp32)")
    x.add_argument("--no-compare", action="store_true",
                   help="NumPy only (no torch): its own initial weights, no Ember run")
    x.add_argument("--run-dir", type=Path, default=None, help="keep Ember's run here (default: a temporary one)")
    x.add_argument("--json", action="store_true", help="print the comparison as JSON")
