"""glibc's malloc, set for the job's worker processes.

The job's numpy work makes and drops arrays of a few hundred KB to tens of MB all the time
(the [rows, max_seq_length] layouts of instance making, varint and gather buffers of the
writers). glibc serves a block over its mmap threshold with a fresh ``mmap`` (page-faulted in,
zeroed by the kernel, unmapped again on free) and gives the top of its heap back to the system
past its trim threshold. By default both thresholds adapt upwards as large blocks are freed,
but setting either of them in the environment (``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_MMAP_THRESHOLD_``) turns the adaptation off: dask's nannies start every worker with
``MALLOC_TRIM_THRESHOLD_=65536``, and there every array over 128 KB cost a fresh mmap, which
measured as several times DirectRunner's system CPU on the same job (docs/clusters.md).

:func:`tune` sets both thresholds, once per process, to where glibc's own adaptation ends
(32 MiB for mmap, twice that to trim), whatever the environment said: the allocation pattern of
a DirectRunner worker, on every runner. It changes no output; where the C library is not glibc
it does nothing.
"""
from __future__ import annotations

import ctypes
import threading

# glibc's mallopt parameters (malloc.h) and the largest mmap threshold its own rule reaches on
# 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD

_lock = threading.Lock()
_state: list[bool] = []  # the result of the first call, once made


def _glibc():
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # only glibc has it
        return libc
    except (OSError, AttributeError, TypeError):  # not glibc; Windows has no CDLL(None)
        return None


def tune() -> bool:
    """Set this process's malloc thresholds (once; later calls return the first answer).
    True if glibc took both settings."""
    with _lock:
        if not _state:
            libc = _glibc()
            _state.append(bool(libc) and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                          and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
        return _state[0]
