"""Length bins, framework-free: which bin each unit of training reads, and how evaluation
splits its batches between bins. numpy only, so both trainers can share it.

Binned data (the pipeline's ``--length_bins``; ``DataSpec.bins``) is read as one stream per
bin, padded to the bin's bound, and every unit of training reads one bin: an optimizer update
in the PyTorch trainer, a chunk of ``steps_per_execution`` updates in the TF2 trainer (one
``tf.function`` call runs that many steps on one iterator, hence on one shape).

The schedule is LDDL's rule, without state: schedule epoch ``e`` is a uniformly random
permutation, drawn from a generator seeded by (seed, e, ``BIN_SCHEDULE_KEY``), of the multiset
holding bin b ``floor(instances_b / unit)`` times, where ``unit`` is the instances one unit
reads over all replicas (``global_batch``). Every schedule epoch has the same length, so unit
``c`` reads ``order(c // steps_per_epoch)[c % steps_per_epoch]``: a pure function of the seed,
the unit's number and the manifest's counts, the same on every host, rank and replica and after
a resume. A bin that cannot fill one unit is never drawn. A bin's stream is endless, with its
own epochs: what it has not delivered when a schedule epoch ends comes later, nothing is
dropped.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# The schedule's own random stream: (seed, epoch, this key), not the file orders' (seed, epoch).
BIN_SCHEDULE_KEY = 0x62696E73  # "bins"


class BinSchedule:
    """Which length bin each unit of training reads (see the module doc).

    bounds: the bins' bounds (their keys everywhere), instances: their instance counts (the
    manifest's), global_batch: instances one unit reads over all replicas (PyTorch: batch x
    ranks x grad_accum; TF2: that x steps_per_execution), seed: the run's.
    ``bounds``/``batches``: the bins drawn and their units per schedule epoch; ``skipped``:
    the bins that cannot fill one unit.
    """

    def __init__(self, bounds: Sequence[int], instances: Sequence[int], *, global_batch: int,
                 seed: int):
        if len(bounds) != len(instances):
            raise ValueError(f"{len(bounds)} bounds for {len(instances)} instance counts")
        if global_batch < 1:
            raise ValueError(f"global_batch must be >= 1, got {global_batch}")
        self.all_bounds = tuple(int(b) for b in bounds)
        self.global_batch = int(global_batch)
        self.seed = int(seed)
        counts = [int(n) // self.global_batch for n in instances]
        self.bounds = tuple(b for b, c in zip(self.all_bounds, counts) if c)
        self.batches = tuple(c for c in counts if c)
        self.skipped = tuple(b for b, c in zip(self.all_bounds, counts) if not c)
        self._cached: tuple[int, np.ndarray] | None = None

    def _check(self) -> None:
        if not self.bounds:
            raise ValueError("no bin holds one global batch: nothing to schedule")

    @property
    def steps_per_epoch(self) -> int:
        """Units per schedule epoch."""
        return sum(self.batches)

    def order(self, epoch: int) -> np.ndarray:
        """The bounds read by schedule epoch ``epoch``'s units, in order."""
        if self._cached is None or self._cached[0] != epoch:
            self._check()
            multiset = np.repeat(np.asarray(self.bounds), self.batches)
            rng = np.random.default_rng([self.seed, int(epoch), BIN_SCHEDULE_KEY])
            self._cached = (int(epoch), rng.permutation(multiset))
        return self._cached[1]

    def bin_at(self, step: int) -> int:
        """The bound of the bin that unit ``step`` (0-based) reads."""
        self._check()
        epoch, position = divmod(int(step), self.steps_per_epoch)
        return int(self.order(epoch)[position])


def split_steps(full: Sequence[int], cap: int) -> tuple[int, ...]:
    """At most ``cap`` batches in all from parts holding ``full`` full batches each: all of
    them if they fit, else shares proportional to ``full`` (the largest remainders get what
    is left). Evaluation on binned held-out data scores each bin's share in turn."""
    total = sum(full)
    if total <= cap:
        return tuple(int(n) for n in full)
    steps = [cap * n // total for n in full]
    rest = sorted(range(len(full)), key=lambda i: (-(cap * full[i] % total), i))
    for i in rest[:cap - sum(steps)]:
        steps[i] += 1
    return tuple(steps)
