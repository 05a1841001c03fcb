"""`ember import gpt2 HF_DIR [--out RUN_DIR]`: registered by cli.py; imports no torch until run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Add the `import` subcommand to the CLI's subparsers."""
    p = subparsers.add_parser("import", help="convert pretrained weights into an Ember run (gpt2)")
    p.add_argument("kind", choices=["gpt2"], help="what the checkpoint is")
    p.add_argument("source", type=Path, help="a local Hugging Face model directory (safetensors)")
    p.add_argument("--out", type=Path, default=None, help="the run directory to create")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where the run goes without --out")


def run(args: argparse.Namespace) -> int:
    """Convert and print the new run's directory."""
    from ember.transfer.gpt2_import import import_gpt2

    created = import_gpt2(args.source, args.out, args.runs_dir)
    print(created.path)
    return 0
