"""The experiment config: typed sections composed from the components, loaded from YAML.

`load("digits-cnn", ["train.epochs=5"])` reads a shipped recipe (or a YAML file), applies
dotted overrides and validates everything. Any mistake raises `ConfigError` with one line
naming the field path, the value received and what would be valid.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from ember import plugins
from ember.compress.config import CompressConfig
from ember.data import SOURCES, DataConfig
from ember.data.config import BaseDataConfig
from ember.errors import ConfigError, did_you_mean
from ember.models import MODELS, ModelConfig
from ember.recipe_files import list_recipes
from ember.section import Section
from ember.training.config import OptimConfig, ScheduleConfig, TrainConfig
from ember.yaml_safe import load_yaml, read_utf8

__all__ = ["ExperimentConfig", "LogConfig", "load", "list_recipes", "to_yaml", "from_dict"]


class MlflowConfig(Section):
    """An MLflow store: any tracking URI MLflow accepts; default a SQLite file in the run."""

    tracking_uri: str | None = None
    experiment: str = "ember"


class LogConfig(Section):
    """Where runs go and what they write besides weights."""

    runs_dir: Path = Path("runs")
    report: bool = True
    image_grid: int = Field(32, ge=0, le=256, description="test images shown in the report")
    tensorboard: bool = Field(False, description="also write TensorBoard scalars under RUN/tensorboard")
    mlflow: MlflowConfig | None = Field(None, description="also log to an MLflow store")
    callbacks: list[str | dict[str, Any]] = Field(
        default_factory=list, description="callbacks by plug-in name, or {name: ..., option: value}")


class PluginRecord(Section):
    """Where a plug-in a run used came from (written by Ember, not by hand)."""

    name: str
    package: str | None = None
    version: str | None = None
    module: str | None = None


class ExperimentConfig(Section):
    """Everything a run needs. Written, fully resolved, into each run as `config.yaml`."""

    recipe: str = "custom"
    description: str = ""
    data: SerializeAsAny[DataConfig]
    model: SerializeAsAny[ModelConfig]
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    log: LogConfig = LogConfig()
    compress: CompressConfig | None = None  # steps for `ember compress RUN` (no --method)
    plugins: dict[str, PluginRecord] = Field(default_factory=dict,
                                             description="plug-ins this config uses, by section (recorded)")

    @field_validator("data", "model", mode="wrap")
    @classmethod
    def _plugin_section(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        """A `name` that is a registered plug-in validates against the plug-in's config class."""
        plugin = plugins.lookup(info.field_name, value.get("name")) if isinstance(value, dict) else None
        if plugin is None:
            return handler(value)
        return plugins.config_class(plugin, _PLUGIN_BASES[info.field_name]).model_validate(value)


# Sections whose `name` selects a config class; the registries give the valid names.
_TAGGED = {"data": SOURCES, "model": MODELS}
_PLUGIN_BASES: dict[str, type[Section]] = {"data": BaseDataConfig, "model": Section}


def _read_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        raw = load_yaml(text)  # safe loader: !!python/... tags are errors, never code
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({first})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of sections, got {type(raw).__name__}")
    return raw


def _recipe_source(recipe: str) -> tuple[str, str, str]:
    """Return (recipe name, YAML text, where) for a recipe name or a path to a YAML file."""
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file '{recipe}' does not exist")
        return path.stem, read_utf8(path, "config file"), str(path)
    names = list_recipes()
    if recipe not in names:
        raise ConfigError(f"unknown recipe '{recipe}'; {did_you_mean(recipe, names)}")
    text = (resources.files("ember") / "recipes" / f"{recipe}.yaml").read_text()
    return recipe, text, f"recipe '{recipe}'"


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected key=value, e.g. train.epochs=5")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override '{item}': empty key part in '{key}'")
    try:
        value = load_yaml(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text  # an unparsable value is a string; validation decides
    return parts, value


def set_dotted(raw: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set `raw[parts[0]][parts[1]]... = value` in place, creating mappings on the way."""
    node = raw
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[parts[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted `key=value` pairs (values parsed as YAML) in a nested dict, returning a copy.

    Changing a section's `name` (e.g. `model.name=mlp`) drops that section's other recipe
    keys, since they belong to the old choice.
    """
    out: dict[str, Any] = load_yaml(yaml.safe_dump(raw)) or {}
    switched: dict[str, set[str]] = {}  # section -> keys the user set explicitly
    for item in overrides:
        parts, value = _parse_override(item)
        if len(parts) == 2 and parts[1] == "name" and parts[0] in _TAGGED:
            section = out.get(parts[0])
            if isinstance(section, dict) and section.get("name") != value:
                switched.setdefault(parts[0], set())
        if parts[0] in switched and len(parts) > 1:
            switched[parts[0]].add(parts[1])
        set_dotted(out, parts, value)
    for section, explicit in switched.items():
        # Keep the recipe's keys the new choice also has (batch_size, ...); drop the rest.
        member = _member_for(section, out[section].get("name"))
        fields = set(member.model_fields) if member else set()
        out[section] = {k: v for k, v in out[section].items() if k in fields or k in explicit}
    return out


def _section_class(raw: dict[str, Any], loc: tuple[Any, ...]) -> tuple[type[Section] | None, list[str]]:
    """Walk the config classes along `loc`, returning the class at its parent and the path."""
    cls: Any = ExperimentConfig
    path: list[str] = []
    node: Any = raw
    for i, part in enumerate(loc[:-1]):
        if isinstance(part, int):
            return None, path
        path.append(str(part))
        node = node.get(part, {}) if isinstance(node, dict) else {}
        field = cls.model_fields.get(part) if cls else None
        if field is None:
            return None, path
        if part in _TAGGED and i == 0:
            # Skip the tag pydantic puts into the location of a discriminated union.
            cls = _member_for(part, node.get("name") if isinstance(node, dict) else None)
            continue
        ann = field.annotation
        cls = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, Section)), None)
    return cls, path


def _member_for(section: str, name: Any) -> type[Section] | None:
    union = ExperimentConfig.model_fields[section].annotation
    for member in getattr(union, "__args__", ()):
        tag = member.model_fields["name"].annotation
        if name in getattr(tag, "__args__", ()):
            return member
    plugin = plugins.lookup(section, name)
    return plugins.config_class(plugin, _PLUGIN_BASES[section]) if plugin is not None else None


def _clean_loc(raw: dict[str, Any], loc: tuple[Any, ...]) -> list[Any]:
    parts = list(loc)
    if len(parts) > 1 and parts[0] in _TAGGED:
        section = raw.get(parts[0], {})
        if isinstance(section, dict) and parts[1] == section.get("name"):
            del parts[1]
    return parts


def _format_error(raw: dict[str, Any], err: dict[str, Any]) -> str:
    loc = _clean_loc(raw, err["loc"])
    dotted = ".".join(str(p) for p in loc) or "config"
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        cls, _ = _section_class(raw, tuple(loc))
        valid = sorted(cls.model_fields) if cls else []
        hint = f"; {did_you_mean(str(loc[-1]), valid)}" if valid else ""
        return f"{dotted}: unknown key{hint}"
    if kind == "missing":
        return f"{dotted}: required but missing"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", err.get("ctx", {}).get("expected", ""))
        return f"{dotted}: got {value!r}; {did_you_mean(str(value), expected)}"
    return f"{dotted}: got {value!r}; {msg[0].lower() + msg[1:]}"


def _check_tags(raw: dict[str, Any]) -> None:
    for section, registry in _TAGGED.items():
        node = raw.get(section)
        if node is None:
            raise ConfigError(f"{section}: required section missing; it needs at least 'name'")
        if not isinstance(node, dict):
            raise ConfigError(f"{section}: expected a mapping, got {node!r}")
        name = node.get("name")
        if name in registry or plugins.lookup(section, name) is not None:
            continue
        recorded = (raw.get("plugins") or {}).get(section) if isinstance(raw.get("plugins"), dict) else None
        if isinstance(recorded, dict) and recorded.get("name") == name:
            raise ConfigError(plugins.missing_message(section, name, recorded))
        what = "dataset" if section == "data" else "model"
        known = [n for n in registry if n != "object"] + plugins.names(section)
        raise ConfigError(f"{section}.name: unknown {what} {name!r}; {did_you_mean(str(name), known)}")


def from_dict(raw: dict[str, Any]) -> ExperimentConfig:
    """Validate a plain dict (as read from YAML) into an `ExperimentConfig`.

    A section whose `name` is a plug-in gets the plug-in's provenance recorded under
    `plugins:` (package and version), so the run says what it needs to be reopened.
    """
    _check_tags(raw)
    recorded = raw.get("plugins") or {}
    if isinstance(recorded, dict):  # anything else: validation names the field
        recorded = dict(recorded)
        for section in _TAGGED:
            name = raw[section].get("name")
            plugin = None if name in _TAGGED[section] else plugins.lookup(section, name)
            if plugin is not None:
                recorded[section] = plugin.provenance()
            elif name in _TAGGED[section]:
                recorded.pop(section, None)
        raw = {**raw, "plugins": recorded}
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(raw, exc.errors()[0])) from None


def load(recipe: str = "digits-cnn", overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a shipped recipe or a YAML file, apply `key=value` overrides, validate.

    Example:
        >>> cfg = load("digits-cnn", ["train.epochs=2", "model.channels=[8,16]"])
        >>> cfg.train.epochs
        2
    """
    name, text, where = _recipe_source(recipe)
    raw = _read_yaml(text, where)
    raw.setdefault("recipe", name)
    return from_dict(apply_overrides(raw, list(overrides or [])))


def to_yaml(cfg: ExperimentConfig) -> str:
    """The fully resolved config as YAML (what `config.yaml` in a run holds)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
