"""`ember` command line: one subcommand, one library call. User mistakes exit 2 in one line.

Starting is cheap: building the parser imports nothing heavy (no torch, numpy or pydantic),
so `ember --help`, `ember CMD --help` and `ember --version` answer at once; each command
imports what it needs when it runs. `key=value` overrides may stand anywhere on the line
(`ember train digits-cnn --quiet train.epochs=1`).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from ember import __version__
from ember.cli_args import add_sampling_flags, float_in, int_in, sampling_kwargs
from ember.compress.cli import add_compress_parser
from ember.errors import ConfigError, EmberError, show_ember_warnings
from ember.privacy import cli as audit_cli
from ember.recommend import cli as recommend_cli
from ember.textbook.parser import add_parser as add_textbook_parser
from ember.transfer import cli as transfer_cli
from ember.tune import cli as tune_cli

__all__ = ["main", "build_parser"]

EXPLAIN_METHODS = ["saliency", "integrated_gradients", "gradcam", "occlusion", "shap", "lime", "attention",
                   "rollout"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line (exit 2), without the usage dump."""

    def error(self, message: str) -> NoReturn:
        # "argument --split: invalid choice: 'dev' (choose from 'train', 'val', 'test')" in Ember's words
        choice = re.match(r"argument (\S+): invalid choice: (.*) \(choose from (.*)\)$", message)
        if choice:
            got = choice.group(2).strip("'")
            valid = [v.strip(" '") for v in choice.group(3).split(",")]
            close = difflib.get_close_matches(got, valid, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            message = f"{choice.group(1)}: got '{got}'; valid: {', '.join(valid)}{hint}"
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def _train_parser(sub: Any) -> None:
    t = sub.add_parser("train", help="train a recipe or config file (default: digits-cnn)",
                       description="Train a recipe into a new run folder, or resume one.")
    t.add_argument("recipe", nargs="?", default=None,
                   help="a shipped recipe name (see 'ember recipes') or a CONFIG.yaml (default: digits-cnn)")
    t.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides anywhere on the line, e.g. train.epochs=5 model.channels=[8,16]")
    t.add_argument("--run-dir", type=Path, help="write the run here instead of runs/<recipe>-<time>")
    t.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run")
    t.add_argument("--quiet", action="store_true", help="plain log lines instead of a live bar")
    t.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train in N processes on this node (torchrun: gloo on CPU, NCCL on GPUs)")
    t.add_argument("--max-restarts", type=int, default=0, metavar="R",
                   help="with --nproc: restart all processes up to R times after a failure, "
                        "resuming from the latest checkpoint")


def _run_parsers(sub: Any) -> None:
    e = sub.add_parser("evaluate", help="metrics of a finished run on a split (in the run's precision)")
    e.add_argument("run_dir", type=Path, help="a run folder, e.g. runs/digits-cnn-20261201-120000")
    e.add_argument("--split", default="test", choices=["train", "val", "test"], help="default: test")
    e.add_argument("--on", default=None, metavar="DIR|NAME", help="score labelled files instead: a folder of "
                   "class sub-folders, or an installed set (asterisk_digits: a real voice for spoken digits)")
    e.add_argument("--json", action="store_true", help="print JSON")

    pr = sub.add_parser("predict", help="predict image files, CSV rows, series or texts with a finished run")
    pr.add_argument("run_dir", type=Path, help="a run folder")
    pr.add_argument("files", nargs="*", type=Path, help="images, .csv rows or series, text files")
    pr.add_argument("--text", action="append", default=None, help="a text to classify (repeatable)")
    pr.add_argument("--json", action="store_true", help="print JSON")

    pl = sub.add_parser("plan", help="dry run: parameters, FLOPs, memory, batches, no training")
    pl.add_argument("recipe", nargs="?", default="digits-cnn", help="recipe name or CONFIG.yaml")
    pl.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, as for train")
    pl.add_argument("--nproc", type=int, default=1, metavar="N", help="plan memory per rank for N processes")
    pl.add_argument("--json", action="store_true", help="print JSON")

    g = sub.add_parser("generate", help="stream text from a language-model run")
    g.add_argument("run_dir", type=Path, help="a language-model run folder")
    g.add_argument("--prompt", default="", help="text to continue")
    add_sampling_flags(g)

    ch = sub.add_parser("chat", help="chat with a language-model run in the terminal (its chat template)",
                        description="A multi-turn chat: answers stream as they are written. Ctrl-C stops an "
                                    "answer; Ctrl-C or Ctrl-D at the prompt, or /exit, ends; /reset clears "
                                    "the history. Reads lines from stdin when it is not a terminal.")
    ch.add_argument("run_dir", type=Path, help="a language-model run folder")
    ch.add_argument("--once", default=None, metavar="MESSAGE", help="answer this one message and exit")
    ch.add_argument("--system", default=None, help="a system message that opens the conversation")
    add_sampling_flags(ch)

    ex = sub.add_parser("explain", help="attributions for a run's predictions (images, text, tables, series)")
    ex.add_argument("run_dir", type=Path, help="a run folder")
    ex.add_argument("inputs", nargs="*", type=Path, help="inputs to explain (default: test examples)")
    ex.add_argument("--method", action="append", default=None, choices=EXPLAIN_METHODS,
                    help="attribution method (repeatable; default: those that fit the model)")
    ex.add_argument("--target", default=None, help="class name or index (default: the prediction)")
    ex.add_argument("--text", action="append", default=None, help="a text to explain (text models)")
    ex.add_argument("--examples", type=int_in(1, 10_000), default=4, help="test examples when no inputs are given")

    xp = sub.add_parser("export", help="export a run's model to ONNX with a parity check")
    xp.add_argument("run_dir", type=Path, help="a run folder")
    xp.add_argument("--format", default="onnx", choices=["onnx"])
    xp.add_argument("--int8", action="store_true", help="also write an int8 model (onnxruntime dynamic quantization)")
    xp.add_argument("--opset", type=int, default=18, help="ONNX opset, 17..23")

    sv = sub.add_parser("serve", help="serve a run over HTTP (FastAPI + uvicorn) with dynamic batching")
    sv.add_argument("run_dir", type=Path, help="a run folder")
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    sv.add_argument("--port", type=int_in(1, 65535), default=8000)
    sv.add_argument("--runtime", default="torch", choices=["torch", "onnx"], help="onnx needs `ember export` first")
    sv.add_argument("--api-key", default=None, help="require this key (X-API-Key or Bearer) on every request; "
                    "visible in `ps`: prefer EMBER_API_KEY or --api-key-file")
    sv.add_argument("--api-key-file", type=Path, default=None, help="read the API key from this file")
    sv.add_argument("--max-pending", type=int_in(1, 1_000_000), default=64, help="work requests in progress at once; more get 429")
    sv.add_argument("--max-batch", type=int_in(1, 65536), default=32)
    sv.add_argument("--max-wait-ms", type=float_in(0, 60_000), default=5.0)
    sv.add_argument("--drain-s", type=float_in(0.001, 86_400), default=30.0, help="on SIGINT/SIGTERM, how long the requests in "
                    "flight (a long generation) may take to finish before the server exits (default 30)")
    sv.add_argument("--header-timeout-s", type=float_in(0.001, 3600), default=10.0, help="close a connection whose request "
                    "headers take longer than this (slow clients holding sockets; default 10)")

    add_compress_parser(sub)
    audit_cli.add_parser(sub)
    add_textbook_parser(sub)
    transfer_cli.add_parser(sub)

    rp = sub.add_parser("report", help="re-render a run's report.html and plots")
    rp.add_argument("run_dir", type=Path, help="a run folder")

    r = sub.add_parser("runs", help="list runs with their key figures")
    r.add_argument("dir", nargs="?", default="runs", type=Path, help="folder holding runs (default: runs)")

    sub.add_parser("recipes", help="list the built-in recipes")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The `ember` parser and its subcommand parsers by name (no heavy import)."""
    p = _Parser(prog="ember", description="Define, train, evaluate, compress, explain, export and serve "
                                          "neural networks.")
    p.add_argument("--version", action="version", version=f"ember {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    _train_parser(sub)
    _run_parsers(sub)
    tune_cli.add_parser(sub)
    recommend_cli.add_parser(sub)
    return p, dict(sub.choices)


def _parse(argv: list[str]) -> argparse.Namespace:
    """Parse with each subcommand's options and positionals intermixed.

    argparse's `parse_intermixed_args` does not support subparsers, so the command is found
    first and its own parser reads the rest.
    """
    parser, commands = build_parser()
    at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if at is None or argv[at] not in commands or at > 0:
        return parser.parse_args(argv)  # --help, --version, or argparse's own error
    command = commands[argv[at]]
    rest = argv[at + 1:]
    # A command with sub-commands of its own (`textbook xor`) takes plain parsing.
    args = command.parse_args(rest) if command._subparsers is not None else command.parse_intermixed_args(rest)
    args.command = argv[at]
    return args


def _split_recipe(recipe: str, overrides: list[str]) -> tuple[str, list[str]]:
    """`ember train key=value` means the default recipe with that override."""
    if "=" in recipe and not Path(recipe).exists():
        return "digits-cnn", [recipe, *overrides]
    return recipe, overrides


def _train(args: argparse.Namespace) -> int:
    recipe, overrides = _split_recipe(args.recipe or "digits-cnn", list(args.overrides))
    recipe = None if args.recipe is None else recipe  # with --resume: the run's own recipe
    if args.nproc != 1 or args.max_restarts:
        from ember.training.launch import launch_train

        if args.nproc == 1:
            raise ConfigError("--max-restarts needs --nproc N (use torchrun's own flag when launching it yourself)")
        return launch_train(recipe, overrides, args.nproc, args.max_restarts, args.run_dir, args.resume, args.quiet)
    from ember.api import train

    train(recipe, overrides, run_dir=args.run_dir, resume=args.resume, live=not args.quiet)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ember.api import evaluate

    metrics = evaluate(args.run_dir, args.split, on=args.on)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        from ember.cli_tables import print_metrics

        where = f"on {args.on}, {metrics.get('examples', 0)} examples" if args.on else args.split
        print_metrics(metrics, f"{args.run_dir} [{where}, {metrics.get('dtype', 'fp32')}]")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from ember.api import predict

    preds = predict(args.run_dir, args.files, args.text)
    if args.json:
        print(json.dumps(preds, indent=2))
        return 0
    for p in preds:
        if "label" in p:
            print(f"{p['input']}: {p['label']} ({p['probabilities'][p['label']]:.3f})")
        elif "next_tokens" in p:
            print(f"{p['input']}: next {p['next_tokens']} p={p['probabilities']}")
        else:
            print(f"{p['input']}: {p['prediction']}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from ember.plan import plan, print_plan

    result = plan(*_split_recipe(args.recipe, list(args.overrides)), nproc=args.nproc)
    print(json.dumps(result, indent=2)) if args.json else print_plan(result)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from ember.generation import generate

    stream = iter(generate(args.run_dir, args.prompt, **sampling_kwargs(args)))
    first = next(stream, "")  # loads the run: a bad run or setting fails before the prompt is echoed
    sys.stdout.write(args.prompt + first)
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _chat(args: argparse.Namespace) -> int:
    from ember.chat_cli import run_chat

    return run_chat(args.run_dir, args.once, args.system, sampling_kwargs(args))


def _explain(args: argparse.Namespace) -> int:
    from ember.explain import explain
    from ember.formatting import stderr_progress

    print(explain(args.run_dir, args.inputs, args.method, args.target, args.text, args.examples,
                  progress=stderr_progress("explain")))
    return 0


def _export(args: argparse.Namespace) -> int:
    from ember.export import export_onnx
    from ember.formatting import stderr_progress

    result = export_onnx(args.run_dir, int8=args.int8, opset=args.opset, progress=stderr_progress("export"))
    print(json.dumps(result, indent=2))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from ember.serve import create_app
    from ember.serve.guard import exposure_warning, resolve_api_key
    from ember.serve.server import bind_socket, run_server

    key = resolve_api_key(args.api_key, args.api_key_file)
    sock = bind_socket(args.host, args.port)  # a busy port is told before the model loads
    app = create_app(args.run_dir, args.runtime, key, args.max_batch, args.max_wait_ms, max_pending=args.max_pending)
    if (warning := exposure_warning(args.host, key)) is not None:
        print(warning, file=sys.stderr)
    run_server(app, sock, args.drain_s, args.header_timeout_s)  # finishes in-flight requests on SIGINT/SIGTERM
    return 0


def _compress(args: argparse.Namespace) -> int:
    from ember.compress.cli import run_compress

    run_compress(args)
    return 0


def _report(args: argparse.Namespace) -> int:
    from ember.api import report

    print(report(args.run_dir))
    return 0


def _runs(args: argparse.Namespace) -> int:
    from ember.cli_tables import print_runs, print_studies
    from ember.runs import list_runs, list_studies

    runs, studies = list_runs(args.dir), list_studies(args.dir)
    if not runs and not studies:
        print(f"no runs under '{args.dir}'")
    if runs:
        print_runs(runs)
    print_studies(studies)  # each study's trials grouped under it
    return 0


def _textbook(args: argparse.Namespace) -> int:
    from ember.textbook.cli import run  # NumPy first; torch only for the comparison with Ember

    return run(args)


def _recipes(args: argparse.Namespace) -> int:
    from ember.recipe_files import (  # no torch: listing reads YAML only
        list_recipes,
        recipe_description,
    )

    for name in list_recipes():
        print(f"{name:28s} {recipe_description(name)}")
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": _train, "evaluate": _evaluate, "predict": _predict, "plan": _plan, "generate": _generate, "chat": _chat,
    "explain": _explain, "export": _export, "serve": _serve, "compress": _compress, "report": _report,
    "runs": _runs, "recipes": _recipes, "textbook": _textbook, "tune": tune_cli.run,
    "import": transfer_cli.run, "recommend": recommend_cli.run,
    "audit": audit_cli.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    show_ember_warnings()
    args = _parse(list(sys.argv[1:] if argv is None else argv))
    try:
        return HANDLERS[args.command](args)
    except EmberError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only folder... where a tool wrote without atomic_write
        print(f"error: could not access '{exc.filename or '?'}' ({exc.strerror or exc})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with: ember train --resume RUN_DIR", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
