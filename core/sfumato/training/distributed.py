"""Data-parallel setup for ``torchrun``: process group, device per process, gradient averaging.

Gradients are averaged with one all-reduce per optimiser step instead of wrapping the models in
``DistributedDataParallel``: recipes call methods such as ``encode`` and ``decode``, which DDP's
forward hooks do not see. The arithmetic is DDP's (a mean over processes of each process's mean
gradient), so a run on N processes matches one process with the same global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..runtime import resolve_device


@dataclass
class DistributedContext:
    """Where this process sits in the run. ``world_size == 1`` without ``torchrun``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, checkpoints and saves."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group ``torchrun`` describes in the environment (gloo on CPU, nccl on CUDA).

    Without ``torchrun`` (no ``WORLD_SIZE``) this is a single process on ``device``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    target = resolve_device(device)
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, local_rank, target)


def teardown_distributed(context: DistributedContext) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_modules(modules: dict[str, nn.Module], context: DistributedContext) -> None:
    """Copy rank 0's parameters and buffers to every process (as DDP does at construction)."""
    if not context.distributed:
        return
    with torch.no_grad():
        for module in modules.values():
            for value in module.state_dict().values():
                dist.broadcast(value, src=0)


def average_gradients(parameters: list[nn.Parameter], context: DistributedContext) -> None:
    """Replace every gradient by its mean over processes, in one flat all-reduce.

    A parameter without a gradient on this process counts as a zero gradient, so processes whose
    batches took different branches (condition dropout, for example) still agree on the layout.
    """
    if not context.distributed or not parameters:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= context.world_size
    offset = 0
    for p in parameters:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def mean_over_processes(values: dict[str, float], context: DistributedContext) -> dict[str, float]:
    """Average logged metrics over processes (every process must call it with the same keys)."""
    if not context.distributed or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return {k: float(v) / context.world_size for k, v in zip(keys, tensor.tolist())}


def gather_objects(obj: object, context: DistributedContext) -> list[object]:
    """Every process's ``obj``, in rank order (on every process)."""
    if not context.distributed:
        return [obj]
    out: list[object] = [None] * context.world_size
    dist.all_gather_object(out, obj)
    return out


def from_main(obj: object, context: DistributedContext) -> object:
    """Rank 0's ``obj`` on every process (a decision only the main process can take)."""
    if not context.distributed:
        return obj
    out = [obj]
    dist.broadcast_object_list(out, src=0)
    return out[0]


def barrier(context: DistributedContext) -> None:
    if context.distributed:
        dist.barrier()
