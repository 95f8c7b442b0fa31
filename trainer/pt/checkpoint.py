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

Resume (``load_newest``) takes the newest complete checkpoint that every rank can read, both
files from the same directory (model and optimizer with the RNG and data cursor they were saved
with). One that does not load (a truncated file, a missing rank file) is skipped with a warning
and renamed ``unloadable-step-...``: never deleted, and out of the way of pruning and of the
save that reaches its step again, which would otherwise destroy it.
"""
from __future__ import annotations

import logging
import os
import re
import shutil

import torch

from trainer.pt.dist import DistContext, barrier, broadcast_object, gather_objects
from trainer.run_setup import CHECKPOINTS

log = logging.getLogger(__name__)
COMPLETE = "COMPLETE"
UNLOADABLE = "unloadable-"  # prefix of a checkpoint directory set aside by load_newest
STATE_KEYS = ("model", "optimizer", "scheduler", "step")
RANK_KEYS = ("rng", "data")
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
    return sorted(s for s in steps
                  if os.path.exists(os.path.join(step_dir(output_dir, s), COMPLETE)))


def latest_checkpoint(output_dir: str) -> str | None:
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
    """(rank-0 state, state of ``rank``), tensors on CPU; ValueError if either lacks a key the
    loop restores (a file that unpickles but is not a whole checkpoint)."""
    state = torch.load(os.path.join(path, "state.pt"), map_location="cpu", weights_only=False)
    rank_state = torch.load(rank_file(path, rank), map_location="cpu", weights_only=False)
    missing = ([f"state.pt: {k}" for k in STATE_KEYS if k not in state]
               + [f"{os.path.basename(rank_file(path, rank))}: {k}" for k in RANK_KEYS
                  if k not in rank_state])
    if missing:
        raise ValueError(f"not a whole checkpoint: missing {', '.join(missing)}")
    return state, rank_state


def one_line(error: BaseException) -> str:
    """``Type: first line of the message``, for a log line."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def set_aside(path: str) -> str:
    """Rename checkpoint dir ``path`` to ``unloadable-<name>`` beside it (``-2``, ``-3``, ...
    if taken); returns the new path. Not matched by ``complete_steps``, so never pruned."""
    parent, name = os.path.split(path)
    target, n = os.path.join(parent, UNLOADABLE + name), 1
    while os.path.exists(target):
        n += 1
        target = os.path.join(parent, f"{UNLOADABLE}{name}-{n}")
    os.rename(path, target)
    return target


def load_newest(output_dir: str, *, ctx: DistContext) -> tuple[str | None, tuple | None]:
    """(path, ``load``'s (state, rank state)) of the newest complete checkpoint that loads on
    every rank, or (None, None) when none does (or there is none): the caller starts fresh.

    Collective: rank 0's list of checkpoints is tried newest first by every rank, and each
    attempt's errors are gathered, so all ranks skip or take the same one (a rank file missing
    on one rank skips the checkpoint for all). Rank 0 logs each skip with every rank's reason,
    sets the skipped ones aside (``set_aside``) and warns loudly when none loads.
    """
    steps = broadcast_object(ctx, complete_steps(output_dir))
    skipped: list[str] = []
    chosen, loaded = None, None
    for step in reversed(steps):
        path = step_dir(output_dir, step)
        try:
            mine, error = load(path, rank=ctx.rank), None
        except Exception as e:  # noqa: BLE001 -- any unreadable file: try an older checkpoint
            mine, error = None, one_line(e)
        errors = gather_objects(ctx, error)
        if not any(errors):
            chosen, loaded = path, mine
            break
        del mine
        skipped.append(path)
        if ctx.is_main:
            reasons = "; ".join(f"rank {r}: {e}" if ctx.distributed else e
                                for r, e in enumerate(errors) if e)
            log.warning("checkpoint %s does not load (%s): skipped, trying the next older one",
                        path, reasons)
    if ctx.is_main:
        for path in skipped:
            log.warning("set %s aside as %s (not deleted: inspect or remove it yourself)", path,
                        set_aside(path))
        if skipped and chosen is None:
            log.warning("NONE of the %d checkpoints in %s loads: starting this run again from "
                        "step 0", len(skipped), os.path.join(output_dir, CHECKPOINTS))
    barrier(ctx)  # nobody lists or saves checkpoints before the renames are done
    return chosen, loaded
