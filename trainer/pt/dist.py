"""Process-group plumbing for torchrun: who am I, which device, sum-reductions and the two
object collectives that let ranks agree (the data check's reports, the checkpoint to resume).

torchrun exports RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE; a plain ``python`` launch
has none and runs as a world of one without creating a process group. Backend: nccl on CUDA,
gloo on CPU.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    local_world_size: int = 1  # processes on this node

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
    return DistContext(rank=rank, world_size=world, local_rank=local, device=device,
                       local_world_size=int(env.get("LOCAL_WORLD_SIZE", "1")))


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def sum_across(ctx: DistContext, values: dict[str, float]) -> dict[str, float]:
    """Sum each value over ranks (float64 on CPU is exact enough for counts and loss sums)."""
    if not ctx.distributed:
        return dict(values)
    keys = sorted(values)
    device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` (picklable) on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
