"""DP-SGD pieces in isolation: layer fixes, per-sample gradients, Poisson draws, the step's traps."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from ember.config import load
from ember.data.bundle import DataInfo
from ember.errors import CheckpointError, ConfigError
from ember.models import build
from ember.privacy.accounting import budget_plan
from ember.privacy.config import PrivacyConfig
from ember.privacy.engine import noise_seed, poisson_indices
from ember.privacy.model import fix_model
from ember.runs import Run
from ember.tasks import LanguageModeling

pytest.importorskip("opacus")


def test_config_needs_exactly_one_of_target_and_noise() -> None:
    with pytest.raises(ConfigError, match="exactly one of target_epsilon and noise_multiplier"):
        load("digits-cnn", ["train.privacy={target_epsilon: 8, noise_multiplier: 1.0}"])
    with pytest.raises(ConfigError, match="exactly one"):
        load("digits-cnn", ["train.privacy={max_grad_norm: 1.0}"])
    with pytest.raises(ConfigError, match="accountant"):
        load("digits-cnn", ["train.privacy={target_epsilon: 8, accountant: gdp2}"])


def test_fix_replaces_batchnorm_and_turns_off_inplace_relu() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3))
    fixed, changes = fix_model(model)
    assert isinstance(fixed[1], nn.GroupNorm) and fixed[2].inplace is False
    assert "1: BatchNorm2d -> GroupNorm" in changes and "2: ReLU(inplace=True) -> ReLU(inplace=False)" in changes
    assert isinstance(model[1], nn.BatchNorm2d)  # the original is untouched
    # Opacus #828: per-sample gradients run through the (no longer in-place) ReLU.
    from opacus import GradSampleModule

    gsm = GradSampleModule(fixed, loss_reduction="sum")
    with warnings.catch_warnings():  # as in the engine: the input never needs a gradient
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        gsm(torch.randn(3, 1, 8, 8)).sum().backward()
    assert fixed[0].weight.grad_sample.shape == (3, 4, 1, 3, 3)


def _per_sample_equals_individual(model: nn.Module, x: torch.Tensor, loss_of) -> None:
    from opacus import GradSampleModule

    gsm = GradSampleModule(model, loss_reduction="sum")
    with warnings.catch_warnings():  # as in the engine: the input never needs a gradient
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loss_of(gsm(x), slice(None)).backward()
    per_sample = {n: p.grad_sample.clone() for n, p in model.named_parameters() if p.requires_grad}
    gsm._close()
    for i in range(len(x)):
        model.zero_grad()
        loss_of(model(x[i : i + 1]), slice(i, i + 1)).backward()
        for n, p in model.named_parameters():
            torch.testing.assert_close(per_sample[n][i], p.grad, atol=1e-5, rtol=1e-4, msg=n)


def test_gpt_per_sample_gradients_are_each_samples_own() -> None:
    """Positions carry a batch dimension, so the position embedding's per-sample gradients are right."""
    cfg = load("stdlib-char-gpt", ["model.n_layer=1", "model.n_embd=16", "model.n_head=2"])
    info = DataInfo(task="lm", input_kind="tokens", input_shape=(8,), num_outputs=20, extra={"vocab_size": 20})
    torch.manual_seed(0)
    model, _ = fix_model(build(cfg.model, info))
    task = LanguageModeling(info)
    x = torch.randint(0, 20, (3, 8))
    y = torch.randint(0, 20, (3, 8))
    _per_sample_equals_individual(model, x, lambda out, s: task.loss_sum(out, y[s]))


def test_poisson_draws_are_a_function_of_seed_epoch_step() -> None:
    a = poisson_indices(0, 1, 5, 1000, 0.1)
    assert torch.equal(a, poisson_indices(0, 1, 5, 1000, 0.1))
    assert not torch.equal(a, poisson_indices(0, 1, 6, 1000, 0.1))
    assert not torch.equal(a, poisson_indices(0, 2, 5, 1000, 0.1))
    sizes = [len(poisson_indices(3, 0, s, 1000, 0.1)) for s in range(50)]
    assert 80 < sum(sizes) / 50 < 120 and len(set(sizes)) > 5  # random sizes around q * N
    assert noise_seed(0, 1) != noise_seed(0, 2) and noise_seed(0, 1) == noise_seed(0, 1)


def test_budget_plan_meets_the_target() -> None:
    pc = PrivacyConfig(target_epsilon=4.0)
    plan = budget_plan(pc, 64, 2, 1000, 200)
    assert plan["sample_rate"] == pytest.approx(0.128) and plan["delta"] == pytest.approx(1e-3)
    assert plan["noise_multiplier"] > 0.5 and 3.9 <= plan["epsilon"] <= 4.0
    more_noise = budget_plan(PrivacyConfig(noise_multiplier=plan["noise_multiplier"] * 2), 64, 2, 1000, 200)
    assert more_noise["epsilon"] < plan["epsilon"]
    with pytest.raises(ConfigError, match="cannot be reached"):
        # The config refuses a target under 0.01; the accountant's own guard is tested past it.
        budget_plan(PrivacyConfig.model_construct(target_epsilon=1e-7), 64, 2, 1000, 100_000)
    with pytest.raises(ValueError, match="greater than or equal to 0.01"):
        PrivacyConfig(target_epsilon=1e-7)


def _loop(tmp_path: Path, overrides: list[str], model: nn.Module | None = None, world_size: int = 1, loss_fn=None):
    """A private loop set up as `fit` sets it up (no training yet)."""
    from ember import data as data_mod
    from ember.privacy.model import private_model
    from ember.tasks import for_info
    from ember.training.distributed import DistEnv
    from ember.training.loop import LoopState, _setup

    cfg = load("iris-mlp", ["data.batch_size=8", *overrides])
    bundle = data_mod.build(cfg.data, 0)
    torch.manual_seed(0)
    model = model or private_model(build(cfg.model, bundle.info), cfg)
    (tmp_path / "run").mkdir(exist_ok=True)
    loop = _setup(model, bundle, for_info(bundle.info), cfg, Run(tmp_path / "run"), torch.device("cpu"), None,
                  loss_fn, DistEnv(world_size=world_size), "fsdp" if world_size > 1 else "single", ())
    return loop, LoopState()


def test_step_in_eval_mode_and_on_an_empty_batch(tmp_path: Path) -> None:
    """A model left in eval mode still gets per-sample gradients; an empty Poisson batch is noise alone."""
    loop, state = _loop(tmp_path, ["train.privacy={noise_multiplier: 1.0}"])
    model = loop.model
    before = [p.detach().clone() for p in model.parameters()]
    model.eval()
    loop.privacy.step(loop, state, loop.plan.order(0))
    assert model.training and state.step == 1
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    # Force an empty draw: a sampling rate of zero.
    loop.privacy.q = 0.0
    before = [p.detach().clone() for p in model.parameters()]
    loop.privacy.step(loop, state, loop.plan.order(0))
    assert loop.loss is None and state.step == 2
    assert all(torch.isfinite(p).all() and not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert len(loop.privacy.accountant.history) >= 1


def test_checkpoint_privacy_state_is_checked(tmp_path: Path) -> None:
    loop, state = _loop(tmp_path, ["train.privacy={noise_multiplier: 1.0}"])
    loop.privacy.step(loop, state, loop.plan.order(0))
    saved = loop.privacy.state_dict()
    json.dumps(saved)  # JSON, not pickle
    other, _ = _loop(tmp_path, ["train.privacy={noise_multiplier: 1.0}"])
    other.privacy.load_state_dict(saved)
    assert other.privacy.spent() == loop.privacy.spent() > 0
    with pytest.raises(CheckpointError, match="no privacy state"):
        other.privacy.load_state_dict(None)
    with pytest.raises(CheckpointError, match="noise multiplier"):
        other.privacy.load_state_dict({**saved, "noise_multiplier": 2.0})


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.grad_clip=1.0"], "train.grad_clip: not available with train.privacy"),
    (["train.precision=bf16"], "train.precision: not available with train.privacy"),
])
def test_settings_that_cannot_be_private_are_refused(tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _loop(tmp_path, ["train.privacy={target_epsilon: 8}", *overrides])


def test_multi_process_and_custom_loss_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="one process"):
        _loop(tmp_path, ["train.privacy={target_epsilon: 8}"], world_size=2)
    with pytest.raises(ConfigError, match="custom loss"):
        _loop(tmp_path, ["train.privacy={target_epsilon: 8}"], loss_fn=lambda out, x, y, n: out.sum())


class _MixesSamples(nn.Module):
    """Subtracts the batch mean: each output depends on the other samples."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x)
        return out - out.mean(0, keepdim=True)


def test_a_model_that_mixes_samples_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mixes samples"):
        _loop(tmp_path, ["train.privacy={target_epsilon: 8}"], model=_MixesSamples())


def test_plan_shows_the_noise_the_target_implies() -> None:
    from ember.plan import plan

    result = plan("digits-cnn-dp")
    pv = result["privacy"]
    assert pv["target_epsilon"] == 8 and pv["noise_multiplier"] > 0 and 7.9 <= pv["epsilon"] <= 8.0
    assert pv["sample_rate"] == pytest.approx(256 / result["data"]["train_size"])
    assert "privacy" not in plan("digits-cnn")
