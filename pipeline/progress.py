"""Progress lines for long work: what is done of the total, the rate and the time left, at
most one line every few seconds. Used by the job's launcher (``pipeline/run.py``, which polls
the piece files the job writes) and by the tools that read a whole output (verify, report).
"""
from __future__ import annotations

import time
from typing import Callable, Optional, Sequence


def megabytes(n: float) -> str:
    return f"{n / 1e6:,.1f} MB" if n < 1e9 else f"{n / 1e9:,.2f} GB"


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 07 min``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Emits ``parts · done of total · rate · time left`` through ``emit``, at most once every
    ``every`` seconds (and always when forced). The rate counts from the first update that saw
    work done, so start-up time (loading a model) does not dilute it."""

    def __init__(self, total_bytes: int, *, emit: Callable[[str], None], every: float = 5.0,
                 unit: str = "read", clock: Callable[[], float] = time.monotonic):
        self.total, self._emit, self._every, self._unit = total_bytes, emit, every, unit
        self._clock = clock
        self._started = clock()
        self._first: Optional[tuple] = None  # (time, bytes) when work was first seen
        self._last_line = self._started  # the first line after ``every`` seconds: short work
        # prints none

    def update(self, done_bytes: int, parts: Sequence[str] = (), *, force: bool = False) -> bool:
        """Report ``done_bytes`` (cumulative); returns whether a line was emitted."""
        now = self._clock()
        if self._first is None and done_bytes > 0:
            self._first = (now, done_bytes)
        if not force and now - self._last_line < self._every:
            return False
        self._last_line = now
        self._emit(self.line(done_bytes, parts, now))
        return True

    def line(self, done_bytes: int, parts: Sequence[str] = (), now: Optional[float] = None
             ) -> str:
        now = self._clock() if now is None else now
        items = list(parts)
        share = f" ({100 * done_bytes / self.total:.0f}%)" if self.total else ""
        items.append(f"{megabytes(done_bytes)} of {megabytes(self.total)} {self._unit}{share}")
        if self._first is not None and done_bytes > self._first[1]:
            elapsed = now - self._first[0]
            rate = (done_bytes - self._first[1]) / elapsed if elapsed > 0 else 0.0
            items.append(f"{rate / 1e6:,.2f} MB/s")
            if rate > 0 and done_bytes < self.total:
                items.append(f"about {duration((self.total - done_bytes) / rate)} left")
        else:
            items.append(f"{duration(now - self._started)} so far")
        return " · ".join(items)
