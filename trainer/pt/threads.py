"""CPU threads of a PyTorch training process: how many, and how they wait for each other.

Why this module exists. On a 2-core machine that other processes kept busy, the PyTorch trainer
fell to 4-8 examples/s (Tiny, batch 32) while the TF trainer kept ~25. torch's intra-op pool
is OpenMP (libgomp) with one thread per core of the machine by default, and with
``OMP_WAIT_POLICY`` unset a libgomp thread that reaches a barrier first spins (up to ~300,000
iterations) before it sleeps. When other processes hold the cores, the spinning thread burns the
time slice its partner needs to reach the barrier, and a small model's hundreds of small ops per
step each wait a scheduler tick. Measured (``bench/bench_cpu_contention.py``, cpu-smoke, Tiny,
batch 32, seq 128, 2 cores, 4 busy-loop processes): 11-13 examples/s spinning, 26 with
``OMP_WAIT_POLICY=PASSIVE`` (its fair share of the CPUs; TF: 22), and rusage showed why: a
spinning run made ~200 voluntary context switches in 20 steps, a passive one ~14,000, at
twice the examples per CPU-second. On an idle machine sleeping costs ~9% (64 vs 70 examples/s);
``GOMP_SPINCOUNT=300000`` restores libgomp's default spinning for a machine of one's own. So:

- ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once at a barrier) unless the environment sets
  it. libgomp reads it when torch loads, so ``trainer/train_torch.py`` calls
  ``default_wait_policy`` before importing torch;
- intra-op threads at most the CPUs this process may use (``os.sched_getaffinity``, capped by
  a cgroup CPU quota: a container's ``--cpus``, which OpenMP does not see) divided by the
  training processes on this node (LOCAL_WORLD_SIZE), unless ``OMP_NUM_THREADS`` is set
  (torchrun sets 1 when it starts several processes per node and the user did not). On a
  machine of its own one process already gets that many from OpenMP: this lowers the count
  only in a container, under ``taskset``, or with several processes per node;
- DataLoader workers use one torch thread (DataLoader's own rule) and one Arrow CPU thread
  each: W workers already decode side by side, their own pools would only oversubscribe.

Inter-op threads are left alone: eager training runs no inter-op work (the pool starts lazily,
on ``torch.jit.fork``), so they are only logged.
"""
from __future__ import annotations

import logging
import math
import os
import sys

log = logging.getLogger(__name__)
WAIT_POLICY = "OMP_WAIT_POLICY"


def default_wait_policy(env=os.environ) -> None:
    """Make OpenMP threads sleep at barriers instead of spinning, unless the environment says
    otherwise. Takes effect only if torch is not loaded yet (a warning says so)."""
    if env.get(WAIT_POLICY):
        return
    env[WAIT_POLICY] = "PASSIVE"
    if "torch" in sys.modules:
        log.warning("%s=PASSIVE set after torch was loaded: this process's OpenMP threads "
                    "still spin at barriers (set it in the environment)", WAIT_POLICY)


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs allowed by this cgroup's quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None
    when there is no quota."""
    try:
        with open(os.path.join(root, "cpu.max"), encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us"), encoding="ascii") as f:
            quota = int(f.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us"), encoding="ascii") as f:
            period = int(f.read())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cpus, math.ceil(limit))) if limit else cpus


def intra_op_threads(cpus: int, local_processes: int) -> int:
    return max(1, cpus // max(1, local_processes))


def configure(local_processes: int, env=os.environ) -> dict[str, object]:
    """Lower torch's intra-op threads to this process's share of the node's usable CPUs (one of
    ``local_processes``), never raise them: ``OMP_NUM_THREADS``, or a caller's own
    ``torch.set_num_threads``, may ask for fewer. Return what is in force, for the log."""
    import torch

    cpus = usable_cpus()
    share = intra_op_threads(cpus, local_processes)
    if not env.get("OMP_NUM_THREADS") and share < torch.get_num_threads():
        torch.set_num_threads(share)
    return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads(),
            "usable_cpus": cpus, "local_processes": local_processes,
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS"),
            "OMP_WAIT_POLICY": env.get(WAIT_POLICY)}


def describe(info: dict[str, object]) -> str:
    omp = info["OMP_NUM_THREADS"]
    return (f"torch threads: intra-op {info['intra_op']} "
            f"({f'OMP_NUM_THREADS={omp}' if omp else 'usable CPUs / processes on this node'}"
            f": {info['usable_cpus']} / {info['local_processes']}), inter-op {info['inter_op']}, "
            f"OpenMP wait policy {info['OMP_WAIT_POLICY'] or 'unset (spinning)'}")


def init_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: one torch thread (DataLoader sets it too) and one Arrow CPU
    thread, so W workers decode on W threads."""
    import pyarrow as pa
    import torch

    torch.set_num_threads(1)
    pa.set_cpu_count(1)
