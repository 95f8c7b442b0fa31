"""TensorBoard event files written without TensorFlow or tensorboard (trainer.event_file): the
framing and protos TensorBoard reads, checked with TensorBoard's own code where installed."""
import os
import struct

import pytest

from pipeline.common.tfrecord import masked_crc32c
from trainer import event_file


def read_records(path):
    """The records of a TFRecord file, checking both CRCs of each."""
    with open(path, "rb") as f:
        data = f.read()
    records, at = [], 0
    while at < len(data):
        header = data[at:at + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[at + 8:at + 12])[0] == masked_crc32c(header)
        record = data[at + 12:at + 12 + length]
        crc = data[at + 12 + length:at + 16 + length]
        assert struct.unpack("<I", crc)[0] == masked_crc32c(record)
        records.append(record)
        at += 16 + length
    return records


def test_events_parse_as_tensorflow_events(tmp_path):
    event_pb2 = pytest.importorskip("tensorboard.compat.proto.event_pb2")
    writer = event_file.EventFileWriter(str(tmp_path / "train"))
    writer.add(2, {"loss": 4.5, "masked_lm_accuracy": 0.25})
    writer.add(2**40, {"loss": -1.0})  # a multi-byte varint step
    writer.close()
    assert "tfevents" in os.path.basename(writer.path)
    events = [event_pb2.Event.FromString(r) for r in read_records(writer.path)]
    assert events[0].file_version == "brain.Event:2"
    assert [(e.step, [(v.tag, v.simple_value) for v in e.summary.value]) for e in events[1:]] == [
        (2, [("loss", 4.5), ("masked_lm_accuracy", 0.25)]), (2**40, [("loss", -1.0)])]
    assert all(e.wall_time > 1.6e9 for e in events)


def test_tensorboard_loads_the_scalars(tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    writer = event_file.EventFileWriter(str(tmp_path))
    for step in (5, 10):
        writer.add(step, {"loss": 1.0 / step, "grad_norm": float(step)})
    writer.close()
    events = accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["grad_norm", "loss"]
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [
        (5, pytest.approx(0.2)), (10, pytest.approx(0.1))]


def test_two_writers_in_one_second_write_two_files(tmp_path):
    a, b = event_file.EventFileWriter(str(tmp_path)), event_file.EventFileWriter(str(tmp_path))
    a.close()
    b.close()
    assert a.path != b.path and len(os.listdir(tmp_path)) == 2
