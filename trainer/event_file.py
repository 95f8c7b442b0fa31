"""TensorBoard event files of scalars, written without TensorFlow or the tensorboard package.

Why not ``torch.utils.tensorboard.SummaryWriter``: it imports ``tensorboard.compat.tf``, which
imports TensorFlow whenever TensorFlow is installed (about 4 s, and TensorFlow's CUDA probing on
stderr), and the PyTorch trainer needs neither. Scalars are all the trainers log, and their
format is small and frozen:

- a file named ``events.out.tfevents.<time>.<host>.<pid>.<n>`` (TensorBoard lists a directory's
  files whose name holds "tfevents") of TFRecord-framed records (``pipeline.common.tfrecord``,
  the framing the pipeline's writers use);
- each record a serialized ``tensorflow.Event`` (``event.proto``): wall_time (field 1, double),
  step (2, int64), then file_version (3, "brain.Event:2", the first record) or summary (5), a
  ``Summary`` of ``Value``\\ s with tag (1, string) and simple_value (2, float): what
  ``SummaryWriter.add_scalar`` writes and TensorBoard's scalars dashboard shows.
"""
from __future__ import annotations

import os
import socket
import struct
import time

from pipeline.common.protowire import length_delimited as _field_bytes
from pipeline.common.protowire import varint as _varint
from pipeline.common.tfrecord import frame_record

FILE_VERSION = b"brain.Event:2"


def event(*, wall_time: float, step: int, file_version: bytes | None = None,
          scalars: dict[str, float] | None = None) -> bytes:
    """A serialized ``tensorflow.Event``: the file version record, or a summary of scalars."""
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3) + _varint(step)
    if file_version is not None:
        out += _field_bytes(3, file_version)
    if scalars:
        summary = b"".join(
            _field_bytes(1, _field_bytes(1, tag.encode("utf-8"))
                         + _varint(2 << 3 | 5) + struct.pack("<f", float(value)))
            for tag, value in scalars.items())
        out += _field_bytes(5, summary)
    return out


class EventFileWriter:
    """Scalars into a new event file under ``log_dir`` (created); flushed at every ``add``,
    so TensorBoard sees a live run and a crash loses nothing written."""

    _count = 0  # several writers of one process in one second still get distinct names

    def __init__(self, log_dir: str):
        os.makedirs(log_dir, exist_ok=True)
        EventFileWriter._count += 1
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}.{EventFileWriter._count}")
        self.path = os.path.join(log_dir, name)
        self._file = open(self.path, "wb")
        self._write(event(wall_time=time.time(), step=0, file_version=FILE_VERSION))

    def _write(self, record: bytes) -> None:
        self._file.write(frame_record(record))
        self._file.flush()

    def add(self, step: int, scalars: dict[str, float]) -> None:
        """One event holding every tag -> value of ``scalars`` at ``step``."""
        self._write(event(wall_time=time.time(), step=step, scalars=scalars))

    def close(self) -> None:
        self._file.close()
