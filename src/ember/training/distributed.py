"""Scale-out: process groups, strategies (single, DDP, FSDP2) and the few collectives the loop needs.

Everything here acts on a model from outside (torchtitan's `parallelize_llama` pattern): the
model files know nothing of DDP or FSDP. A process learns its place from the variables that
torchrun sets (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`); without them it is a world of one and
every function here is a no-op.

    strategy   what each rank holds                      gradient exchange
    single     the whole model (world size 1)            none
    ddp        the whole model                           all-reduce (average)
    fsdp       1/N of each block's parameters, grads     reduce-scatter per block
               and optimizer state (FSDP2 fully_shard)   (all-gather before use)
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import datetime
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ember.errors import ConfigError

__all__ = [
    "DistEnv", "environment", "init_process_group", "shutdown", "resolve_strategy", "parallelize",
    "unwrap", "all_sum", "die_with_launcher", "gradient_sync", "restart_count", "broadcast_object", "gather_objects", "barrier", "repeated_blocks",
]

STRATEGIES = ("auto", "single", "ddp", "fsdp")


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, metrics, checkpoints' shared files, the report and summary."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def environment() -> DistEnv:
    """The job layout torchrun put in the environment (a world of one when run directly)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ConfigError(f"WORLD_SIZE/RANK/LOCAL_RANK must be integers (set by torchrun): {exc}") from None
    return DistEnv(world, rank, local)


def restart_count() -> int:
    """How many times torchrun has restarted this job (0 on the first attempt)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


_watching = False  # die_with_launcher has run in this process


def die_with_launcher(poll_s: float = 0.5, grace_s: float = 5.0) -> None:
    """Make this rank end when the process that started it (torchrun's agent, `ember train --nproc`) dies.

    A launcher killed with SIGKILL cannot stop its ranks: they would go on (adopted by pid 1),
    holding the run folder's lock. On Linux the kernel sends SIGTERM at the parent's death
    (`prctl(PR_SET_PDEATHSIG)`); a daemon thread polling the parent pid covers other systems
    and a rank that ignores SIGTERM (after `grace_s`, it exits outright). The kernel drops the
    run's lock with the process, so the next `--resume` finds it free.
    """
    global _watching
    if _watching:
        return
    _watching = True
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # no prctl here: the thread below still watches
    if os.getppid() != parent or parent == 1:  # the launcher died before prctl took effect
        os._exit(143)

    finished = threading.Event()

    def watch() -> None:
        while os.getppid() == parent:
            if finished.wait(poll_s):
                return
        os.kill(os.getpid(), signal.SIGTERM)
        if not finished.wait(grace_s):
            os._exit(143)

    watcher = threading.Thread(target=watch, name="ember-launcher-watch", daemon=True)
    watcher.start()

    def stop_watching() -> None:
        # A daemon thread still alive when the interpreter finalizes is ended by pthread_exit
        # as it retakes the GIL; with a C++ frame on its stack that aborts the whole process
        # ("terminate called without an active exception", pytorch#38228) after a run that
        # had finished. The watcher is therefore stopped and joined while Python is whole.
        finished.set()
        watcher.join(timeout=poll_s + 1.0)

    atexit.register(stop_watching)


def init_process_group(env: DistEnv, device: torch.device, timeout_s: float) -> None:
    """Join the job's process group: NCCL on CUDA, gloo on the CPU.

    The timeout bounds every collective, so a rank that died or hung makes the others fail
    with an error instead of waiting for ever.
    """
    if "TORCHELASTIC_RUN_ID" in os.environ:  # started by torchrun's agent (--nproc N, N >= 1)
        die_with_launcher()
    if not env.distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    kwargs: dict[str, Any] = {"backend": backend, "timeout": timeout}
    if device.type == "cuda":
        kwargs["device_id"] = device
    one_node = os.environ.get("LOCAL_WORLD_SIZE") == str(env.world_size)
    if one_node and "TORCHELASTIC_RESTART_COUNT" in os.environ and "MASTER_ADDR" in os.environ:
        # torchrun's agent keeps one store for the whole job, and the default env:// setup
        # does not separate restarts: a restarted rank would read the addresses its dead
        # predecessors published and never connect (seen with gloo on torch 2.13). Each
        # attempt gets its own key space instead. Only on one node: there the restart count
        # is the job's; across nodes torchrun counts per node, so its own setup is kept.
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), env.world_size,
                             is_master=env.rank == 0 and not agent_store, timeout=timeout)
        kwargs.update(store=dist.PrefixStore(f"ember/attempt-{restart_count()}", base),
                      rank=env.rank, world_size=env.world_size)
    dist.init_process_group(**kwargs)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def resolve_strategy(name: str, env: DistEnv) -> str:
    """`auto` is `single` for one process and `ddp` for more; explicit choices are checked."""
    if name not in STRATEGIES:
        raise ConfigError(f"train.strategy: got '{name}'; valid: {', '.join(STRATEGIES)}")
    if name == "auto":
        return "ddp" if env.distributed else "single"
    if name == "single" and env.distributed:
        raise ConfigError(f"train.strategy: 'single' runs one process, but this job has {env.world_size}; "
                          "use ddp, fsdp or auto")
    if name in ("ddp", "fsdp") and not env.distributed:
        # A checkpoint saved by N ranks resumes here too; the plain loop is what one rank runs.
        return "single"
    return name


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The members of every `nn.ModuleList`: a transformer's or GPT's blocks, an MLP stack."""
    return [block for module in model.modules() if isinstance(module, nn.ModuleList) for block in module]


def _checkpoint_activations(block: nn.Module) -> None:
    """Recompute `block`'s activations in backward instead of storing them.

    Replacing the instance's `forward` keeps parameter names unchanged (a wrapper module
    would add a prefix to every name in the state dict) and keeps hooks on `__call__`, so
    FSDP's all-gather still runs before the block.
    """
    inner = block.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return inner(*args, **kwargs)
        return checkpoint(inner, *args, use_reentrant=False, **kwargs)

    block.forward = forward  # type: ignore[method-assign]


def parallelize(model: nn.Module, strategy: str, env: DistEnv, device: torch.device,
                precision: str = "fp32", activation_checkpointing: bool = False) -> nn.Module:
    """Apply activation checkpointing and the strategy; returns the module to train.

    DDP returns a wrapper (use `unwrap` for the model itself); FSDP2 shards `model` in place:
    each repeated block is its own unit (all-gathered just before it runs, freed after) and
    the root holds the rest (embeddings, heads). With `precision: bf16`, FSDP keeps bf16
    copies for compute and reduces gradients in fp32.
    """
    if activation_checkpointing:
        blocks = repeated_blocks(model)
        if not blocks:
            raise ConfigError("train.activation_checkpointing: this model has no repeated blocks to "
                              "checkpoint (transformer and gpt do); set it to false")
        for block in blocks:
            _checkpoint_activations(block)
    if strategy == "single":
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(device.type, (env.world_size,))
        mp = MixedPrecisionPolicy()
        if precision == "bf16":
            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for block in repeated_blocks(model):
            fully_shard(block, mesh=mesh, mp_policy=mp)
        fully_shard(model, mesh=mesh, mp_policy=mp)
        return model
    raise ConfigError(f"train.strategy: got '{strategy}'; valid: {', '.join(STRATEGIES)}")


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (FSDP2 shards in place, so it is the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_sum(values: Tensor, env: DistEnv) -> Tensor:
    """Sum `values` over ranks (in place on a copy); identity for a world of one."""
    if not env.distributed:
        return values
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's `obj` on every rank (a run directory, a decision)."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def gradient_sync(model: nn.Module, enabled: bool) -> contextlib.AbstractContextManager[None]:
    """Skip the gradient exchange for all but the last micro-batch of an accumulated step."""
    if enabled:
        return contextlib.nullcontext()
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2-sharded module

        @contextlib.contextmanager
        def paused() -> Iterator[None]:
            model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)

        return paused()
    return contextlib.nullcontext()
