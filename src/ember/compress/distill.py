"""Knowledge distillation (Hinton, Vinyals & Dean 2015): a small student learns a finished
run's outputs as well as the labels.

    loss = alpha * T^2 * KL(softmax(z_teacher / T) || softmax(z_student / T))
         + (1 - alpha) * task loss(z_student, y)

summed over the items (samples, or scored tokens for a language model) and divided by the
optimizer step's item count, the convention of `Task.loss`, so gradient accumulation still
equals one larger batch. The T^2 factor keeps the soft term's gradients on the scale of
the hard term's as T changes (its gradients shrink as 1/T^2).

Classifiers distil over their class logits (B, C); language models token by token over
(B, T, V), on the real `vocab_size` columns only (teacher and student may pad their
vocabularies differently) and on scored positions only (targets != IGNORE_INDEX).
Regression and forecast have no logits: there the soft term is the task's own MSE to the
teacher's predictions (Ba & Caruana 2014, "Do deep nets really need to be deep?") and
`temperature` is unused.

The teacher is wrapped from outside and never edited: it runs in eval mode under
`no_grad` inside the loss function that `fit()` calls.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from pydantic import Field, TypeAdapter, ValidationError
from torch import Tensor, nn

from ember import models
from ember.config import ExperimentConfig, from_dict
from ember.data.bundle import DataBundle, DataInfo
from ember.errors import ConfigError
from ember.loading import LoadedRun
from ember.runs import Run
from ember.section import Section
from ember.tasks import IGNORE_INDEX, Task, for_info
from ember.training.device import check_precision
from ember.training.loop import LoopState, fit
from ember.training.progress import Reporter
from ember.training.session import prepare, write_data_files
from ember.yaml_safe import load_yaml, read_utf8

__all__ = ["DistillConfig", "check_student", "distill_loss", "distill", "student_model_config"]

LossFn = Callable[[Tensor, Tensor, Tensor, int], Tensor]
_SOFT_TASKS = ("classification", "lm")  # tasks with class/token logits
_MSE_TASKS = ("regression", "forecast")  # distilled by MSE to the teacher's predictions


class DistillConfig(Section):
    """How the student learns from the teacher."""

    temperature: float = Field(4.0, gt=0, description="softens both distributions; unused for regression")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher term; 1 - alpha on the labels")


def student_model_config(student_cfg: Any, teacher_cfg: ExperimentConfig) -> Any:
    """Validate a student's model section: a `ModelConfig`, its dict, `{"model": {...}}`, or
    the path of a YAML file holding either.

    Validation goes through the whole experiment config (the teacher's, model replaced), so
    errors read exactly like `ember train`'s: `model.hidden: got 'x'; ...`.

    Raises:
        ConfigError: the model section is invalid.
    """
    if isinstance(student_cfg, Section) and getattr(student_cfg, "name", None) in models.MODELS:
        return student_cfg
    if isinstance(student_cfg, str | Path):
        path = Path(student_cfg)
        if not path.is_file():
            raise ConfigError(f"--student: file '{path}' does not exist; give a YAML model section")
        try:
            student_cfg = load_yaml(read_utf8(path, "student config"))  # safe loader: data, never code
        except yaml.YAMLError as exc:
            raise ConfigError(f"--student: '{path}' is not valid YAML ({str(exc).strip().splitlines()[0]})") from None
    if isinstance(student_cfg, dict) and set(student_cfg) == {"model"}:
        student_cfg = student_cfg["model"]
    if not isinstance(student_cfg, dict):
        raise ConfigError(f"student: expected a model section (a mapping with 'name'), got {student_cfg!r}")
    raw = teacher_cfg.model_dump(mode="json")
    raw["model"] = student_cfg
    return from_dict(raw).model


def _sample_input(info: DataInfo, device: torch.device, batch: int = 2) -> Tensor:
    """A dummy batch shaped like the data's inputs, enough to check output shapes."""
    if info.input_kind == "tokens":
        fill = 1 if info.extra.get("pad_id") == 0 else 0  # a real token: all-padding rows can't be packed
        return torch.full((batch, *info.input_shape), fill, dtype=torch.long, device=device)
    return torch.zeros(batch, *info.input_shape, device=device)


def _fits(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...], info: DataInfo) -> bool:
    """Whether a student's output can be compared with the teacher's, item by item."""
    if info.task == "lm":
        # Vocabulary padding may differ: both need at least the real vocab_size columns.
        vocab = int(info.extra.get("vocab_size", info.num_outputs))
        return (len(student_shape) == len(teacher_shape) == 3 and student_shape[:2] == teacher_shape[:2]
                and student_shape[2] >= vocab)
    return student_shape == teacher_shape


def _output_shape(model: nn.Module, info: DataInfo) -> tuple[int, ...]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters(), torch.empty(0)).device
            return tuple(model(_sample_input(info, device)).shape)
    finally:
        model.train(was_training)


def _fitting_families(teacher_shape: tuple[int, ...], info: DataInfo) -> list[str]:
    """Model families whose default config builds and fits this data (for error messages)."""
    adapter: TypeAdapter[Any] = TypeAdapter(models.ModelConfig)
    names = []
    for name in models.MODELS:
        try:
            cfg = adapter.validate_python({"name": name})
            if _fits(_output_shape(models.build(cfg, info), info), teacher_shape, info):
                names.append(name)
        except (ConfigError, ValidationError, RuntimeError, ValueError):
            continue
    return sorted(names)


def _check_shapes(student: nn.Module, student_name: str, teacher: nn.Module, teacher_name: str,
                  info: DataInfo) -> None:
    """Run both models on a sample batch; ConfigError unless their outputs compare item by item."""
    teacher_shape = _output_shape(teacher, info)
    try:
        student_shape = _output_shape(student, info)
    except (RuntimeError, ValueError, TypeError) as exc:
        valid = ", ".join(_fitting_families(teacher_shape, info)) or "none"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"model.name: a '{student_name}' student cannot run on this "
                          f"{info.input_kind}/{info.task} data ({first}); valid: {valid}") from None
    if not _fits(student_shape, teacher_shape, info):
        valid = ", ".join(_fitting_families(teacher_shape, info)) or "none"
        raise ConfigError(f"model.name: a '{student_name}' student gives outputs {list(student_shape)} on this "
                          f"{info.input_kind}/{info.task} data, the '{teacher_name}' teacher "
                          f"{list(teacher_shape)}; valid: {valid}")


def _check_task(info: DataInfo) -> None:
    if info.task not in _SOFT_TASKS + _MSE_TASKS:
        raise ConfigError(f"distill: task '{info.task}' has no outputs to distil; "
                          f"valid: {', '.join(_SOFT_TASKS + _MSE_TASKS)}")


def check_student(student_cfg: Any, teacher_cfg: ExperimentConfig, info: DataInfo) -> None:
    """Check that a student model config fits the teacher's task and data.

    Builds the student (and a freshly initialised teacher, for its output shape) on `info`
    and compares their outputs on a dummy batch.

    Raises:
        ConfigError: one line naming what is wrong and the families that would fit, e.g.
            `model.name: 'cnn' needs image inputs (C, H, W) ...` for a CNN on tabular data.

    Example:
        >>> check_student({"name": "mlp", "hidden": [32]}, cfg, info)  # digits teacher: fine
    """
    _check_task(info)
    student = student_model_config(student_cfg, teacher_cfg)
    built = models.build(student, info)  # the family's own ConfigError for data it can't take
    teacher = models.build(teacher_cfg.model, info)
    _check_shapes(built, student.name, teacher, teacher_cfg.model.name, info)


def _soft_sum(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """sum over rows of T^2 * KL(softmax(teacher/T) || softmax(student/T)); rows are (N, C)."""
    log_p_student = F.log_softmax(student.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher.float() / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="sum")
    return kl * temperature**2


def distill_loss(task: Task, teacher: nn.Module, cfg: DistillConfig) -> LossFn:
    """A `loss_fn(out, x, y, count)` for `fit()` that blends the teacher's outputs with the labels.

    `alpha * soft_sum / count + (1 - alpha) * task.loss(out, y, count)`, where `soft_sum` is
    T^2 x the KL divergence from the teacher's softened distribution to the student's,
    summed over samples (classification) or scored tokens (lm, real vocabulary columns only),
    and for regression/forecast the task's summed MSE to the teacher's predictions. With
    alpha = 0 the teacher is not consulted and the result is exactly the task loss.

    The teacher must already be on the batches' device; it runs in eval mode without gradients.

    Raises:
        ConfigError: a task without outputs to distil.
    """
    _check_task(task.info)
    teacher.eval()
    alpha, temperature = cfg.alpha, cfg.temperature
    vocab = int(task.info.extra.get("vocab_size", task.info.num_outputs))

    def soft_sum(out: Tensor, target: Tensor, y: Tensor) -> Tensor:
        if task.name in _MSE_TASKS:
            return task.loss_sum(out, target)
        if task.name == "lm":
            keep = y != IGNORE_INDEX  # (B, T): padded/unscored positions carry no loss, as in the task
            return _soft_sum(out[..., :vocab][keep], target[..., :vocab][keep], temperature)  # (N, V)
        return _soft_sum(out, target, temperature)  # (B, C)

    def loss_fn(out: Tensor, x: Tensor, y: Tensor, count: int) -> Tensor:
        if alpha == 0:
            return task.loss(out, y, count)
        if teacher.training:  # someone switched it back: dropout/batch-norm must stay frozen
            teacher.eval()
        with torch.no_grad():
            target = teacher(x)
        soft = soft_sum(out, target, y) / count
        if alpha == 1:
            return soft
        return alpha * soft + (1 - alpha) * task.loss(out, y, count)

    return loss_fn


def _same_data(teacher: DataInfo, student: DataInfo) -> None:
    """The student must learn on the data the teacher's outputs mean something for."""
    for key in ("task", "input_kind", "input_shape", "num_outputs", "class_names"):
        if getattr(teacher, key) != getattr(student, key):
            raise ConfigError(f"data: the distillation data's {key} is {getattr(student, key)!r}, the teacher "
                              f"was trained on {getattr(teacher, key)!r}; use the teacher's data section")
    if teacher.extra.get("vocab_size") != student.extra.get("vocab_size"):
        raise ConfigError(f"data: the distillation data's vocab_size is {student.extra.get('vocab_size')}, the "
                          f"teacher's {teacher.extra.get('vocab_size')}; use the teacher's data section")


def distill(teacher: LoadedRun, student_cfg: Any, cfg: ExperimentConfig, run: Run, device: torch.device,
            dcfg: DistillConfig, reporter: Reporter | None = None,
            bundle: DataBundle | None = None) -> tuple[nn.Module, LoopState]:
    """Train a student model from `student_cfg` on `cfg`'s data, taught by a finished run.

    Data comes from `cfg.data` (which must describe the teacher's data), optimisation from
    `cfg.optim`, `cfg.schedule` and `cfg.train`; `cfg.model` is not used, the student is
    `student_cfg`. Writes `data_info.json` (and `tokenizer.json` for text) into `run` so the
    child run can be reloaded with `load_run` once its weights are saved; metrics and
    checkpoints go there through `fit()`. Saving weights and the summary is the caller's.
    `bundle`, when the caller has already built `cfg.data`, saves building it again.

    Returns:
        The trained student (eval mode, on `device`) and the loop's final state.

    Raises:
        ConfigError: an invalid or ill-fitting student, or data unlike the teacher's.
    """

    student_model_cfg = student_model_config(student_cfg, cfg)
    if bundle is None:
        _, bundle = prepare(cfg)
    check_precision(cfg.train.precision, device)
    info = bundle.info
    _check_task(info)
    _same_data(teacher.info, info)
    write_data_files(run, bundle)

    torch.manual_seed(cfg.train.seed)  # the same init as `ember train` with this model
    student = models.build(student_model_cfg, info)
    teacher_model = teacher.model
    _check_shapes(student, student_model_cfg.name, teacher_model, teacher.config.model.name, info)
    student.to(device)
    teacher_model.to(device).eval()
    task = for_info(info)
    if reporter is not None:
        reporter.message(f"distill: teacher {teacher.config.model.name} {models.count_parameters(teacher_model):,} "
                         f"parameters -> student {student_model_cfg.name} {models.count_parameters(student):,}; "
                         f"T={dcfg.temperature}, alpha={dcfg.alpha}, data {bundle.sizes()}, run {run.path}")
    state = fit(student, bundle, task, cfg, run, device, reporter=reporter,
                loss_fn=distill_loss(task, teacher_model, dcfg))
    student.eval()
    return student, state

