"""The shared helpers have one meaning everywhere: what counts as remote, how sizes read, the
digest of a tree (the same local and through Beam), TFRecord framing (what the writers frame
the readers read)."""
import hashlib
import io

import pytest

from pipeline.common import digest, paths, sizes
from pipeline.common.tfrecord import frame_record, masked_crc32c


@pytest.mark.parametrize("path,remote", [
    ("gs://bucket/data", True), ("s3://bucket/x.txt", True), ("hdfs://host/x", True),
    ("file:///tmp/x", False), ("/tmp/x", False), ("relative/x", False), ("", False)])
def test_file_urls_are_local_and_other_urls_remote(path, remote):
    assert paths.is_remote(path) is remote


def test_local_path_strips_file_urls_only():
    assert paths.local_path("file:///tmp/x") == "/tmp/x"
    assert paths.local_path("/tmp/x") == "/tmp/x"
    assert paths.local_path("gs://b/x") == "gs://b/x"


def test_sizes_are_decimal():
    assert sizes.megabytes(597_000) == "0.6 MB"
    assert sizes.megabytes(1_234_500_000) == "1.23 GB"
    assert sizes.human_bytes(512) == "512 bytes"
    assert sizes.human_bytes(597_000) == "597.0 KB"
    assert sizes.human_bytes(5_600_000) == "5.6 MB"


def tree(root):
    # Names whose order differs between comparing paths part by part ("a" < "a-c", so a/b
    # first) and comparing the relative names as strings ("-" < "/", so a-c first).
    files = {"a/b": b"one", "a-c": b"two", "a.d/e/f": b"", "z": b"\0" * 70_000}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_the_digest_is_the_documented_algorithm(tmp_path):
    files = tree(tmp_path)
    expected = hashlib.sha256()
    for name in sorted(files):
        expected.update(f"{name}\0{len(files[name])}\0".encode() + files[name])
    assert digest.directory_sha256(tmp_path) == expected.hexdigest()
    entries = [(name, len(data), lambda data=data: io.BytesIO(data))
               for name, data in reversed(list(files.items()))]
    assert digest.files_sha256(entries) == expected.hexdigest()


def test_the_local_and_the_beam_digests_agree(tmp_path):
    from pipeline.beam import fs

    tree(tmp_path)
    assert fs.tree_sha256(str(tmp_path)) == digest.directory_sha256(tmp_path)
    assert fs.tree_sha256(str(tmp_path) + "/") == digest.directory_sha256(tmp_path)


def test_framing_is_what_the_reader_reads():
    from pipeline.readers.tfrecord import iter_frames

    records = [b"", b"x", bytes(range(256)) * 40]
    frames = list(iter_frames(io.BytesIO(b"".join(frame_record(r) for r in records))))
    assert [f.data for f in frames] == records
    # TFRecord's masked CRC of the empty string (as TensorFlow computes it).
    assert masked_crc32c(b"") == 0xA282EAD8
