"""DP-SGD inside Ember's loop: Opacus's per-sample gradients, clipping, noise and accounting.

`fit` hands each optimizer step to `PrivateTraining.step` when `train.privacy` is set. The
pieces come from Opacus (`GradSampleModule` for per-sample gradients, `DPOptimizer` for
clipping and noise, its RDP/PRV accountants); what is Ember's own is how they meet the loop:

- **Poisson sampling from (seed, epoch, step).** Each training sample joins a step's batch
  with probability q = batch_size x grad_accum / N, drawn by the counter-based generator in
  `ember.data.randomness`, so a resumed run draws exactly the batches the uninterrupted one
  did. A step whose draw is empty still adds noise (and is accounted): skipping it would
  reveal that the batch was empty.
- **Virtual steps.** A drawn batch is cut into micro-batches of `data.batch_size`; each is
  clipped per sample and summed into `summed_grad`, and noise is added once per logical
  step, which is the step the accountant counts (Opacus's virtual-step scheme).
- **Noise from (seed, step).** The noise generator is re-seeded at every step, so its state
  is the step number; the checkpoint stores the accountant's history and the noise
  multiplier, and a resumed run ends with the same weights and the same ε.
- **The loss is a sum of per-sample losses** (`task.loss_sum`) and the noisy sum is divided
  by the expected batch size, as DP-SGD prescribes; the logged loss is still the per-item mean.

Traps handled: in-place activations (Opacus #828: module backward hooks fail on a view
modified in place) are turned off; a model left in eval mode would record no activations,
so each step puts it in train mode; a model or loss that mixes samples is refused.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ember.data.randomness import epoch_seed, uniform
from ember.errors import CheckpointError, ConfigError
from ember.privacy.accounting import (
    epsilon,
    make_accountant,
    noise_multiplier,
    resolve_delta,
    sample_rate,
)
from ember.privacy.config import PrivacyConfig
from ember.privacy.report import write_budget
from ember.runs import Run
from ember.training.loop_state import LoopContext, LoopState
from ember.training.schedule import lr_at

__all__ = ["PrivateTraining", "poisson_indices", "noise_seed"]

_POISSON_SALT = 0xD9_5A3B  # keeps the Poisson draws apart from augmentation's draws
_NOISE_SALT = 0x4E01_5E  # and the noise seeds apart from the shuffles


def poisson_indices(seed: int, epoch: int, step: int, n: int, q: float) -> torch.Tensor:
    """The samples of step `step` of `epoch`: each of the n joins with probability q, independently."""
    draws = uniform(seed, epoch, torch.arange(n), _POISSON_SALT + step)
    return torch.nonzero(draws < q).flatten()


def noise_seed(seed: int, step: int) -> int:
    """The noise generator's seed for global optimizer step `step`."""
    return epoch_seed(seed ^ _NOISE_SALT, step)


@dataclass
class PrivateTraining:
    """The loop's DP-SGD hook: set up by `attach`, then `step`, `state_dict`, `figures`, `close`."""

    pc: PrivacyConfig
    gsm: Any  # opacus GradSampleModule around the loop's model
    dp: Any  # opacus DPOptimizer around the loop's optimizer
    accountant: Any
    generator: torch.Generator
    sigma: float
    q: float
    delta: float
    expected_batch: int
    n_train: int
    seed: int

    @classmethod
    def attach(cls, loop: LoopContext) -> PrivateTraining:
        """Check the run can be private and wrap the loop's model and optimizer.

        Raises:
            ConfigError: multi-process training, a custom loss, AMP, compile, grad_clip, or a
                model/loss that mixes samples.
        """
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        cfg, tc = loop.cfg, loop.cfg.train
        pc = tc.privacy
        assert pc is not None
        if loop.env.world_size > 1:
            raise ConfigError(f"train.privacy: {loop.env.world_size} processes ({tc.strategy}); DP-SGD here runs "
                              "in one process (FSDP shards the per-sample gradients Opacus must clip whole, and "
                              "DDP would need Opacus's distributed optimizer); train with one process")
        if loop.loss_fn is not None:
            raise ConfigError("train.privacy: a custom loss (distillation's, ...) is not known to be a sum of "
                              "per-sample losses, which DP-SGD needs; train the task's own loss")
        for key, bad, why in (("grad_clip", tc.grad_clip is not None, "DP-SGD clips each sample's gradient "
                                                                      "(train.privacy.max_grad_norm)"),
                              ("precision", tc.precision != "fp32", "per-sample gradients are computed in fp32"),
                              ("compile", tc.compile, "Opacus's hooks need the eager model")):
            if bad:
                raise ConfigError(f"train.{key}: not available with train.privacy ({why}); remove it")
        model = loop.model
        _check_per_sample(model, loop)
        n = len(loop.data.train)
        q = sample_rate(cfg.data.batch_size, tc.grad_accum, n)
        delta = resolve_delta(pc, n)
        sigma = noise_multiplier(pc, q, loop.total_steps, delta)
        try:
            gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum", strict=True)
        except NotImplementedError as exc:
            raise ConfigError(f"train.privacy: Opacus cannot compute per-sample gradients for this model "
                              f"({str(exc)[:200]})") from None
        generator = torch.Generator(device=loop.device.type)
        expected = cfg.data.batch_size * tc.grad_accum
        dp = DPOptimizer(loop.optimizer, noise_multiplier=sigma, max_grad_norm=pc.max_grad_norm,
                         expected_batch_size=expected, loss_reduction="sum", generator=generator)
        self = cls(pc=pc, gsm=gsm, dp=dp, accountant=make_accountant(pc.accountant), generator=generator,
                   sigma=sigma, q=q, delta=delta, expected_batch=expected, n_train=n, seed=tc.seed)
        loop.forward = gsm
        target = f"target ε {pc.target_epsilon:g}" if pc.target_epsilon is not None else "fixed noise"
        planned = self.planned_epsilon(loop.total_steps)
        loop.reporter.message(
            f"DP-SGD: {target}, δ {delta:.3g} -> noise multiplier {sigma:.4g}, clip {pc.max_grad_norm:g}, "
            f"sampling rate {q:.4g} ({'Poisson' if pc.poisson else 'shuffled batches'}), {loop.total_steps} steps, "
            f"ε {planned:.3g} at the end ({pc.accountant})")
        return self

    def planned_epsilon(self, steps: int) -> float:
        if self.sigma == 0:
            return math.inf
        return epsilon(make_accountant(self.pc.accountant, [(self.sigma, self.q, steps)]), self.delta)

    def spent(self) -> float:
        """ε spent so far (at δ)."""
        if self.sigma == 0 and self.accountant.history:
            return math.inf
        return epsilon(self.accountant, self.delta)

    def figures(self) -> dict[str, float]:
        """What metrics.jsonl gets at each evaluation."""
        return {"epsilon": self.spent(), "delta": self.delta}

    def step_indices(self, loop: LoopContext, state: LoopState, order: torch.Tensor) -> torch.Tensor:
        if self.pc.poisson:
            return poisson_indices(self.seed, state.epoch, state.pos, self.n_train, self.q)
        return loop.plan.global_indices(order, state.pos)

    def step(self, loop: LoopContext, state: LoopState, order: torch.Tensor) -> None:
        """One private optimizer step (replaces the loop's `_train_step`)."""
        from ember.errors import NonFiniteLossError

        tc, task, original = loop.cfg.train, loop.task, self.dp.original_optimizer
        loop.lr = lr_at(state.step, loop.total_steps, loop.cfg.optim.lr, loop.cfg.schedule)
        for group in original.param_groups:
            group["lr"] = loop.lr
        self.gsm.train()  # a model left in eval mode records no activations, hence no per-sample grads
        indices = self.step_indices(loop, state, order)
        params = self.dp.params
        loss_sum = torch.zeros(())
        items = 0
        for chunk in indices.split(loop.cfg.data.batch_size):
            x, y = loop.data.train.batch(chunk, state.epoch, train=True)
            if loop.device.type != "cpu":
                x, y = x.to(loop.device, non_blocking=True), y.to(loop.device, non_blocking=True)
            loss = task.loss_sum(self.gsm(x), y)
            with warnings.catch_warnings():
                # Opacus's hooks on the first layer fire without input gradients: expected.
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                loss.backward()
            self.dp.clip_and_accumulate()  # per-sample clip, summed into p.summed_grad
            for p in params:
                p.grad_sample = None
                p.grad = None
            loss_sum = loss_sum + loss.detach().cpu()
            items += task.count(y)
        for p in params:
            if p.summed_grad is None:  # an empty Poisson draw: the step is noise alone
                p.summed_grad = torch.zeros_like(p)
        loop.loss = loss_sum.item() / items if items else None
        finite = loop.loss is None or math.isfinite(loop.loss)
        if not finite and tc.nonfinite == "stop":
            raise NonFiniteLossError(f"non-finite loss ({loop.loss}) at step {state.step + 1} (epoch "
                                     f"{state.epoch + 1}); lower optim.lr or set train.nonfinite=skip")
        if finite:
            self.generator.manual_seed(noise_seed(self.seed, state.step))
            self.dp.add_noise()
            for p in params:
                p.grad /= self.expected_batch
            original.step()
            if loop.loss is not None:
                loop.loss_acc += loop.loss
                loop.steps_acc += 1
        else:
            state.skipped_steps += 1
            loop.reporter.message(f"skipped step {state.step + 1}: non-finite loss")
        for p in params:
            p.summed_grad = None
            p.grad_sample = None
        original.zero_grad(set_to_none=True)
        # Counted even when skipped: the batch was looked at, and deciding to skip depends on it.
        self.accountant.step(noise_multiplier=self.sigma, sample_rate=self.q)
        state.step += 1
        state.pos += 1
        state.samples += len(indices)
        loop.samples_acc += len(indices)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able: what resume needs beyond the loop's own state."""
        return {"history": [list(h) for h in self.accountant.history], "noise_multiplier": self.sigma,
                "sample_rate": self.q, "delta": self.delta, "accountant": self.pc.accountant}

    def load_state_dict(self, saved: dict[str, Any] | None) -> None:
        """Restore the accountant's history; the noise multiplier must be the saved one."""
        if not saved:
            raise CheckpointError("this checkpoint holds no privacy state (written by a non-private run); "
                                  "it cannot continue as a private run")
        if not math.isclose(float(saved["noise_multiplier"]), self.sigma, rel_tol=1e-9) or \
                not math.isclose(float(saved["sample_rate"]), self.q, rel_tol=1e-12):
            raise CheckpointError(f"checkpoint's noise multiplier {saved['noise_multiplier']} / sampling rate "
                                  f"{saved['sample_rate']} differ from this run's {self.sigma} / {self.q}")
        self.accountant = make_accountant(self.pc.accountant, saved["history"])

    def summary(self) -> dict[str, Any]:
        """The budget as summary.json and the report show it."""
        return {"epsilon": self.spent(), "delta": self.delta, "noise_multiplier": self.sigma,
                "sample_rate": self.q, "max_grad_norm": self.pc.max_grad_norm,
                "target_epsilon": self.pc.target_epsilon, "accountant": self.pc.accountant,
                "poisson": self.pc.poisson, "steps": sum(int(h[2]) for h in self.accountant.history),
                "expected_batch": self.expected_batch, "n_train": self.n_train, "fixed": list(self.pc.fixed)}

    def finish(self, run: Run, is_main: bool) -> None:
        """Write `privacy/budget.json` and its report section; remove Opacus's hooks."""
        if is_main:
            write_budget(run, self.summary())
        self.close()

    def close(self) -> None:
        """Remove Opacus's hooks: the model the run hands back is a plain module again."""
        self.gsm._close()


def _check_per_sample(model: nn.Module, loop: LoopContext) -> None:
    """Refuse a model or loss that mixes samples: the loss of two samples must be the sum of each's."""
    train = loop.data.train
    if len(train) < 2:
        return
    x, y = train.batch(torch.arange(2))
    x, y = x.to(loop.device), y.to(loop.device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        both = float(loop.task.loss_sum(model(x), y))
        each = sum(float(loop.task.loss_sum(model(x[i : i + 1]), y[i : i + 1])) for i in range(2))
    model.train(was_training)
    if not math.isclose(both, each, rel_tol=1e-4, abs_tol=1e-5):
        raise ConfigError(f"train.privacy: the loss of two samples ({both:.6g}) is not the sum of their own "
                          f"losses ({each:.6g}): the model or loss mixes samples, so no per-sample gradient "
                          "exists to clip; DP-SGD cannot bound one sample's influence")
