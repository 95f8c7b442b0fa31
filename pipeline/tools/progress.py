"""Progress lines for long work: what is done of the total, the rate and the time left, at
most one line every few seconds. Used by the job's launcher (``pipeline/run.py``, which polls
the piece files the job writes) and by the tools that read a whole output (verify, report).
Sizes and rates in decimal MB (``pipeline.common.sizes``).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence

from pipeline.common.sizes import MB, megabytes

LOG = logging.getLogger(__name__)


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
        self._first: tuple | None = None  # (time, bytes) when work was first seen
        self._last_line = self._started  # the first line after ``every`` seconds: short work
        # prints none

    def update(self, done_bytes: int, parts: Sequence[str] = (), after: Sequence[str] = (), *,
               force: bool = False) -> bool:
        """Report ``done_bytes`` (cumulative), with ``parts`` before the bytes and ``after``
        them; returns whether a line was emitted."""
        now = self._clock()
        if self._first is None and done_bytes > 0:
            self._first = (now, done_bytes)
        if not force and now - self._last_line < self._every:
            return False
        self._last_line = now
        self._emit(self.line(done_bytes, parts, after, now))
        return True

    def line(self, done_bytes: int, parts: Sequence[str] = (), after: Sequence[str] = (),
             now: float | None = None) -> str:
        now = self._clock() if now is None else now
        items = list(parts)
        share = f" ({100 * done_bytes / self.total:.0f}%)" if self.total else ""
        items.append(f"{megabytes(done_bytes)} of {megabytes(self.total)} {self._unit}{share}")
        items.extend(after)
        if self._first is not None and done_bytes > self._first[1]:
            elapsed = now - self._first[0]
            rate = (done_bytes - self._first[1]) / elapsed if elapsed > 0 else 0.0
            items.append(f"{rate / MB:,.2f} MB/s")
            if rate > 0 and done_bytes < self.total:
                items.append(f"about {duration((self.total - done_bytes) / rate)} left")
        else:
            items.append(f"{duration(now - self._started)} so far")
        return " · ".join(items)


@dataclasses.dataclass(frozen=True)
class JobState:
    """What a running job has done so far, as its files show it."""
    ranges: int
    bytes_read: int
    instances: int
    shards_written: int
    sketched: int = 0  # --dedup: ranges sketched (the first pass)


class JobWatch:
    """Follows a running job from the outside, in a thread: ``poll()`` (listing the files the
    job writes) every ``interval`` seconds, a line when something changed (at most one every
    ``every`` seconds), and at least one every ``heartbeat`` seconds."""

    INTERVAL, EVERY, HEARTBEAT = 2.0, 5.0, 30.0  # seconds

    def __init__(self, poll: Callable[[], JobState], *, total_bytes: int, ranges: int,
                 num_shards: int, emit: Callable[[str], None]):
        self._poll, self._ranges, self._shards = poll, ranges, num_shards
        self._emit, self._interval, self._heartbeat = emit, self.INTERVAL, self.HEARTBEAT
        self._progress = Progress(total_bytes, emit=emit, every=self.EVERY)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-progress", daemon=True)
        self._last: JobState | None = None
        self._last_time = time.monotonic()

    def start(self) -> "JobWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                state = self._poll()
            except Exception as e:  # a listing that fails now may work next time
                LOG.debug("progress: listing failed: %s", e)
                continue
            if self._last is not None:  # counts only grow (the job deletes its pieces last)
                state = JobState(*(max(a, b) for a, b in zip(
                    dataclasses.astuple(state), dataclasses.astuple(self._last))))
            now = time.monotonic()
            changed = state != self._last
            if changed or now - self._last_time >= self._heartbeat:
                if self.report(state, force=not changed):
                    self._last, self._last_time = state, now

    def report(self, state: JobState, *, force: bool = False) -> bool:
        if state.sketched and not state.ranges:
            line = (f"dedup, first pass: {state.sketched} of ~{max(self._ranges, state.sketched)}"
                    " ranges sketched")
            if force or state != self._last:
                self._emit(line)
                return True
            return False
        if state.bytes_read >= self._progress.total and state.ranges:
            line = (f"writing shards: {state.shards_written} of {self._shards} written · "
                    f"{state.instances:,} instances from {state.ranges} "
                    f"range{'s' if state.ranges != 1 else ''}")
            if force or state != self._last:
                self._emit(line)
                return True
            return False
        return self._progress.update(
            state.bytes_read, [f"ranges {state.ranges} of ~{max(self._ranges, state.ranges)}"],
            [f"{state.instances:,} instances"], force=force)
