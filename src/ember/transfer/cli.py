"""`ember import SOURCE [--out RUN_DIR]`: registered by cli.py; imports no torch until run.

SOURCE: a Hugging Face directory (GPT-2 or Llama, told apart by config.json's model_type),
a `.gguf` file (Llama architecture), or a built-in name (`smollm2-135m-instruct`).
`ember import gpt2 HF_DIR` (the older form) still works.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ember.errors import ConfigError

__all__ = ["add_parser", "run", "BUILTIN_SOURCES"]

BUILTIN_SOURCES = ("smollm2-135m-instruct",)


def add_parser(subparsers: Any) -> None:
    """Add the `import` subcommand to the CLI's subparsers."""
    p = subparsers.add_parser("import", help="convert pretrained weights into an Ember run (GPT-2, Llama, GGUF)")
    p.add_argument("kind", help=f"a Hugging Face model directory, a .gguf file, or a built-in name "
                   f"({', '.join(BUILTIN_SOURCES)}); or 'gpt2' / 'llama' followed by the directory")
    p.add_argument("source", type=Path, nargs="?", default=None, help="the directory after 'gpt2' / 'llama'")
    p.add_argument("--out", type=Path, default=None, help="the run directory to create")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where the run goes without --out")
    p.add_argument("--block-size", type=int, default=None,
                   help="context length of a Llama run (default: the model's, at most 2048)")


def _model_type(folder: Path) -> str:
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"'{folder}' has no config.json; give a Hugging Face GPT-2 or Llama model directory")
    try:
        return str(json.loads(path.read_text()).get("model_type"))
    except (ValueError, AttributeError):
        raise ConfigError(f"'{path}' is not a JSON object") from None


def run(args: argparse.Namespace) -> int:
    """Convert and print the new run's directory."""
    if args.block_size is not None and args.block_size < 1:
        raise ConfigError(f"--block-size must be >= 1, got {args.block_size}")
    kind = args.kind if args.source is not None else None
    if kind not in (None, "gpt2", "llama"):
        raise ConfigError(f"'{args.kind} {args.source}': give one SOURCE, or gpt2/llama followed by a directory")
    source = args.source if args.source is not None else Path(args.kind)
    if args.source is None and args.kind in ("gpt2", "llama"):
        raise ConfigError(f"`ember import {args.kind}` needs the model directory after it")
    if args.source is None and args.kind in BUILTIN_SOURCES:
        from ember.transfer.gguf_import import builtin_gguf, import_gguf

        created = import_gguf(builtin_gguf(args.kind), args.out, args.runs_dir, args.block_size)
    elif source.suffix == ".gguf" and kind is None:
        from ember.transfer.gguf_import import import_gguf

        created = import_gguf(source, args.out, args.runs_dir, args.block_size)
    else:
        source = source.expanduser()
        if not source.is_dir():
            raise ConfigError(f"'{source}' is not a directory, a .gguf file or a built-in name "
                              f"({', '.join(BUILTIN_SOURCES)})")
        model_type = _model_type(source)
        if kind == "gpt2" or (kind is None and model_type == "gpt2"):
            from ember.transfer.gpt2_import import import_gpt2

            created = import_gpt2(source, args.out, args.runs_dir)
        else:
            from ember.transfer.llama_import import import_llama_dir

            created = import_llama_dir(source, args.out, args.runs_dir, args.block_size)
    print(created.path)
    return 0
