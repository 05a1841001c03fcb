"""`ember compress`: its arguments, the step they describe, and the table it prints.

Kept out of `ember.cli` so that file stays one line per subcommand; nothing heavy is
imported until the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ember.errors import ConfigError

__all__ = ["add_compress_parser", "steps_from_args", "run_compress"]

# flag dest -> step field; only flags the user gave go into the step.
_STEP_FLAGS = ("kind", "sparsity", "iterations", "finetune_epochs", "lr", "max_steps", "mode",
               "calibration_batches", "student", "temperature", "alpha", "epochs")


def add_compress_parser(sub: Any) -> None:
    """Add the `compress` subcommand to the `ember` parser's subparsers."""
    c = sub.add_parser("compress", help="prune, quantize or distil a finished run into a new run (the parent "
                                        "is only read)")
    c.add_argument("run_dir", type=Path, help="the run to compress")
    c.add_argument("--method", help="prune, quantize, distill or finetune (default: the run's compress: "
                                    "section)")
    c.add_argument("--recipe", type=Path, metavar="CHAIN.yaml", help="a chain of steps: steps: [{method: ...}]")
    c.add_argument("--run-dir", dest="out_dir", type=Path,
                   help="write the child here (a chain: one sub-folder per step) instead of beside the parent")
    c.add_argument("--quiet", action="store_true", help="plain log lines instead of a live bar")
    g = c.add_argument_group("prune")
    g.add_argument("--kind", help="unstructured (zeros) or structured (channels/neurons/heads removed)")
    g.add_argument("--sparsity", type=float, help="share of weights (or units) removed, in [0, 1); default 0.5")
    g.add_argument("--iterations", type=int, help="prune in this many rounds, fine-tuning after each")
    g.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs per round (prune) or of QAT")
    g.add_argument("--lr", type=float, help="fine-tuning / distillation learning rate")
    g.add_argument("--max-steps", type=int, help="cap on optimizer steps per training phase")
    q = c.add_argument_group("quantize")
    q.add_argument("--mode", help="dynamic, static (calibrated, CNNs), qat (quantization-aware training) or "
                                  "weight_only (int8 weights, float activations: LLM decoding), weight_only_int4 (int4 groups of 32)")
    q.add_argument("--calibration-batches", type=int, help="training batches that calibrate static int8")
    d = c.add_argument_group("distill")
    d.add_argument("--student", help="YAML file with the student's model section (or inline: '{name: mlp}')")
    d.add_argument("--temperature", type=float, help="softens teacher and student outputs (default 4)")
    d.add_argument("--alpha", type=float, help="weight of the teacher term, 1 - alpha on the labels (0.5)")
    d.add_argument("--epochs", type=int, help="training epochs (distill: default the recipe's; finetune: 2)")


def _student(value: str) -> Any:
    """A path stays a path; an inline YAML mapping (`{name: mlp, hidden: [32]}`) becomes a dict."""
    if Path(value).is_file() or not value.lstrip().startswith("{"):
        return value
    import yaml  # not at the top: `ember --help` builds this parser

    from ember.yaml_safe import load_yaml

    try:
        parsed = load_yaml(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--student: not a file and not valid YAML ({str(exc).strip().splitlines()[0]})") from None
    return parsed


def steps_from_args(args: argparse.Namespace) -> Any:
    """The `CompressConfig` the flags describe, or None to use the run's own `compress:` section."""
    from ember.compress.config import CompressConfig, parse_step, read_chain

    given = {k: getattr(args, k) for k in _STEP_FLAGS if getattr(args, k, None) is not None}
    if args.method is not None and args.recipe is not None:
        raise ConfigError("--method and --recipe: give one (a single step, or a chain file)")
    if args.method is None:
        if given:
            flag = "--" + next(iter(given)).replace("_", "-")
            raise ConfigError(f"{flag} needs --method (prune, quantize, distill, finetune)")
        return read_chain(args.recipe) if args.recipe is not None else None
    if "student" in given:
        given["student"] = _student(given["student"])
    step = parse_step({"method": args.method, **given}, from_flags=True)
    return CompressConfig(steps=[step])


def run_compress(args: argparse.Namespace) -> None:
    """The `ember compress` command: parse the step(s), compress, print each child's table."""
    from ember.compress.pipeline import compress

    compress(args.run_dir, steps_from_args(args), args.out_dir, quiet=args.quiet)
