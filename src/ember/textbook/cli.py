"""`ember textbook xor`: the first chapter's network in NumPy, then the same start through Ember.

The NumPy side is `ember.textbook.xor` (hand-written backpropagation). The Ember side is
`ember train xor-mlp` itself, the real `api.train` -> `fit` loop, `Regression` task and
`torch.optim.SGD`, run with torch's default dtype set to float64, so that rounding
differences do not get amplified by the early, unstable steps (the loss climbs to ~3.7
near step 50 at lr 0.5 and momentum 0.9). Both start from the weights Ember's seeded
initialisation gives (`torch.manual_seed(train.seed)` then `models.build`, as `api.train`
does); a checkpoint after every step and the per-step logged loss let the two be compared
step by step. No torch import at module level: `ember --help` stays light.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ember.errors import ConfigError
from ember.textbook.parser import TOLERANCE
from ember.textbook.xor import (
    PARAM_NAMES,
    XOR_X,
    XOR_Y,
    XorHistory,
    init_xor,
    train_xor,
    xor_forward,
)

__all__ = ["run", "XorComparison", "compare_xor"]

RECIPE = "xor-mlp"
# The textbook's names for the parameters of Ember's MLP (Flatten, Linear, Tanh, Linear).
EMBER_NAMES = {"w1": "net.1.weight", "b1": "net.1.bias", "w2": "net.3.weight", "b2": "net.3.bias"}


@dataclass
class XorComparison:
    """How far the NumPy and Ember trainings are apart, over every compared step."""

    steps: int
    precision: str
    compared_steps: int  # steps whose checkpointed weights were compared (plus the final weights)
    max_weight_diff: float  # max |w_numpy − w_ember| over every compared step and parameter
    final_weight_diff: float  # the same, after the last step only
    max_loss_diff: float  # max |L_numpy − L_ember| over the per-step logged losses
    final_loss: float
    tolerance: float

    @property
    def agree(self) -> bool:
        return self.max_weight_diff <= self.tolerance and self.max_loss_diff <= self.tolerance


def run(args: argparse.Namespace) -> int:
    """Train, print, and return 0 when the two trainings agree within the tolerance (else 1)."""
    if args.steps < 1:
        raise ConfigError(f"--steps: got {args.steps}; must be >= 1")
    if args.print_every < 1:
        raise ConfigError(f"--print-every: got {args.print_every}; must be >= 1")
    if args.tolerance is not None and not args.tolerance > 0:
        raise ConfigError(f"--tolerance: got {args.tolerance}; must be > 0")
    quiet = args.json

    def log(step: int, loss: float) -> None:
        if not quiet and (step == 1 or step % args.print_every == 0 or step == args.steps):
            print(f"step {step:6d}  loss {loss:.6f}")

    if args.no_compare:
        params = init_xor(args.seed)
        if not quiet:
            print(f"{_HEADER}; NumPy initial weights (seed {args.seed})")
        history = train_xor(params, args.steps, log=log)
        if quiet:
            print(json.dumps({"steps": args.steps, "final_loss": history.losses[-1]}, indent=2))
        else:
            _print_outputs(params)
        return 0
    if not quiet:
        print(f"{_HEADER}; Ember's initial weights for {RECIPE} (train.seed {args.seed})")
    tolerance = args.tolerance or TOLERANCE[args.precision]
    result, params = compare_xor(args.steps, args.seed, args.precision, tolerance, args.run_dir, log)
    if quiet:
        print(json.dumps({**asdict(result), "agree": result.agree}, indent=2))
        return 0 if result.agree else 1
    _print_outputs(params)
    verdict = "agree" if result.agree else "DISAGREE"
    print(f"\nember train {RECIPE} ({args.precision}), same initial weights, {result.steps} steps:\n"
          f"  weights compared after {result.compared_steps} steps: max |Δw| {result.max_weight_diff:.2e} "
          f"(after the last step {result.final_weight_diff:.2e})\n"
          f"  per-step loss: max |ΔL| {result.max_loss_diff:.2e}\n"
          f"  {verdict} within {result.tolerance:g}")
    return 0 if result.agree else 1


_HEADER = "2-4-1 tanh network on XOR: mean squared error, full batch, SGD lr 0.5 momentum 0.9"


def _print_outputs(params: dict[str, np.ndarray]) -> None:
    out, _ = xor_forward(params, XOR_X)
    print(" a  b  target  output")
    for (a, b), (t,), (o,) in zip(XOR_X, XOR_Y, out, strict=True):
        print(f" {a:.0f}  {b:.0f}  {t:6.0f}  {o:.4f}")


def _scratch() -> str | None:
    """A memory filesystem for the throwaway run where there is one.

    XOR has one step per epoch and the loop checkpoints every epoch; on a disk, the fsyncs
    of a thousand checkpoints take longer than the training.
    """
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


@contextlib.contextmanager
def _default_dtype(precision: str) -> Iterator[None]:
    """torch's default dtype for data and weights built inside, restored afterwards."""
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if precision == "fp64" else torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _check_recipe(cfg: Any) -> None:
    """The textbook network is what `xor-mlp` trains; refuse a recipe that has drifted from it."""
    m, o, t, s = cfg.model, cfg.optim, cfg.train, cfg.schedule
    same = (m.name == "mlp" and list(m.hidden) == [4] and m.activation == "tanh" and not m.batch_norm
            and m.dropout == 0 and o.name == "sgd" and o.lr == 0.5 and o.momentum == 0.9 and not o.nesterov
            and o.weight_decay == 0 and s.name == "constant" and s.warmup_steps == 0 and t.grad_clip is None
            and t.grad_accum == 1 and cfg.data.batch_size >= 4)
    if not same:
        raise ConfigError(f"recipe {RECIPE} no longer trains the textbook's network (2-4-1 tanh, MSE, full "
                          "batch, SGD lr 0.5 momentum 0.9, constant lr); update ember.textbook.xor to match")


def compare_xor(steps: int, seed: int = 0, precision: str = "fp64", tolerance: float = 1e-6,
                run_dir: Path | None = None,
                log: Callable[[int, float], None] | None = None) -> tuple[XorComparison, dict[str, np.ndarray]]:
    """Train XOR with the NumPy references and with `ember train xor-mlp` from the same start.

    Args:
        steps: optimizer steps (one per epoch: the batch is the whole truth table).
        seed: `train.seed`, which fixes Ember's initial weights.
        precision: "fp64" or "fp32", the default dtype of Ember's run.
        run_dir: keep Ember's run there (default: a temporary directory, removed).
        log: `log(step, loss)` for the NumPy side's progress.
    Returns:
        The comparison and the NumPy side's final weights.
    """
    import torch

    from ember import api, models
    from ember.config import load
    from ember.data import build
    from ember.weights import load_tensors

    overrides = [f"train.epochs={steps}", f"train.seed={seed}", "train.log_every=1", "train.checkpoint_every=1",
                 f"train.keep_checkpoints={steps}", f"train.eval_every={steps}", "log.report=false"]
    with _default_dtype(precision):
        cfg = load(RECIPE, overrides)
        _check_recipe(cfg)
        torch.manual_seed(cfg.train.seed)  # what api.train does before it builds the model
        start = models.build(cfg.model, build(cfg.data, cfg.train.seed).info).state_dict()
        params = {k: start[EMBER_NAMES[k]].double().numpy().copy() for k in PARAM_NAMES}
        history = train_xor(params, steps, lr=cfg.optim.lr, momentum=cfg.optim.momentum, snapshot_every=1, log=log)
        with contextlib.ExitStack() as stack:
            if run_dir is None:
                run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=_scratch()))) / "run"
            run = api.train(RECIPE, overrides, run_dir=run_dir, quiet=True, verbose=False)
            result = _measure(history, params, run, steps, load_tensors)
    return XorComparison(steps=steps, precision=precision, tolerance=tolerance, **result), params


def _measure(history: XorHistory, params: dict[str, np.ndarray], run: Any, steps: int,
             load_tensors: Any) -> dict[str, Any]:
    """Weight and loss differences between the NumPy history and Ember's run folder."""

    def diff(ours: dict[str, np.ndarray], path: Path) -> float:
        theirs = load_tensors(path)
        return max(float(np.abs(ours[k] - theirs[EMBER_NAMES[k]].double().numpy()).max()) for k in PARAM_NAMES)

    per_step = []
    for folder in sorted(run.checkpoints.glob("step-*")):
        step = int(folder.name[5:])
        if step in history.snapshots:
            per_step.append(diff(history.snapshots[step], folder / "model.safetensors"))
    final = diff(params, run.weights)
    ember_losses = {r["step"]: r["loss"] for r in run.read_metrics() if r.get("split") == "train"}
    loss_diffs = [abs(history.losses[s - 1] - loss) for s, loss in ember_losses.items() if 1 <= s <= steps]
    if not loss_diffs:
        loss_diffs = [math.inf]  # nothing logged: the comparison cannot pass on the loss either
    return {"compared_steps": len(per_step), "max_weight_diff": max([final, *per_step]),
            "final_weight_diff": final, "max_loss_diff": max(loss_diffs), "final_loss": history.losses[-1]}
