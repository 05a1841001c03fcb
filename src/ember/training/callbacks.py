"""Callbacks: code of yours that `fit` calls at fixed points, given a read-only state.

    class PrintBest(ember.Callback):
        def on_validation_end(self, state):
            print(state.step, state.val["accuracy"])

    ember.train("digits-cnn", callbacks=[PrintBest()])

Hooks, in the order they fire: `on_fit_start`, then per optimizer step `on_step_end`, after
each validation `on_validation_end`, after each checkpoint `on_checkpoint`, and last
`on_fit_end`. Raising `StopTraining` from a hook ends the run cleanly after the current step
(final weights, summary and report are written). Any other exception stops the run with a
one-line `CallbackError` naming the callback and hook; checkpoints already written stay
valid, so the run can be resumed. Under several processes every rank runs the callbacks and
sees the same figures; `state.is_main` tells the rank that should write files.

Loggers are callbacks too (`ember.training.loggers`), and callbacks can come from installed
packages by name (`log.callbacks: [name]`, entry point group `ember.callbacks`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ember import plugins
from ember.errors import ConfigError, EmberError

__all__ = ["Callback", "FitState", "StopTraining", "CallbackError", "CallbackList", "register_callback",
           "resolve_callbacks", "HOOKS"]

HOOKS = ("on_fit_start", "on_step_end", "on_validation_end", "on_checkpoint", "on_fit_end")


@dataclass(frozen=True)
class FitState:
    """What a hook may read. A snapshot: changing it changes nothing in the loop.

    Attributes:
        step, epoch: optimizer steps and whole epochs done.
        total_steps: the step the run ends at (unless stopped early).
        loss: this step's training loss (`on_step_end`), else the last one seen.
        lr: the learning rate of the last step.
        logged: the train point written to metrics.jsonl at this step, if one was.
        val: the last validation metrics (scalars).
        best, best_step: the best value of the watched metric and its step.
        checkpoint: the folder just written (`on_checkpoint`).
        run_dir: the run folder. config: the run's (frozen) config.
        rank, world_size: this process among the job's.
    """

    step: int
    epoch: int
    total_steps: int
    loss: float | None
    lr: float
    run_dir: Path
    config: Any
    val: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    logged: Mapping[str, Any] | None = None
    best: float | None = None
    best_step: int | None = None
    checkpoint: Path | None = None
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Callback:
    """Base class: override the hooks you need; the rest do nothing."""

    def on_fit_start(self, state: FitState) -> None:
        """Before the first step (after a resume: at the resumed step)."""

    def on_step_end(self, state: FitState) -> None:
        """After each optimizer step (also a skipped, non-finite one)."""

    def on_validation_end(self, state: FitState) -> None:
        """After each validation pass; `state.val` holds its metrics."""

    def on_checkpoint(self, state: FitState) -> None:
        """After a checkpoint folder is complete; `state.checkpoint` is its path."""

    def on_fit_end(self, state: FitState) -> None:
        """After the last step, before the final weights and summary are written."""


class StopTraining(Exception):  # noqa: N818 - a signal, like StopIteration, not an error
    """Raise from a hook to end the run cleanly after the current step."""


class CallbackError(EmberError):
    """A callback raised: the run stopped; its last checkpoint is intact."""


class CallbackList:
    """Calls each hook on every callback, in order; skips hooks nobody overrides."""

    def __init__(self, callbacks: Iterable[Callback]) -> None:
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not any(callable(getattr(cb, hook, None)) for hook in HOOKS):
                raise ConfigError(f"callback {cb!r} has none of the hooks {', '.join(HOOKS)}")
        # Per-step hooks cost a state snapshot each step: build it only when someone listens.
        self.wants = {hook: any(_overrides(cb, hook) for cb in self.callbacks) for hook in HOOKS}
        self.stop_reason: str | None = None

    def __bool__(self) -> bool:
        return bool(self.callbacks)

    def fire(self, hook: str, state: Callable[[], FitState]) -> bool:
        """Call `hook` on each callback; True when one asked to stop."""
        if not self.wants[hook]:
            return False
        snapshot = state()
        stop = False
        for cb in self.callbacks:
            method = getattr(cb, hook, None)
            if method is None:
                continue
            try:
                method(snapshot)
            except StopTraining as exc:
                stop = True
                self.stop_reason = f"{type(cb).__name__}: {exc}" if str(exc) else type(cb).__name__
            except EmberError:
                raise
            except Exception as exc:
                raise CallbackError(f"callback {type(cb).__name__}.{hook} raised {type(exc).__name__}: {exc} "
                                    f"(the run stopped at step {snapshot.step}; its checkpoints are intact)"
                                    ) from exc
        return stop


def _overrides(cb: Callback, hook: str) -> bool:
    method = getattr(type(cb), hook, None)
    if method is None:
        return callable(getattr(cb, hook, None))  # duck-typed callback object
    return method is not getattr(Callback, hook, None)


def register_callback(name: str, factory: Callable[..., Callback]) -> None:
    """Make `log.callbacks: [<name>]` (or `{name: <name>, option: value}`) add `factory(**options)`."""
    plugins.register("callback", name, factory)


def resolve_callbacks(specs: Iterable[str | Mapping[str, Any]]) -> list[Callback]:
    """Callbacks named in `log.callbacks`, from registered or installed plug-ins."""
    out = []
    for spec in specs:
        options = dict(spec) if isinstance(spec, Mapping) else {"name": spec}
        name = options.pop("name", None)
        plugin = plugins.lookup("callback", name)
        if plugin is None:
            known = plugins.names("callback")
            raise ConfigError(f"log.callbacks: unknown callback {name!r}; "
                              + (f"valid: {', '.join(known)}" if known else
                                 "register one with ember.register_callback or install a package "
                                 "with an 'ember.callbacks' entry point"))
        try:
            out.append(plugin.target(**options))
        except TypeError as exc:
            raise ConfigError(f"log.callbacks: callback '{name}' does not take {options}: {exc}") from None
    return out
