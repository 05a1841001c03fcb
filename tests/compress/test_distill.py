"""Knowledge distillation: the loss against hand-written references, student checks, and
tiny teachers distilled into smaller students (digits classifier and character GPT)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import Tensor, nn

import ember
from ember import data as data_mod
from ember import models
from ember.compress.distill import (
    DistillConfig,
    check_student,
    distill,
    distill_loss,
    student_model_config,
)
from ember.config import ExperimentConfig, load, to_yaml
from ember.data.bundle import DataInfo
from ember.errors import ConfigError
from ember.loading import LoadedRun, load_run
from ember.runs import new_run_dir
from ember.tasks import IGNORE_INDEX, for_info
from ember.training.evaluation import evaluate_split
from ember.weights import save_weights

CPU = torch.device("cpu")
# Full digits (1,257 training images) for 10 epochs: a teacher worth copying in ~1.5 s.
DIGITS = ["train.epochs=10", "model.channels=[8,16]", "model.hidden=[32]", "train.threads=1", "log.report=false"]
GPT = ["data.max_chars=120000", "data.block_size=32", "model.n_layer=1", "model.n_embd=32", "train.threads=1",
       "log.report=false"]
MLP_STUDENT = {"name": "mlp", "hidden": [16]}  # 1,210 parameters vs the CNN teacher's 3,682
GPT_STUDENT = {"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16, "vocab_multiple": 8}


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory: pytest.TempPathFactory) -> LoadedRun:
    root = tmp_path_factory.mktemp("digits")
    run = ember.train("digits-cnn", [*DIGITS, f"log.runs_dir={root}"], quiet=True, verbose=False)
    return load_run(run.path)


@pytest.fixture(scope="module")
def gpt_teacher(tmp_path_factory: pytest.TempPathFactory) -> LoadedRun:
    root = tmp_path_factory.mktemp("gpt")
    run = ember.train("stdlib-char-gpt", [*GPT, "train.max_steps=60", "schedule.warmup_steps=10",
                                          f"log.runs_dir={root}"], quiet=True, verbose=False)
    return load_run(run.path)


class _Explodes(nn.Module):
    """A teacher that must never be asked (alpha = 0)."""

    def forward(self, x: Tensor) -> Tensor:
        raise AssertionError("the teacher was consulted")


def _classifier_info(classes: int = 5) -> DataInfo:
    return DataInfo(task="classification", input_kind="tabular", input_shape=(6,), num_outputs=classes)


def _lm_info(vocab: int = 11, block: int = 7) -> DataInfo:
    return DataInfo(task="lm", input_kind="tokens", input_shape=(block,), num_outputs=vocab,
                    extra={"vocab_size": vocab})


# ----------------------------------------------------------------------------- config


def test_config_defaults_and_validation() -> None:
    cfg = DistillConfig()
    assert (cfg.temperature, cfg.alpha) == (4.0, 0.5)
    for bad in ({"temperature": 0}, {"alpha": 1.5}, {"alpha": -0.1}, {"temprature": 2}):
        with pytest.raises(ValidationError):
            DistillConfig(**bad)
    with pytest.raises(ValidationError):
        cfg.alpha = 0.2  # frozen


# ----------------------------------------------------------------------------- loss vs references


@pytest.mark.parametrize("alpha,temperature", [(0.5, 4.0), (1.0, 2.0), (0.3, 1.0)])
def test_classifier_loss_matches_reference(alpha: float, temperature: float) -> None:
    torch.manual_seed(0)
    info = _classifier_info()
    task = for_info(info)
    teacher = nn.Linear(6, 5)
    x, y = torch.randn(8, 6), torch.randint(0, 5, (8,))
    out = torch.randn(8, 5, requires_grad=True)
    loss_fn = distill_loss(task, teacher, DistillConfig(temperature=temperature, alpha=alpha))

    soft_target = F.softmax(teacher(x).detach() / temperature, dim=-1)
    kl = F.kl_div(F.log_softmax(out / temperature, dim=-1), soft_target, reduction="batchmean")
    expected = alpha * temperature**2 * kl + (1 - alpha) * F.cross_entropy(out, y)
    got = loss_fn(out, x, y, 8)
    torch.testing.assert_close(got, expected)

    # The step's count divides: two half batches add up to the whole (gradient accumulation).
    halves = loss_fn(out[:4], x[:4], y[:4], 8) + loss_fn(out[4:], x[4:], y[4:], 8)
    torch.testing.assert_close(halves, expected)

    got.backward()
    assert out.grad is not None and all(p.grad is None for p in teacher.parameters())


def test_lm_loss_is_tokenwise_on_real_vocab_and_scored_positions() -> None:
    torch.manual_seed(0)
    vocab, b, t = 11, 3, 7
    info = _lm_info(vocab, t)
    task = for_info(info)
    teacher = nn.Embedding(vocab, 16)  # (B, T) ids -> (B, T, 16): vocab padded to 16
    x = torch.randint(0, vocab, (b, t))
    y = torch.randint(0, vocab, (b, t))
    y[0, :3] = IGNORE_INDEX  # unscored positions
    y[2, -1] = IGNORE_INDEX
    out = torch.randn(b, t, 24, requires_grad=True)  # the student pads to 24
    with torch.no_grad():
        out[..., vocab:] = 30.0  # padding columns that must not enter the soft term
    count = task.count(y)
    temperature, alpha = 2.0, 0.7
    got = distill_loss(task, teacher, DistillConfig(temperature=temperature, alpha=alpha))(out, x, y, count)

    soft = torch.zeros(())
    for i in range(b):
        for j in range(t):
            if y[i, j] == IGNORE_INDEX:
                continue
            p = F.softmax(teacher.weight[x[i, j], :vocab].detach() / temperature, dim=-1)
            soft = soft + F.kl_div(F.log_softmax(out[i, j, :vocab] / temperature, dim=-1), p, reduction="sum")
    hard = F.cross_entropy(out.reshape(-1, 24), y.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    expected = (alpha * temperature**2 * soft + (1 - alpha) * hard) / count
    torch.testing.assert_close(got, expected)
    got.backward()
    assert out.grad[0, :3].abs().sum() == 0  # ignored positions get no gradient from either term


@pytest.mark.parametrize("info", [_classifier_info(), _lm_info()], ids=["classifier", "lm"])
def test_alpha_zero_is_exactly_the_task_loss(info: DataInfo) -> None:
    torch.manual_seed(0)
    task = for_info(info)
    if info.task == "lm":
        x, y, out = torch.randint(0, 11, (2, 7)), torch.randint(0, 11, (2, 7)), torch.randn(2, 7, 16)
    else:
        x, y, out = torch.randn(4, 6), torch.randint(0, 5, (4,)), torch.randn(4, 5)
    count = task.count(y)
    loss_fn = distill_loss(task, _Explodes(), DistillConfig(alpha=0.0))
    assert torch.equal(loss_fn(out, x, y, count), task.loss(out, y, count))


def test_regression_soft_term_is_mse_to_the_teacher() -> None:
    torch.manual_seed(0)
    info = DataInfo(task="regression", input_kind="tabular", input_shape=(3,), num_outputs=2)
    task = for_info(info)
    teacher = nn.Linear(3, 2)
    x, y, out = torch.randn(5, 3), torch.randn(5, 2), torch.randn(5, 2)
    got = distill_loss(task, teacher, DistillConfig(alpha=0.25, temperature=9.0))(out, x, y, 5)
    expected = 0.25 * F.mse_loss(out, teacher(x).detach()) + 0.75 * F.mse_loss(out, y)
    torch.testing.assert_close(got, expected)


def test_teacher_runs_in_eval_mode() -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(6, 5), nn.Dropout(0.9))
    teacher.train()
    loss_fn = distill_loss(for_info(_classifier_info()), teacher, DistillConfig(alpha=1.0))
    x, y, out = torch.randn(4, 6), torch.randint(0, 5, (4,)), torch.randn(4, 5)
    assert not teacher.training
    teacher.train()  # switched back by someone else: the loss turns dropout off again
    assert torch.equal(loss_fn(out, x, y, 4), loss_fn(out, x, y, 4))


# ----------------------------------------------------------------------------- student checks


def _info(cfg: ExperimentConfig) -> DataInfo:
    return data_mod.build(cfg.data, cfg.train.seed).info


def test_check_student_rejects_wrong_families(gpt_teacher: LoadedRun) -> None:
    iris = load("iris-mlp")
    with pytest.raises(ConfigError, match=r"model.name: 'cnn' needs image inputs"):
        check_student({"name": "cnn"}, iris, _info(iris))

    digits = load("digits-cnn", DIGITS)
    digits_info = _info(digits)
    with pytest.raises(ConfigError, match=r"model.name: 'gpt' is a language model"):
        check_student({"name": "gpt"}, digits, digits_info)
    with pytest.raises(ConfigError, match=r"model.hiden: unknown key.*did you mean 'hidden'"):
        check_student({"name": "mlp", "hiden": [8]}, digits, digits_info)
    with pytest.raises(ConfigError, match=r"model.name: unknown model 'mpl'"):
        check_student({"name": "mpl"}, digits, digits_info)

    lm, lm_info = gpt_teacher.config, gpt_teacher.info
    with pytest.raises(ConfigError, match=r"'transformer' is an encoder classifier"):
        check_student({"name": "transformer"}, lm, lm_info)
    # An MLP builds on token windows but is no LM: caught by running it, valid families named.
    with pytest.raises(ConfigError, match=r"'mlp' student cannot run .* valid: gpt, llama, rnn"):
        check_student({"name": "mlp"}, lm, lm_info)


def test_check_student_accepts_fitting_students(gpt_teacher: LoadedRun, tmp_path: Path) -> None:
    digits = load("digits-cnn", DIGITS)
    check_student(MLP_STUDENT, digits, _info(digits))
    check_student({"model": {"name": "cnn", "channels": [4, 8], "hidden": [16]}}, digits, _info(digits))
    (tmp_path / "student.yaml").write_text("model: {name: mlp, hidden: [16]}\n")
    check_student(tmp_path / "student.yaml", digits, _info(digits))
    with pytest.raises(ConfigError, match="does not exist"):
        check_student(tmp_path / "missing.yaml", digits, _info(digits))
    check_student(GPT_STUDENT, gpt_teacher.config, gpt_teacher.info)  # other vocab padding: fine
    check_student({"name": "rnn", "hidden_size": 16}, gpt_teacher.config, gpt_teacher.info)


# ----------------------------------------------------------------------------- end to end


def _accuracy(model: nn.Module, cfg: ExperimentConfig) -> float:
    bundle = data_mod.build(cfg.data, cfg.train.seed)
    return evaluate_split(model, bundle.test, for_info(bundle.info), CPU, 512)["accuracy"]


def test_digits_student_close_to_teacher(digits_teacher: LoadedRun, tmp_path: Path) -> None:
    cfg = digits_teacher.config
    teacher_acc = json.loads(digits_teacher.run.summary.read_text())["test"]["accuracy"]
    teacher_params = models.count_parameters(digits_teacher.model)
    assert teacher_acc > 0.85

    run = new_run_dir(tmp_path, "student", tmp_path / "mlp")
    student, state = distill(digits_teacher, MLP_STUDENT, cfg, run, CPU, DistillConfig(alpha=0.5))
    params = models.count_parameters(student)
    assert 3 * params <= teacher_params + 100 and not student.training
    assert state.epoch == 10
    assert _accuracy(student, cfg) >= teacher_acc - 0.1

    # The child run reloads like any run once the caller writes its config and weights.
    child_cfg = cfg.model_copy(update={"model": student_model_config(MLP_STUDENT, cfg)})
    run.config.write_text(to_yaml(child_cfg))
    save_weights(student, run.weights)
    assert load_run(run.path).model.net[1].in_features == 64

    # Labels switched off (alpha = 1): what the student knows came from the teacher alone.
    run = new_run_dir(tmp_path, "student", tmp_path / "soft-only")
    student, _ = distill(digits_teacher, MLP_STUDENT, cfg, run, CPU, DistillConfig(alpha=1.0, temperature=2.0))
    assert _accuracy(student, cfg) > 0.75


def test_distill_rejects_data_unlike_the_teachers(digits_teacher: LoadedRun, tmp_path: Path) -> None:
    iris = load("iris-mlp")
    with pytest.raises(ConfigError, match=r"data: the distillation data's input_kind"):
        distill(digits_teacher, MLP_STUDENT, iris, new_run_dir(tmp_path, "x"), CPU, DistillConfig())


def test_gpt_student_distils_from_gpt_teacher(gpt_teacher: LoadedRun, tmp_path: Path) -> None:
    cfg = load("stdlib-char-gpt", [*GPT, "train.max_steps=30", "schedule.warmup_steps=5"])
    bundle = data_mod.build(cfg.data, cfg.train.seed)
    task = for_info(bundle.info)
    torch.manual_seed(cfg.train.seed)  # the student's initial weights, as distill() draws them
    untrained = models.build(student_model_config(GPT_STUDENT, cfg), bundle.info)
    before = evaluate_split(untrained, bundle.val, task, CPU, 256)["loss"]

    run = new_run_dir(tmp_path, "gpt-student")
    student, state = distill(gpt_teacher, GPT_STUDENT, cfg, run, CPU, DistillConfig(temperature=2.0))
    assert student.padded_vocab != gpt_teacher.model.padded_vocab  # 104 vs 128 columns
    assert models.count_parameters(student) * 3 < models.count_parameters(gpt_teacher.model)
    assert state.step == 30 and (run.path / "tokenizer.json").is_file()
    after = state.last_val["loss"]
    assert after < before - 0.3, (before, after)
    assert after == evaluate_split(student, bundle.val, task, CPU, cfg.data.eval_batch_size)["loss"]
