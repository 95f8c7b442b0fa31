"""The trainers' data check without a framework: each shard's size and sha256 against its
manifest entry, in parallel threads; what an older manifest does not allow to check; the
refusal's wording; the split of the work between processes."""
import hashlib
import logging
import os
import shutil

import pytest

from tests.trainer.conftest import TINY_MODEL
from trainer import data_check, data_contract, run_setup
from trainer.config import ModelConfig, TrainConfig
from trainer.data_check import Expected

TINY = TINY_MODEL  # tests/trainer/conftest.py: the one tiny model


def write(path, data: bytes) -> Expected:
    with open(path, "wb") as f:
        f.write(data)
    return Expected(path=str(path), data_dir=os.path.dirname(str(path)), bytes=len(data),
                    sha256=hashlib.sha256(data).hexdigest())


def test_each_changed_shard_is_named_with_what_differs(tmp_path):
    """Same size other bytes, truncated, grown, missing: four problems, in shard order, from
    two threads and blocks smaller than a file (digest over several reads)."""
    shards = [write(tmp_path / f"s{i}", bytes([i]) * 10_000) for i in range(6)]
    (tmp_path / "s1").write_bytes(b"\x09" * 10_000)
    (tmp_path / "s2").write_bytes(b"\x02" * 9_000)
    (tmp_path / "s3").write_bytes(b"\x03" * 10_001)
    (tmp_path / "s4").unlink()
    report = data_check.check_files(shards, threads=2, block_size=4096)
    assert report.problems == [
        (str(tmp_path / "s1"), "sha256 " + hashlib.sha256(b"\x09" * 10_000).hexdigest()[:16]
         + "... differs from the manifest's " + shards[1].sha256[:16]
         + "... (same size: rewritten or corrupted in place)"),
        (str(tmp_path / "s2"), "9000 bytes, the manifest says 10000"),
        (str(tmp_path / "s3"), "10001 bytes, the manifest says 10000"),
        (str(tmp_path / "s4"), "missing")]
    assert report.files == 6 and report.bytes_read == 10_000 * 3 + 9_000 + 10_001
    message = data_check.refusal_message(report)
    assert message.startswith("4 shard(s) differ from what their manifest.json records")
    assert f"`python -m pipeline.verify --output_dir {tmp_path}`" in message
    assert "--skip_data_check" in message
    assert data_check.check_files(shards[:1] + shards[5:], threads=1).problems == []


def test_an_older_manifest_is_checked_for_what_it_records_and_says_what_it_does_not(tmp_path):
    size_only = write(tmp_path / "a", b"a" * 100)
    size_only = Expected(path=size_only.path, data_dir=size_only.data_dir, bytes=100)
    nothing = Expected(path=str(tmp_path / "b"), data_dir=str(tmp_path))  # not even read
    assert data_check.check_files([size_only, nothing]).problems == []
    (tmp_path / "a").write_bytes(b"a" * 99)
    assert data_check.check_files([size_only, nothing]).problems == [
        (size_only.path, "99 bytes, the manifest says 100")]
    [note] = data_check.unchecked_notes([size_only, nothing])
    assert note.startswith(f"{tmp_path}: its manifest records no sha256 for 2 of 2 shards "
                           "(contents not checked) and no size for 1 (size not checked)")
    full = write(tmp_path / "c", b"c")
    assert data_check.unchecked_notes([full]) == []


def test_processes_split_the_shards_and_their_reports_merge(tmp_path):
    shards = [write(tmp_path / f"s{i}", b"x") for i in range(5)]
    parts = [data_check.share(shards, part=p, parts=2) for p in range(2)]
    assert parts == [shards[0::2], shards[1::2]]
    (tmp_path / "s3").write_bytes(b"y")
    reports = [data_check.check_files(p) for p in parts]
    merged = data_check.Report.merge(reports + reports[1:])  # a second node found it too
    assert [p for p, _ in merged.problems] == [shards[3].path]
    assert merged.data_dirs == [str(tmp_path)]
    with pytest.raises(ValueError, match=r"part must be in \[0, 2\)"):
        data_check.share(shards, part=2, parts=2)


def test_a_run_checks_training_and_held_out_shards_once_each(train_dir, tmp_path, caplog):
    """The same dir as --data_dir and --eval_data_dir is read once; --skip_data_check reads
    nothing and says so."""
    data = str(shutil.copytree(train_dir, tmp_path / "data"))
    run = run_setup.prepare_run(ModelConfig(**TINY), TrainConfig(), data_dir=data,
                                eval_data_dir=data, output_dir=str(tmp_path / "run"))
    assert len(run_setup.data_shards(run, "parquet")) == 4
    with caplog.at_level(logging.INFO, logger="trainer.run_setup"):
        run_setup.refuse_changed_data(run, "parquet", [run_setup.check_data(run, "parquet")])
    assert "data check: 4 parquet shards" in caplog.text
    os.truncate(os.path.join(data, "parquet", "part-00002-of-00004.parquet"), 10)
    with pytest.raises(run_setup.Refused, match="part-00002-of-00004.parquet: 10 bytes"):
        run_setup.refuse_changed_data(run, "parquet", [run_setup.check_data(run, "parquet")])
    skip = run_setup.prepare_run(ModelConfig(**TINY), TrainConfig(), data_dir=data,
                                 output_dir=str(tmp_path / "run"), skip_data_check=True)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trainer.run_setup"):
        report = run_setup.check_data(skip, "parquet")
        run_setup.refuse_changed_data(skip, "parquet", [report])
    assert report.files == 0
    assert "--skip_data_check: the parquet shards were NOT compared" in caplog.text
    spec = data_contract.load_data_dir(data, run.model_config)
    assert all(s.sha256 and s.bytes for s in data_check.expected_shards(spec, "parquet"))
