"""Python's cyclic garbage collector, set for the job's worker processes.

CPython collects reference cycles in three generations. By default a young collection runs
after every 700 net allocations of container objects, and every tenth of those an older one,
each walking every object of its generations. A worker holds hundreds of thousands of such
objects it never frees (the modules of Beam, numpy, pyarrow and the job, the models) and makes
many short-lived ones per range (LTP's word lists, sentences), so the collector kept walking
the same long-lived objects. Measured on the People's Daily sample (DirectRunner
in_memory, 5.6 MB, ``gc.callbacks`` timing every collection): 1.6 CPU seconds of a 16 s job,
three quarters of it in 10 full collections; 2,600 collections freed 30,000 objects in all.

:func:`tune`, once per process, moves everything alive at that point (imports, models) out
of the collector's view (``gc.freeze``, as Python's documentation advises for long-lived
processes) and raises the young generation's threshold to 10,000 allocations. On the same
job (after LTP's words stopped being a tuple each), collections after the DoFns' set-up took
0.02-0.03 CPU-s instead of 0.48-0.51, peak memory unchanged (``bench/gc_cost.py``,
bench/README.md). Collections still run, so cycles are still freed. It changes no output.
"""
from __future__ import annotations

import gc
import threading

# A young collection every THRESHOLDS[0] net container allocations; the next generation every
# THRESHOLDS[1] young ones, the oldest every THRESHOLDS[2] of those (Python's rule).
THRESHOLDS = (10_000, 10, 10)

_lock = threading.Lock()
_done: list[bool] = []


def tune() -> bool:
    """Freeze what is alive now and set :data:`THRESHOLDS` (once per process); True on the
    call that did it."""
    with _lock:
        if _done:
            return False
        gc.freeze()
        gc.set_threshold(*THRESHOLDS)
        _done.append(True)
        return True
