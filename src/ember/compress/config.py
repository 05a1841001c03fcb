"""Config of a compression chain: a list of steps, each one method with its options.

    compress:
      steps:
        - {method: prune, kind: structured, sparsity: 0.5, finetune_epochs: 3}
        - {method: finetune, epochs: 2, lr: 0.0005}
        - {method: quantize, mode: dynamic}

The same sections validate `ember compress RUN --method ...` (one step built from the
flags), a chain file given with `--recipe`, and a run config's own `compress:` section.
This module imports nothing heavy: `ember.config` composes it into `ExperimentConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator

from ember.errors import ConfigError, did_you_mean
from ember.section import Section
from ember.yaml_safe import load_yaml, read_utf8

__all__ = ["PruneStep", "QuantizeStep", "DistillStep", "FinetuneStep", "Step", "CompressConfig",
           "METHODS", "parse_step", "parse_chain", "read_chain"]

METHODS = ("prune", "quantize", "distill", "finetune")


class _Training(Section):
    """Fields shared by every step that trains: how long and how fast."""

    lr: float | None = Field(None, gt=0, description="learning rate (default: per method, see README)")
    max_steps: int | None = Field(None, ge=1, description="cap on optimizer steps per training phase")


class PruneStep(_Training):
    """Magnitude pruning. `sparsity` is the share of weights zeroed (unstructured) or of
    channels / neurons / heads removed (structured), reached in `iterations` rounds with
    `finetune_epochs` of fine-tuning after each round (masks kept, so zeros stay zero)."""

    method: Literal["prune"] = "prune"
    kind: Literal["unstructured", "structured"] = "unstructured"
    sparsity: float = 0.5
    iterations: int = Field(1, ge=1, le=20)
    finetune_epochs: int = Field(2, ge=0)

    @field_validator("sparsity")
    @classmethod
    def _in_range(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError("must lie in [0, 1): the share of weights (or channels) removed")
        return value


class QuantizeStep(_Training):
    """int8: `dynamic` (weights int8, activations quantized on the fly), `static`
    (activations calibrated on `calibration_batches` training batches), `qat`
    (quantization-aware fine-tuning for `finetune_epochs`, then conversion) or
    `weight_only` (int8 weights, float activations: language-model decoding) or
    `weight_only_int4` (int4 weights in groups of 32, float activations)."""

    method: Literal["quantize"] = "quantize"
    mode: Literal["dynamic", "static", "qat", "weight_only", "weight_only_int4"] = "dynamic"
    calibration_batches: int = Field(16, ge=1)
    finetune_epochs: int | None = Field(None, ge=1, description="qat only (default 2)")

    @model_validator(mode="after")
    def _qat_only(self) -> QuantizeStep:
        if self.mode != "qat" and (self.finetune_epochs is not None or self.lr is not None
                                   or self.max_steps is not None):
            raise ValueError(f"finetune_epochs, lr and max_steps apply to mode: qat, not mode: {self.mode}")
        return self


class DistillStep(_Training):
    """Train `student` (a model section, or a YAML file holding one) from this run as the
    teacher: `alpha` x T^2 x KL of temperature-softened outputs + (1 - alpha) x the task loss.
    `epochs`, `lr` default to the teacher's training recipe."""

    method: Literal["distill"] = "distill"
    student: dict[str, Any] | str
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1)
    epochs: int | None = Field(None, ge=1)


class FinetuneStep(_Training):
    """More training of the current model (zeros of a sparse model stay zero)."""

    method: Literal["finetune"] = "finetune"
    epochs: int = Field(2, ge=1)


Step = Annotated[PruneStep | QuantizeStep | DistillStep | FinetuneStep, Field(discriminator="method")]
_STEP_CLASSES: dict[str, type[Section]] = {"prune": PruneStep, "quantize": QuantizeStep,
                                           "distill": DistillStep, "finetune": FinetuneStep}


class CompressConfig(Section):
    """Steps applied in order, each writing one child run whose parent is the previous run."""

    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _order(self) -> CompressConfig:
        check_order(self.steps, quantized=False)
        return self


def check_order(steps: list[Any], quantized: bool) -> None:
    """int8 weights can't be trained or pruned further: after a quantize only distill may follow."""
    for i, step in enumerate(steps):
        if quantized and step.method != "distill":
            raise ValueError(f"step {i + 1} ({step.method}) follows quantization; int8 weights can't be "
                             f"{'quantized again' if step.method == 'quantize' else 'trained or pruned'} "
                             "(put quantize last, or distill from the quantized run)")
        quantized = step.method == "quantize" or (quantized and step.method != "distill")


# --- parsing with one-line errors -------------------------------------------------------

_FLAGS = {"sparsity": "--sparsity", "kind": "--kind", "iterations": "--iterations",
          "finetune_epochs": "--finetune-epochs", "lr": "--lr", "max_steps": "--max-steps",
          "mode": "--mode", "calibration_batches": "--calibration-batches", "student": "--student",
          "temperature": "--temperature", "alpha": "--alpha", "epochs": "--epochs", "method": "--method"}


def _format(err: dict[str, Any], where: str, flags: bool, method: str | None) -> str:
    """One line for a pydantic error inside a step: field path, value received, what is valid."""
    parts = [p for p in err["loc"] if p not in METHODS]  # the union tag pydantic puts in the path
    field = str(parts[-1]) if parts else "step"
    if flags:
        name = _FLAGS.get(field, f"--{field.replace('_', '-')}")
    else:
        name = ".".join(str(p) for p in (where, *parts) if p != "")
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        cls = _STEP_CLASSES.get(method or "")
        valid = sorted(f for f in cls.model_fields if f != "method") if cls else []
        if flags:
            valid = [_FLAGS.get(v, v) for v in valid]
            return f"{name} does not apply to --method {method}; its options: {', '.join(valid)}"
        return f"{name}: unknown key; {did_you_mean(field, valid)}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        got = value.get("method") if isinstance(value, dict) else value
        return f"{name if flags else name + '.method'}: got {got!r}; {did_you_mean(str(got), METHODS)}"
    if kind == "missing":
        return f"{name}: required for --method {method}" if flags else f"{name}: required but missing"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "literal_error":
        import re

        expected = re.findall(r"'([^']*)'", err.get("ctx", {}).get("expected", ""))
        return f"{name}: got {value!r}; {did_you_mean(str(value), expected)}"
    if isinstance(value, dict):  # a model-level check: the message names its fields
        return f"{'--method ' + str(method) if flags else where or 'step'}: {msg[0].lower() + msg[1:]}"
    return f"{name}: got {value!r}; {msg[0].lower() + msg[1:]}"


def parse_step(raw: dict[str, Any], from_flags: bool = False, where: str = "") -> Step:
    """Validate one step (from CLI flags when `from_flags`, naming flags in errors).

    Raises:
        ConfigError: e.g. `--sparsity: got 1.5; must lie in [0, 1): ...`.
    """
    method = raw.get("method")
    if method not in METHODS:
        label = "--method" if from_flags else (f"{where}.method" if where else "method")
        raise ConfigError(f"{label}: got {method!r}; {did_you_mean(str(method), METHODS)}")
    try:
        return TypeAdapter(Step).validate_python(raw)
    except ValidationError as exc:
        raise ConfigError(_format(exc.errors()[0], where, from_flags, method)) from None


def parse_chain(raw: Any, where: str) -> CompressConfig:
    """Validate a chain given as `{steps: [...]}`, `{compress: {steps: [...]}}` or a bare list."""
    if isinstance(raw, dict) and set(raw) == {"compress"}:
        raw = raw["compress"]
    if isinstance(raw, list):
        raw = {"steps": raw}
    if not isinstance(raw, dict) or set(raw) != {"steps"} or not isinstance(raw["steps"], list) \
            or not raw["steps"]:
        raise ConfigError(f"{where}: expected 'steps:' with a list of steps, e.g. "
                          "steps: [{method: prune, sparsity: 0.5}, {method: quantize}]")
    steps = [parse_step(s if isinstance(s, dict) else {"method": s}, where=f"{where}: steps.{i}")
             for i, s in enumerate(raw["steps"])]
    try:
        return CompressConfig(steps=steps)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None


def read_chain(path: Path) -> CompressConfig:
    """Read a chain YAML file (safe loader); `student:` paths in it are relative to the file."""
    if not path.is_file():
        raise ConfigError(f"--recipe: chain file '{path}' does not exist")
    try:
        raw = load_yaml(read_utf8(path, "compression config"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).strip().splitlines()[0]})") from None
    chain = parse_chain(raw, str(path))
    steps: list[Any] = []
    for step in chain.steps:
        if isinstance(step, DistillStep) and isinstance(step.student, str):
            student = Path(step.student)
            if not student.is_absolute() and (path.parent / student).is_file():
                step = step.model_copy(update={"student": str(path.parent / student)})
        steps.append(step)
    return CompressConfig(steps=steps)
