"""`ember` command line: one subcommand, one library call. User mistakes exit 2 in one line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from ember.errors import ConfigError, EmberError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line (exit 2), without the usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ember", description="Define, train, evaluate and report neural networks.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a recipe or config file (default: digits-cnn)")
    t.add_argument("recipe", nargs="?", default="digits-cnn", help="recipe name or CONFIG.yaml")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=5")
    t.add_argument("--run-dir", type=Path, help="write the run here instead of runs/<recipe>-<time>")
    t.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run")
    t.add_argument("--quiet", action="store_true", help="plain log lines instead of a live bar")
    t.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train in N processes on this node (torchrun: gloo on CPU, NCCL on GPUs)")
    t.add_argument("--max-restarts", type=int, default=0, metavar="R",
                   help="with --nproc: restart all processes up to R times after a failure, "
                        "resuming from the latest checkpoint")

    e = sub.add_parser("evaluate", help="metrics of a finished run on a split")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--split", default="test", help="train, val or test")
    e.add_argument("--json", action="store_true", help="print JSON")

    pr = sub.add_parser("predict", help="predict image files or CSV rows with a finished run")
    pr.add_argument("run_dir", type=Path)
    pr.add_argument("files", nargs="*", type=Path, help="images, .csv rows or series, text files")
    pr.add_argument("--text", action="append", default=None, help="a text to classify (repeatable)")
    pr.add_argument("--json", action="store_true", help="print JSON")

    pl = sub.add_parser("plan", help="dry run: parameters, FLOPs, memory, batches, no training")
    pl.add_argument("recipe", nargs="?", default="digits-cnn")
    pl.add_argument("overrides", nargs="*")
    pl.add_argument("--nproc", type=int, default=1, metavar="N", help="plan memory per rank for N processes")
    pl.add_argument("--json", action="store_true", help="print JSON")

    g = sub.add_parser("generate", help="stream text from a language-model run")
    g.add_argument("run_dir", type=Path)
    g.add_argument("--prompt", default="", help="text to continue")
    g.add_argument("--max-new-tokens", type=int, default=200)
    g.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")

    ex = sub.add_parser("explain", help="attributions for a run's predictions (images, text, tables, series)")
    ex.add_argument("run_dir", type=Path)
    ex.add_argument("inputs", nargs="*", type=Path, help="inputs to explain (default: test examples)")
    ex.add_argument("--method", action="append", default=None,
                    help="saliency, integrated_gradients, gradcam, occlusion, shap, lime, attention, rollout")
    ex.add_argument("--target", default=None, help="class name or index (default: the prediction)")
    ex.add_argument("--text", action="append", default=None, help="a text to explain (text models)")
    ex.add_argument("--examples", type=int, default=4, help="test examples when no inputs are given")

    xp = sub.add_parser("export", help="export a run's model to ONNX with a parity check")
    xp.add_argument("run_dir", type=Path)
    xp.add_argument("--format", default="onnx", choices=["onnx"])
    xp.add_argument("--int8", action="store_true", help="also write an int8 model (onnxruntime dynamic quantization)")
    xp.add_argument("--opset", type=int, default=18)

    sv = sub.add_parser("serve", help="serve a run over HTTP (FastAPI + uvicorn) with dynamic batching")
    sv.add_argument("run_dir", type=Path)
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--runtime", default="torch", help="torch or onnx (needs `ember export` first)")
    sv.add_argument("--api-key", default=None, help="require this key (X-API-Key or Bearer) on every request")
    sv.add_argument("--max-batch", type=int, default=32)
    sv.add_argument("--max-wait-ms", type=float, default=5.0)

    from ember.compress.cli import add_compress_parser

    add_compress_parser(sub)
    from ember.transfer import cli as transfer_cli

    transfer_cli.add_parser(sub)

    rp = sub.add_parser("report", help="re-render a run's report.html and plots")
    rp.add_argument("run_dir", type=Path)

    r = sub.add_parser("runs", help="list runs with their key figures")
    r.add_argument("dir", nargs="?", default="runs", type=Path)

    sub.add_parser("recipes", help="list the built-in recipes")
    return p


def _split_recipe(recipe: str, overrides: list[str]) -> tuple[str, list[str]]:
    """`ember train key=value` means the default recipe with that override."""
    if "=" in recipe and not Path(recipe).exists():
        return "digits-cnn", [recipe, *overrides]
    return recipe, overrides


def _run(args: argparse.Namespace) -> int:
    from ember import api

    if args.command == "train":
        recipe, overrides = _split_recipe(args.recipe, list(args.overrides))
        if args.nproc != 1 or args.max_restarts:
            from ember.training.launch import launch_train

            if args.nproc == 1:
                raise ConfigError("--max-restarts needs --nproc N (use torchrun's own flag when launching it yourself)")
            return launch_train(recipe, overrides, args.nproc, args.max_restarts, args.run_dir, args.resume,
                                args.quiet)
        api.train(recipe, overrides, run_dir=args.run_dir, resume=args.resume, quiet=args.quiet)
    elif args.command == "evaluate":
        metrics = api.evaluate(args.run_dir, args.split)
        if args.json:
            print(json.dumps(metrics, indent=2))
        else:
            from ember.cli_tables import print_metrics

            print_metrics(metrics, f"{args.run_dir} [{args.split}]")
    elif args.command == "predict":
        preds = api.predict(args.run_dir, args.files, args.text)
        if args.json:
            print(json.dumps(preds, indent=2))
        else:
            for p in preds:
                if "label" in p:
                    print(f"{p['input']}: {p['label']} ({p['probabilities'][p['label']]:.3f})")
                elif "next_tokens" in p:
                    print(f"{p['input']}: next {p['next_tokens']} p={p['probabilities']}")
                else:
                    print(f"{p['input']}: {p['prediction']}")
    elif args.command == "plan":
        from ember.plan import plan, print_plan

        result = plan(*_split_recipe(args.recipe, list(args.overrides)), nproc=args.nproc)
        print(json.dumps(result, indent=2)) if args.json else print_plan(result)
    elif args.command == "generate":
        from ember.generation import generate

        if args.max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens: got {args.max_new_tokens}; must be >= 1")
        sys.stdout.write(args.prompt)
        for piece in generate(args.run_dir, args.prompt, args.max_new_tokens, args.temperature,
                              args.top_k, args.top_p, args.seed, args.stop):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    elif args.command == "explain":
        from ember.attribution import explain

        print(explain(args.run_dir, args.inputs, args.method, args.target, args.text, args.examples))
    elif args.command == "export":
        from ember.export import export_onnx

        print(json.dumps(export_onnx(args.run_dir, int8=args.int8, opset=args.opset), indent=2))
    elif args.command == "serve":
        import uvicorn

        from ember.serve import create_app

        app = create_app(args.run_dir, args.runtime, args.api_key, args.max_batch, args.max_wait_ms)
        # uvicorn finishes in-flight requests on SIGINT/SIGTERM before it exits.
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=30)
    elif args.command == "compress":
        from ember.compress.cli import run_compress

        run_compress(args)
    elif args.command == "import":
        from ember.transfer import cli as transfer_cli

        return transfer_cli.run(args)
    elif args.command == "report":
        print(api.report(args.run_dir))
    elif args.command == "runs":
        from ember.cli_tables import print_runs
        from ember.runs import list_runs

        runs = list_runs(args.dir)
        if not runs:
            print(f"no runs under '{args.dir}'")
        else:
            print_runs(runs)
    elif args.command == "recipes":
        from ember.config import list_recipes, load

        for name in list_recipes():
            print(f"{name:28s} {load(name).description}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        return _run(args)
    except EmberError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with: ember train --resume RUN_DIR", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
