"""The job's own lines by default, third-party noise only with --verbose, only warnings with
--quiet; and the first run says what it builds."""
import logging

import pytest

from pipeline.default_segmenter import cache
from pipeline.default_segmenter.train import HELD_OUT_F1
from pipeline.tools import console
from tests.conftest import run_cli
from tests.realdata import write_corpus


def test_import_noise_is_held_back_and_shown_with_verbose(capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.filters[:], root.level
    try:
        console.hold_import_noise()
        console.setup()
        logging.warning("apitools not found, and bigquery client libraries are not available")
        logging.warning("a warning of our own")
        err = capsys.readouterr().err
        assert "a warning of our own" in err and "apitools" not in err
        console.setup(verbose=True)
        assert "apitools not found" in capsys.readouterr().err
    finally:
        root.handlers[:], root.filters[:] = saved[0], saved[1]
        root.setLevel(saved[2])


def test_beams_worker_noise_is_dropped_and_the_jobs_worker_lines_kept(capsys):
    """Records as DirectRunner's multi_processing mode forwards what its workers log."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    workers = logging.getLogger(console.WORKER_LOGGER)
    beam_line = ('severity: WARN timestamp {   seconds: 1796165624 } message: "Discarding '
                 'unparseable args: [\\\'--input=a.txt\\\']" log_location: "/usr/lib/python3/'
                 'site-packages/apache_beam/options/pipeline_options.py:570" thread: "MainThread"')
    ours = ('severity: WARN timestamp {   seconds: 1796165687 } message: "skipped /data/x.bin: '
            'binary or not UTF-8" instruction_id: "bundle_9" transform_id: "MakeInstances" '
            'log_location: "/work/pipeline/beam/dofns.py:166" thread: "Thread-12"')
    try:
        console.setup()
        workers.warning("Worker: %s", beam_line)
        workers.warning("Worker: %s", ours)
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].endswith(
            "WARNING worker: skipped /data/x.bin: binary or not UTF-8")
        console.setup(verbose=True)
        workers.warning("Worker: %s", beam_line)
        assert "Discarding unparseable args" in capsys.readouterr().err
    finally:
        console.setup()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_the_trainer_prints_nothing_unless_verbose(tmp_path, capfd):
    cache.build_model(tmp_path / "quiet", epochs=1, max_train_paragraphs=200)
    out, err = capfd.readouterr()
    assert "epoch" not in out + err and "precision" not in out + err
    cache.build_model(tmp_path / "verbose", epochs=1, max_train_paragraphs=200,
                      verbose=True)
    out, err = capfd.readouterr()
    assert out == "" and "epoch: 0, precision" in err  # never on stdout: it may be piped


def job_flags(tmp_path, small_ltp_model_dir):
    return [f"--input={write_corpus(tmp_path)}", f"--ltp_model={small_ltp_model_dir}",
            "--dupe_factor=1"]


def test_by_default_only_the_jobs_own_lines(tmp_path, small_ltp_model_dir):
    out, err = run_cli(job_flags(tmp_path, small_ltp_model_dir)
                       + [f"--output_dir={tmp_path / 'a'}"], tmp_path / "cache")
    assert out == ""
    lines = err.splitlines()
    assert "reading 3 file(s)" in lines[0] and "done in" in lines[-1]
    assert not [line for line in lines if " INFO " not in line], err  # no third-party lines


@pytest.mark.slow  # ~20 s: the job twice in fresh processes
def test_verbose_shows_the_noise_and_quiet_shows_nothing(tmp_path, small_ltp_model_dir):
    flags = job_flags(tmp_path, small_ltp_model_dir)
    _, err = run_cli(flags + [f"--output_dir={tmp_path / 'v'}", "--verbose"], tmp_path / "c")
    assert "apitools not found" in err
    out, err = run_cli(flags + [f"--output_dir={tmp_path / 'q'}", "--quiet"], tmp_path / "c")
    assert out == "" and err == ""


@pytest.mark.slow  # builds the default model (~30 s) in an empty cache, as a first run does
def test_the_first_run_says_what_it_builds_and_the_f1_it_claims_holds(first_run, tmp_path):
    from pipeline.core.segment import LtpSegmenter
    from pipeline.default_segmenter.evaluate import evaluate_held_out

    cache_dir, model, out, err = (first_run[k] for k in ("cache", "model", "stdout", "stderr"))
    lines = err.splitlines()
    # The model is built before the output directory is touched, so before "reading ...".
    assert "first run: building the default Chinese word segmenter" in lines[0]
    assert str(model) in lines[1] and f"F1 {HELD_OUT_F1:.3f}" in lines[1]
    assert "default segmenter built in" in lines[2] and "reading 1 file(s)" in lines[3]
    assert "epoch" not in err and "apitools" not in err and out == ""
    assert not [line for line in lines if " INFO " not in line], err
    f1 = evaluate_held_out(LtpSegmenter(str(model)).word_spans)["f1"]
    assert round(f1, 4) == HELD_OUT_F1
    # The second run finds it built and says nothing about it.
    _, err = run_cli([f"--output_dir={tmp_path / 'again'}"], cache_dir)
    assert "building" not in err
