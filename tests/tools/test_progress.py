"""Progress lines: the arithmetic with a given clock, the watcher's rules, and a real job
followed through the piece files it writes."""
import json
import logging
import time

from pipeline.beam import pieces
from pipeline.run import run
from pipeline.tools import progress
from tests.realdata import write_corpus
from tests.tools.conftest import manifest


def test_a_line_says_done_of_total_rate_and_time_left():
    now = [100.0]
    lines = []
    p = progress.Progress(50_000_000, emit=lines.append, every=5, clock=lambda: now[0])
    assert not p.update(0, ["ranges 0 of ~10"])  # nothing before `every` seconds
    now[0] = 106
    assert p.update(5_000_000, ["ranges 1 of ~10"], ["700 instances"])
    assert lines[-1] == ("ranges 1 of ~10 · 5.0 MB of 50.0 MB read (10%) · 700 instances · "
                         "6 s so far")  # no rate from a single observation
    now[0] = 108
    assert not p.update(7_000_000)  # within 5 s of the last line
    now[0] = 116
    assert p.update(15_000_000)
    assert lines[-1] == "15.0 MB of 50.0 MB read (30%) · 1.00 MB/s · about 35 s left"
    assert progress.duration(3725) == "1 h 02 min" and progress.duration(65) == "1 min 5 s"


def test_the_watcher_reports_changes_counts_that_only_grow_then_the_shards():
    mb = 1_000_000
    states = iter([progress.JobState(1, 10 * mb, 100, 0), progress.JobState(1, 10 * mb, 100, 0),
                   progress.JobState(3, 30 * mb, 310, 0), progress.JobState(3, 30 * mb, 310, 1),
                   progress.JobState(0, 0, 0, 2)])  # the pieces are deleted at the end
    lines = []

    class Fast(progress.JobWatch):
        INTERVAL, EVERY, HEARTBEAT = 0.01, 0.0, 60.0

    def poll():
        try:
            return next(states)
        except StopIteration:
            return progress.JobState(0, 0, 0, 2)

    watch = Fast(poll, total_bytes=30 * mb, ranges=2, num_shards=2, emit=lines.append).start()
    time.sleep(0.5)
    watch.stop()
    assert lines[0].startswith("ranges 1 of ~2 · 10.0 MB of 30.0 MB read (33%) · 100 "
                               "instances")
    assert lines[1:] == ["writing shards: 0 of 2 written · 310 instances from 3 ranges",
                         "writing shards: 1 of 2 written · 310 instances from 3 ranges",
                         "writing shards: 2 of 2 written · 310 instances from 3 ranges"]


def test_the_dedup_first_pass_is_reported_as_sketched_ranges():
    lines = []
    watch = progress.JobWatch(lambda: None, total_bytes=10, ranges=4, num_shards=2,
                              emit=lines.append)
    assert watch.report(progress.JobState(0, 0, 0, 0, sketched=3))
    assert lines == ["dedup, first pass: 3 of ~4 ranges sketched"]
    name = pieces.sketch_name(("zh.txt", 0), 12)
    assert pieces.is_sketch(f"out/_pieces/run-x/{name}") and not pieces.is_sketch(f".tmp-{name}")
    assert pieces.parse_piece_name(name) is None


def test_piece_names_carry_bytes_and_instances():
    name = pieces.piece_name(("zh.txt", 4096), 52_113, 1_840)
    assert pieces.parse_piece_name(f"out/_pieces/{name}") == (52_113, 1_840)
    assert pieces.parse_piece_name(f".tmp-1f2e-{name}") is None  # not yet complete
    assert pieces.parse_piece_name("piece-0000000000000000.bin") is None


def test_a_real_job_is_followed_through_its_piece_files(tmp_path, small_ltp_model_dir,
                                                        monkeypatch, caplog):
    monkeypatch.setattr(progress.JobWatch, "INTERVAL", 0.05)
    monkeypatch.setattr(progress.JobWatch, "EVERY", 0.0)
    corpus = write_corpus(tmp_path)
    flags = [f"--input={corpus}", f"--ltp_model={small_ltp_model_dir}", "--dupe_factor=1",
             "--num_shards=2", "--range_mb=0.01"]
    with caplog.at_level(logging.INFO, logger="pipeline.run"):
        run(flags + [f"--output_dir={tmp_path / 'out'}"])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    m = manifest(tmp_path / "out")
    with open(tmp_path / "out" / "stats.json", encoding="utf-8") as f:
        ranges = json.load(f)["counts"]["ranges"]
    final = [line for line in lines if "writing shards" in line]
    assert ranges > 3 and final, lines
    assert f"{m['total_instances']:,} instances from {ranges} ranges" in final[-1]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline.run"):
        run(flags + [f"--output_dir={tmp_path / 'quiet'}", "--quiet"])
    assert not [r for r in caplog.records if r.getMessage().startswith("progress:")]


def test_progress_counts_the_shards_of_every_length_bin(tmp_path, small_ltp_model_dir,
                                                        monkeypatch, caplog):
    monkeypatch.setattr(progress.JobWatch, "INTERVAL", 0.05)
    monkeypatch.setattr(progress.JobWatch, "EVERY", 0.0)
    corpus = write_corpus(tmp_path)
    with caplog.at_level(logging.INFO, logger="pipeline.run"):
        run([f"--input={corpus}", f"--ltp_model={small_ltp_model_dir}", "--dupe_factor=1",
             "--num_shards=2", "--range_mb=0.01", "--length_bins=32,64",
             f"--output_dir={tmp_path / 'out'}"])
    final = [r.getMessage() for r in caplog.records if "writing shards" in r.getMessage()]
    # 3 bins (32, 64, 128) of 2 shards each, not the 2 shards of one unbinned output.
    assert final and all(" of 6 written" in line for line in final), final
