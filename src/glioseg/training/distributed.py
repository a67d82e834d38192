"""Data-parallel training over several GPUs with torch DDP, one process per GPU.

``torchrun`` starts the processes and describes them in the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); a plain ``glioseg train`` is a
world of one and none of this changes what it does. Each process trains on
its own share of every epoch's cases and validates its share of the
validation cases; DDP averages the gradients, MONAI's metrics gather the
validation scores, and only rank 0 writes files. The CPU works too (gloo), which is how the
tests run it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1

    def device(self) -> torch.device:
        """The GPU of this process (one per process, by local rank), or the CPU."""
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if self.is_distributed:
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device("cuda")


def world_from_environment() -> World:
    """The world torchrun describes, or a world of one."""
    return World(rank=int(os.environ.get("RANK", "0")), size=int(os.environ.get("WORLD_SIZE", "1")),
                 local_rank=int(os.environ.get("LOCAL_RANK", "0")))


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join the process group for the duration of a training (nothing to do in a world of one)."""
    if not world.is_distributed:
        yield
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank, world_size=world.size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """The module to train with: the model itself, or DDP around it (gradients averaged across processes)."""
    if not world.is_distributed:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def shard(items: Sequence[T], world: World, seed: int) -> list[T]:
    """This process's share of an epoch's items: a seeded permutation dealt out in equal parts.

    Every process draws the same permutation, so the shares are disjoint and
    together cover the epoch (up to ``size - 1`` items left over); equal
    shares keep the processes' step counts, and so their gradient exchanges, in step.
    """
    if not world.is_distributed:
        return list(items)
    order = np.random.default_rng(seed).permutation(len(items))
    per_rank = len(items) // world.size
    return [items[i] for i in order[world.rank * per_rank:(world.rank + 1) * per_rank]]


def validation_share(cases: Sequence[T], world: World) -> list[T]:
    """This process's validation cases: every ``size``-th one, and never none.

    With fewer cases than processes, a process re-validates one case
    (MONAI's metric needs at least one per process to gather); that case
    then counts twice in the mean.
    """
    if not world.is_distributed:
        return list(cases)
    return list(cases[world.rank::world.size]) or [cases[world.rank % len(cases)]]


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """Whether any process raised ``flag``: a stop signal may reach only some of them."""
    if not world.is_distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier(world: World) -> None:
    """Wait for every process (rank 0 validating or saving while the others wait)."""
    if world.is_distributed:
        dist.barrier()
