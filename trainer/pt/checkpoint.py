"""Training checkpoints: everything needed to continue as if never stopped.

Layout: ``output_dir/checkpoints/step-00000020/``
  state.pt          rank 0: model, optimizer, scheduler, step, configs, world size
  rank-00000.pt     every rank: its RNG states (dropout) and its readers' data cursor
  COMPLETE          written last by rank 0, after every rank's file exists; a directory without
                    it (a crash mid-save) is never resumed from.
Model/optimizer state is identical on all ranks under DDP, so only rank 0 writes it; RNG and
data position differ per rank, so each rank writes its own small file and no gather is needed.
Only this run's checkpoints are ever there: ``trainer.run_setup``'s resume rule refuses a run
directory holding another run (another world size or DataLoader worker count included).
"""
from __future__ import annotations

import os
import re
import shutil
from typing import Optional

import torch

from trainer.pt.dist import DistContext, barrier
from trainer.run_setup import CHECKPOINTS
COMPLETE = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


def step_dir(output_dir: str, step: int) -> str:
    return os.path.join(output_dir, CHECKPOINTS, f"step-{step:08d}")


def rank_file(path: str, rank: int) -> str:
    return os.path.join(path, f"rank-{rank:05d}.pt")


def complete_steps(output_dir: str) -> list:
    """Steps of finished checkpoints, ascending."""
    root = os.path.join(output_dir, CHECKPOINTS)
    if not os.path.isdir(root):
        return []
    steps = [int(m.group(1)) for m in map(_STEP_DIR.match, os.listdir(root)) if m]
    return sorted(s for s in steps if os.path.exists(os.path.join(step_dir(output_dir, s), COMPLETE)))


def latest_checkpoint(output_dir: str) -> Optional[str]:
    steps = complete_steps(output_dir)
    return step_dir(output_dir, steps[-1]) if steps else None


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save(output_dir: str, step: int, *, ctx: DistContext, state: dict, rank_state: dict,
         keep: int) -> str:
    """Write one checkpoint collectively (every rank calls it); prune to the newest ``keep``.

    state: rank 0's dict (model/optimizer/scheduler state dicts, step, configs).
    rank_state: this rank's dict (rng, data cursor).
    """
    path = step_dir(output_dir, step)
    os.makedirs(path, exist_ok=True)
    torch.save(rank_state, rank_file(path, ctx.rank))
    if ctx.is_main:
        torch.save(state, os.path.join(path, "state.pt"))
    barrier(ctx)  # every rank file exists before COMPLETE does
    if ctx.is_main:
        with open(os.path.join(path, COMPLETE), "w") as f:
            f.write(f"{step}\n")
        for old in complete_steps(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(step_dir(output_dir, old), ignore_errors=True)
    barrier(ctx)
    return path


def load(path: str, *, rank: int) -> tuple:
    """(rank-0 state, state of ``rank``), tensors on CPU."""
    state = torch.load(os.path.join(path, "state.pt"), map_location="cpu", weights_only=False)
    rank_state = torch.load(rank_file(path, rank), map_location="cpu", weights_only=False)
    return state, rank_state
