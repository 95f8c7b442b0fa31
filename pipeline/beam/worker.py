"""What every DoFn's ``setup`` does first, in whatever process a runner runs it (the launcher
itself in_memory, DirectRunner's or Dask's worker processes, Dataflow's workers).

The job's filesystem options (some runners' workers never receive them: ``fs``), glibc's
malloc thresholds (``pipeline.common.allocator``) and Python's garbage collector
(``pipeline.common.collector``): process settings that change no output, each applied once
per process.
"""
from __future__ import annotations

from pipeline.beam import fs
from pipeline.common import allocator, collector


def setup(filesystem_options) -> None:
    fs.use_options(filesystem_options)
    allocator.tune()
    collector.tune()
