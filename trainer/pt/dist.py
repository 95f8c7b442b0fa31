"""Process-group plumbing for torchrun: who am I, which device, and sum-reductions.

torchrun exports RANK / WORLD_SIZE / LOCAL_RANK; a plain ``python`` launch has none and runs as
a world of one without creating a process group. Backend: nccl on CUDA, gloo on CPU.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, Mapping

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_from_env(env: Mapping[str, str] = os.environ) -> DistContext:
    """Join torchrun's process group if launched by it; pick this process's device."""
    world = int(env.get("WORLD_SIZE", "1"))
    rank, local = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank=rank, world_size=world, local_rank=local, device=device)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def sum_across(ctx: DistContext, values: Dict[str, float]) -> Dict[str, float]:
    """Sum each value over ranks (float64 on CPU is exact enough for counts and loss sums)."""
    if not ctx.distributed:
        return dict(values)
    keys = sorted(values)
    device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
