"""Byte counts as people read them, with one meaning everywhere: decimal units, as disks and
object stores count: 1 KB = 1,000 bytes, 1 MB = 10**6 bytes, 1 GB = 10**9 bytes (never
1,024-based). Flags in MB (``--range_mb``, ``--sample_mb``) mean the same MB.

:func:`megabytes` for amounts compared line to line (progress lines, a job's or a tool's
summary): MB, or GB from 1 GB on. :func:`human_bytes` for one-off sizes that may be tiny (what
an unfinished output directory holds): bytes, KB, MB, GB or TB, whichever fits.
"""
from __future__ import annotations

KB = 1_000
MB = 1_000_000
GB = 1_000_000_000


def megabytes(n: float) -> str:
    """``0.6 MB``, ``1,234.5 MB``... up to 1 GB, then ``1.23 GB``."""
    return f"{n / MB:,.1f} MB" if n < GB else f"{n / GB:,.2f} GB"


def human_bytes(n: float) -> str:
    """``512 bytes``, ``597.0 KB``, ``5.6 MB``, ``1.2 GB``: the largest unit below 1,000."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
