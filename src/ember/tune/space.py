"""The search space: YAML over any config key, parsed and checked against the real config.

    optim.lr: {loguniform: [1.0e-4, 1.0e-1]}
    data.batch_size: {int: [16, 128], log: true}
    model.hidden: {choice: [[64], [128, 64]]}
    model.dropout: {uniform: [0, 0.5]}

Every mistake is found before any trial runs and named by its key: a key the config does
not have, a bound or choice the config would refuse (each is validated as an override of
the study's base config), an empty range. No torch or optuna import here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ember.config import ExperimentConfig, from_dict, set_dotted
from ember.errors import ConfigError
from ember.yaml_safe import load_yaml, read_utf8

__all__ = ["Param", "Space", "load_space", "parse_space", "check_space", "config_with", "format_value",
           "overrides_for"]

KINDS = ("uniform", "loguniform", "int", "choice")
_OPTIONS = ("log", "step")


def format_value(value: Any) -> str:
    """A value as override text that YAML reads back as the same value (1e-4 stays a float)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def _is_scalar_choice(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


@dataclass(frozen=True)
class Param:
    """One searched key. `kind` is uniform/int (with `log`, `step`) or choice."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    @property
    def labels(self) -> tuple[Any, ...]:
        """What Optuna stores for each choice: the value, or its JSON when it is a list or mapping.

        Optuna's categorical choices must be None/bool/int/float/str.
        """
        if all(_is_scalar_choice(c) for c in self.choices):
            return self.choices
        return tuple(json.dumps(c) for c in self.choices)

    def value_of(self, stored: Any) -> Any:
        """The config value for what Optuna stored for this key."""
        if self.kind == "choice" and self.labels != self.choices:
            return self.choices[self.labels.index(stored)]
        return stored

    def suggest(self, trial: Any) -> Any:
        """Ask an `optuna.Trial` for this key; returns the config value."""
        if self.kind == "choice":
            return self.value_of(trial.suggest_categorical(self.key, list(self.labels)))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1),
                                     log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def grid(self) -> list[Any]:
        """Every value this key can take, for the grid sampler (Optuna's stored form)."""
        if self.kind == "choice":
            return list(self.labels)
        if self.kind == "int" and not self.log:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is not None and not self.log:
            count = int(math.floor((float(self.high) - float(self.low)) / float(self.step) + 1e-9)) + 1
            return [float(self.low) + i * float(self.step) for i in range(count)]
        raise ConfigError(f"space: {self.key}: the grid sampler needs a finite set of values; use "
                          f"{{choice: [...]}}, an int range without log, or a uniform range with a step")

    def probes(self) -> list[Any]:
        """Values checked against the config before the study starts: both bounds, every choice.

        A float range also probes a value inside it with a fraction, which an integer field
        (`data.batch_size: {uniform: ...}`) refuses now rather than in the middle of the study.
        """
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "uniform" and self.step is None:
            inner = float(self.low) + (float(self.high) - float(self.low)) * 0.3719
            return [self.low, inner, self.high]
        return [self.low, self.high]

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"choice": list(self.choices)}
        out: dict[str, Any] = {self.kind if not (self.kind == "uniform" and self.log) else "loguniform":
                               [self.low, self.high]}
        if self.log and self.kind == "int":
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class Space:
    """The searched keys, in the order the space file lists them."""

    params: tuple[Param, ...]

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Config values for one trial, by dotted key."""
        return {p.key: p.suggest(trial) for p in self.params}

    def values_of(self, stored: Mapping[str, Any]) -> dict[str, Any]:
        """Config values for Optuna's stored params (e.g. of the best trial)."""
        by_key = {p.key: p for p in self.params}
        return {k: by_key[k].value_of(v) if k in by_key else v for k, v in stored.items()}

    def grid(self) -> dict[str, list[Any]]:
        return {p.key: p.grid() for p in self.params}

    def to_dict(self) -> dict[str, Any]:
        return {p.key: p.to_dict() for p in self.params}


def overrides_for(values: Mapping[str, Any]) -> list[str]:
    """`key=value` overrides that set `values` (dotted key -> config value)."""
    return [f"{k}={format_value(v)}" for k, v in values.items()]


def _number(value: Any, key: str, kind: str, integer: bool) -> float | int:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)):
        raise ConfigError(f"space: {key}: {kind} bounds must be {'integers' if integer else 'finite numbers'}, "
                          f"got {value!r}")
    return value


def _param(key: str, spec: Any) -> Param:
    if not isinstance(key, str) or not key or not all(key.split(".")):
        raise ConfigError(f"space: key {key!r}: expected a dotted config key, e.g. optim.lr")
    if not isinstance(spec, Mapping):
        raise ConfigError(f"space: {key}: expected a mapping like {{uniform: [0, 0.5]}}, got {spec!r}")
    kinds = [k for k in spec if k in KINDS]
    unknown = [k for k in spec if k not in KINDS and k not in _OPTIONS]
    if unknown:
        raise ConfigError(f"space: {key}: unknown entry {unknown[0]!r}; valid: {', '.join(KINDS + _OPTIONS)}")
    if len(kinds) != 1:
        raise ConfigError(f"space: {key}: give exactly one of {', '.join(KINDS)}, got {len(kinds)}")
    kind = kinds[0]
    body = spec[kind]
    log = spec.get("log", False)
    step = spec.get("step")
    if not isinstance(log, bool):
        raise ConfigError(f"space: {key}: log must be true or false, got {log!r}")
    if kind == "choice":
        if not isinstance(body, list) or not body:
            raise ConfigError(f"space: {key}: choice needs a non-empty list of values, got {body!r}")
        if "log" in spec or step is not None:
            raise ConfigError(f"space: {key}: log and step apply to ranges, not to choice")
        labels = [json.dumps(c, sort_keys=True) for c in body]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"space: {key}: choice lists a value twice: {body!r}")
        return Param(key, "choice", choices=tuple(body))
    if not isinstance(body, list) or len(body) != 2:
        raise ConfigError(f"space: {key}: {kind} needs [low, high], got {body!r}")
    integer = kind == "int"
    low, high = (_number(v, key, kind, integer) for v in body)
    if not low < high:
        raise ConfigError(f"space: {key}: empty range [{low}, {high}]; low must be below high")
    if kind == "loguniform":
        log = True
    if log and low <= 0:
        raise ConfigError(f"space: {key}: a log range needs low > 0, got {low}")
    if step is not None:
        step = _number(step, key, "step", integer)
        if step <= 0 or log:
            raise ConfigError(f"space: {key}: step must be > 0 and cannot go with a log range, got {step!r}")
    return Param(key, "int" if integer else "uniform", low=low if integer else float(low),
                 high=high if integer else float(high), log=log, step=step)


def parse_space(raw: Any) -> Space:
    """A `Space` from the parsed YAML mapping (key -> spec).

    Raises:
        ConfigError: naming the key, for a malformed spec or an empty range.
    """
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError("space: expected a mapping of config keys to ranges, e.g. "
                          "optim.lr: {loguniform: [1.0e-4, 1.0e-1]}")
    return Space(tuple(_param(k, v) for k, v in raw.items()))


def load_space(source: str | Path | Mapping[str, Any]) -> Space:
    """Read a space from a YAML file (or take a mapping as it is) and parse it."""
    if isinstance(source, Mapping):
        return parse_space(source)
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"--space: file '{path}' does not exist")
    try:
        raw = load_yaml(read_utf8(path, "search space"))  # data, never code
    except yaml.YAMLError as exc:
        raise ConfigError(f"--space: '{path}' is not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_space(raw)


def _with(raw: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the nested `raw` with each dotted key set to its value."""
    out: dict[str, Any] = json.loads(json.dumps(raw))
    for key, value in values.items():
        set_dotted(out, key.split("."), value)
    return out


def config_with(base: ExperimentConfig, values: Mapping[str, Any]) -> ExperimentConfig:
    """`base` with dotted keys set to config values, validated."""
    return from_dict(_with(base.model_dump(mode="json"), values))


def check_space(space: Space, base: ExperimentConfig) -> None:
    """Validate each bound and choice of `space` as a change to `base`.

    Raises:
        ConfigError: `space: KEY...` for an unknown key or a value the config refuses.
    """
    raw = base.model_dump(mode="json")
    for param in space.params:
        if param.key.split(".")[0] in ("data", "model") and param.key.split(".")[1:] == ["name"]:
            raise ConfigError(f"space: {param.key}: searching over the {param.key.split('.')[0]} kind is not "
                              "supported; run one study per kind")
        for value in param.probes():
            try:
                from_dict(_with(raw, {param.key: value}))
            except ConfigError as exc:
                message = str(exc)
                if message.startswith(f"{param.key}:"):
                    raise ConfigError(f"space: {message}") from None
                raise ConfigError(f"space: {param.key}={format_value(value)} is refused: {message}") from None
