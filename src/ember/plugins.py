"""Plug-ins: models, data sources and callbacks from the user's own code or installed packages.

Two ways in, both by *name*:

- in your own process: `ember.register_model("mine", build_fn, MineConfig)`,
  `ember.register_data("my_source", load_fn, MySourceConfig)`,
  `ember.register_callback("my_cb", factory)`;
- from an installed package, through entry points discovered at first use:

      [project.entry-points."ember.models"]
      mine = "my_package.ember_plugin:model"        # an ember.ModelPlugin
      [project.entry-points."ember.data"]
      my_source = "my_package.ember_plugin:data"    # an ember.DataPlugin
      [project.entry-points."ember.callbacks"]
      my_cb = "my_package.ember_plugin:MyCallback"  # a Callback class or factory

A config names only a registered name; it never names an import path to call, so a
recipe or a run's `config.yaml` stays data. A run made with a plug-in records the plug-in's
package and version (`plugins:` in `config.yaml`, and `summary.json`); opening that run
where the plug-in is missing fails with one line naming the package to install.

This module is the generic registry and sits low in the layering (it imports only `section`
and `errors`): `ember.models.register_model`, `ember.data.register_data` and
`ember.training.callbacks.register_callback` add to it, and the config, model and data
builders consult it; it imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal

from pydantic import create_model

from ember.errors import ConfigError
from ember.section import Section

__all__ = ["ModelPlugin", "DataPlugin", "Plugin", "register", "config_class", "lookup", "names", "unregister",
           "rediscover", "missing_message", "GROUPS"]

Kind = Literal["model", "data", "callback"]
GROUPS: dict[str, str] = {"model": "ember.models", "data": "ember.data", "callback": "ember.callbacks"}


@dataclass(frozen=True)
class ModelPlugin:
    """What an `ember.models` entry point points at.

    Args:
        build: `build(cfg, info) -> nn.Module`, sized from the data's `DataInfo`.
        config: the model's config section (an `ember.Section` subclass); its fields are
            what a recipe's `model:` section may set. None: the model takes no options.
    """

    build: Callable[..., Any]
    config: type[Section] | None = None


@dataclass(frozen=True)
class DataPlugin:
    """What an `ember.data` entry point points at.

    Args:
        load: `load(cfg, seed) -> DataBundle` (see `ember.data_bundle` to make one from
            torch Datasets).
        config: a subclass of `ember.data.config.BaseDataConfig` (batch sizes, fractions);
            None: the base fields only.
    """

    load: Callable[..., Any]
    config: type[Section] | None = None


@dataclass(frozen=True)
class Plugin:
    """A registered plug-in: its function, config class and where it came from."""

    kind: Kind
    name: str
    target: Callable[..., Any]
    config: type[Section] | None
    package: str | None
    version: str | None

    def provenance(self) -> dict[str, str | None]:
        """What a run records about the plug-in that made it."""
        return {"name": self.name, "package": self.package, "version": self.version,
                "module": getattr(self.target, "__module__", None)}


_REGISTRY: dict[str, dict[str, Any]] = {"model": {}, "data": {}, "callback": {}}
_ENTRY_POINTS_LOADED: set[str] = set()


def _distribution_of(obj: Any) -> tuple[str | None, str | None]:
    """(distribution name, version) of the installed package defining `obj`, if any."""
    top = (getattr(obj, "__module__", "") or "").split(".")[0]
    if not top or top == "__main__":
        return None, None
    dists = metadata.packages_distributions().get(top, [])
    if not dists:
        return None, None  # a module on sys.path or a script: nothing to install
    return dists[0], metadata.version(dists[0])


def config_class(plugin: Plugin, base: type[Section]) -> type[Section]:
    """The plug-in's config class, derived from `base`, with a `name: Literal[<name>]` field."""
    cls = plugin.config or base
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{plugin.kind} plug-in '{plugin.name}': its config must subclass "
                          f"{base.__module__}.{base.__name__}; got {cls!r}")
    field = cls.model_fields.get("name")
    if field is not None and getattr(field.annotation, "__args__", None) == (plugin.name,):
        return cls
    return create_model(cls.__name__, __base__=cls, name=(Literal[plugin.name], plugin.name))  # type: ignore[call-overload]


def register(kind: Kind, name: str, target: Callable[..., Any], config: type[Section] | None = None,
             reserved: Collection[str] = (), package: str | None = None, version: str | None = None) -> Plugin:
    """Register a plug-in of `kind` under `name` (the kind's own `register_*` calls this).

    Raises:
        ConfigError: a name that is malformed or `reserved` (built-in), or a target that is
            not callable.
    """
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"plug-in name {name!r}: use letters, digits, '-' and '_'")
    if name in reserved:
        raise ConfigError(f"{kind} plug-in name '{name}' is built in; choose another name")
    if not callable(target):
        raise ConfigError(f"{kind} plug-in '{name}': {target!r} is not callable")
    if package is None:
        package, version = _distribution_of(target)
    plugin = Plugin(kind, name, target, config, package, version)
    _REGISTRY[kind][name] = plugin
    return plugin


def unregister(kind: Kind, name: str) -> None:
    """Forget a plug-in registered in this process (tests use it)."""
    _REGISTRY[kind].pop(name, None)


def rediscover() -> None:
    """Look for installed entry points again (after a `pip install` in a running notebook)."""
    for kind, found in _REGISTRY.items():
        for name in [n for n, p in found.items() if isinstance(p, _LazyEntryPoint)]:
            del found[name]
        _ENTRY_POINTS_LOADED.discard(kind)


def _load_entry_points(kind: Kind) -> None:
    if kind in _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED.add(kind)
    for ep in metadata.entry_points(group=GROUPS[kind]):
        if ep.name in _REGISTRY[kind]:
            continue  # registered in-process: that one wins
        _REGISTRY[kind][ep.name] = _LazyEntryPoint(kind, ep)  # type: ignore[assignment]


class _LazyEntryPoint:
    """An entry point, imported only when a config names it (startup stays fast)."""

    def __init__(self, kind: Kind, ep: metadata.EntryPoint) -> None:
        self.kind, self.ep = kind, ep

    def resolve(self) -> Plugin:
        try:
            obj = self.ep.load()
        except Exception as exc:  # a broken plug-in package is the user's to fix: one line
            raise ConfigError(f"plug-in '{self.ep.name}' ({self.ep.value}) failed to import: "
                              f"{type(exc).__name__}: {exc}") from None
        dist = self.ep.dist
        package, version = (dist.name, dist.version) if dist is not None else _distribution_of(obj)
        if self.kind == "model":
            if not isinstance(obj, ModelPlugin):
                raise ConfigError(f"entry point '{self.ep.name}' in ember.models must be an ember.ModelPlugin")
            target, config = obj.build, obj.config
        elif self.kind == "data":
            if not isinstance(obj, DataPlugin):
                raise ConfigError(f"entry point '{self.ep.name}' in ember.data must be an ember.DataPlugin")
            target, config = obj.load, obj.config
        else:
            target, config = obj, None
        return register(self.kind, self.ep.name, target, config, package=package, version=version)


def lookup(kind: Kind, name: Any) -> Plugin | None:
    """The plug-in registered (or installed) under `name`, or None."""
    if not isinstance(name, str):
        return None
    _load_entry_points(kind)
    found = _REGISTRY[kind].get(name)
    if isinstance(found, _LazyEntryPoint):
        found = found.resolve()
    return found


def names(kind: Kind) -> list[str]:
    """Every plug-in name of `kind` known here (registered or installed), without importing them."""
    _load_entry_points(kind)
    return sorted(_REGISTRY[kind])


def missing_message(kind: Kind, name: str, recorded: dict[str, Any] | None) -> str:
    """The one-line error for a config naming a plug-in that is not available here."""
    what = "model" if kind == "model" else "data source"
    if recorded and recorded.get("package"):
        pin = f"=={recorded['version']}" if recorded.get("version") else ""
        return (f"{kind}.name: {what} '{name}' comes from the plug-in package '{recorded['package']}', "
                f"which is not installed here; install it: pip install '{recorded['package']}{pin}'")
    register = "register_model" if kind == "model" else "register_data"
    where = f" (in {recorded['module']})" if recorded and recorded.get("module") else ""
    return (f"{kind}.name: {what} '{name}' was registered in the process that made this run{where}; "
            f"call ember.{register}('{name}', ...) first, or pass model=/data= objects")

