"""Nothing lost: what the job may delete under --output_dir (and elsewhere), when, and who may
write there. Every test here failed on the code before these rules (docs/running.md, "Your
files").

Real Beam, LTP (the throw-away model) and tokenizers on small real text.
"""
import gzip
import hashlib
import json
import logging
import os
import subprocess
import sys

import pytest

from pipeline import schema
from pipeline.beam import output_dir
from pipeline.run import run
from tests import realdata
from tests.conftest import REPO


def sample_documents(n, start=0):
    with open(realdata.SAMPLE_CORPUS, encoding="utf-8") as f:
        return f.read().split("\n\n")[start:start + n]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus" / "news.txt"
    path.parent.mkdir()
    path.write_text("\n\n".join(sample_documents(12)) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def job(small_ltp_model_dir, corpus):
    def run_job(out, *flags, input=corpus):
        return run([f"--input={input}", f"--output_dir={out}", "--dupe_factor=1",
                    "--num_shards=2", f"--ltp_model={small_ltp_model_dir}", "--quiet",
                    *flags])
    return run_job


def digests(root):
    """relative path → sha256 of every file below ``root``."""
    found = {}
    for base, _, names in os.walk(root):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return found


def check_complete(out):
    """Every file the manifest lists is there with its size and sha256."""
    manifest = json.loads((out / "manifest.json").read_text())
    for entries in manifest["shards"].values():
        for e in entries:
            data = (out / e["path"]).read_bytes()
            assert len(data) == e["bytes"] and hashlib.sha256(data).hexdigest() == e["sha256"]
    return manifest


# 1. A symbolic link out of the output directory -------------------------------------------

def test_pieces_symlinked_elsewhere_is_refused_and_the_target_untouched(tmp_path, job):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "thesis.tex").write_text("years of work")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(scratch, out / "_pieces")
    for flags in ([], ["--overwrite"]):
        with pytest.raises(output_dir.OutputDirError, match="symbolic link.*--temp_dir"):
            job(out, *flags)
    assert (scratch / "thesis.tex").read_text() == "years of work"


def test_temp_dir_holds_the_pieces_and_only_this_runs_are_deleted(tmp_path, job):
    scratch = tmp_path / "scratch"
    (scratch / "run-20200101-000000-00000000").mkdir(parents=True)
    (scratch / "thesis.tex").write_text("years of work")
    (scratch / "run-20200101-000000-00000000" / "piece-0123456789abcdef-1b-1r.bin").write_bytes(
        b"another run's piece")
    manifest = job(tmp_path / "out", f"--temp_dir={scratch}")
    assert manifest["total_instances"] > 0
    assert sorted(os.listdir(scratch)) == ["run-20200101-000000-00000000", "thesis.tex"]
    assert not (tmp_path / "out" / "_pieces").exists()
    check_complete(tmp_path / "out")


# 2. --overwrite loses nothing when the new run fails ---------------------------------------

def test_refused_flags_leave_the_previous_output(tmp_path, job):
    out = tmp_path / "out"
    job(out)
    before = digests(out)
    with pytest.raises(ValueError, match="masked_lm_prob"):
        job(out, "--overwrite", "--masked_lm_prob=1.5")
    assert digests(out) == before


def test_a_run_failing_midway_leaves_the_previous_output_and_the_users_vocab(
        tmp_path, small_ltp_model_dir, corpus):
    out = tmp_path / "out"
    flags = [f"--output_dir={out}", "--dupe_factor=1", "--num_shards=2", "--quiet",
             f"--ltp_model={small_ltp_model_dir}"]
    run([f"--input={corpus}", *flags])
    # The user's vocabulary lives in the output directory (the job's own copy of it).
    before = digests(out)
    bad = corpus.parent / "broken.txt.gz"
    bad.write_bytes(gzip.compress(("一句。\n" * 20000).encode())[:300])
    with pytest.raises(Exception, match="broken.txt.gz"):
        run([f"--input={corpus.parent}/*", f"--vocab_file={out}/vocab.txt", "--overwrite",
             *flags])
    assert digests(out) == before  # the failed run's pieces and staged shards are gone too
    check_complete(out)
    assert not os.path.exists(output_dir.lock_path(str(out)))


def test_overwrite_swaps_in_the_new_output_at_the_end(tmp_path, job):
    out = tmp_path / "out"
    job(out, "--num_shards=3")
    again = job(out, "--overwrite")
    assert again["num_shards"] == 2 and again["run_id"].startswith("run-")
    assert sorted(os.listdir(out / "tfrecord")) == [
        "part-00000-of-00002.tfrecord", "part-00001-of-00002.tfrecord"]
    assert sorted(os.listdir(out)) == ["manifest.json", "parquet", "stats.json", "tfrecord",
                                       "vocab.txt"]
    check_complete(out)


# 3. --overwrite deletes by what the pipeline wrote, not by directory -----------------------

def test_overwrite_keeps_files_that_are_not_the_pipelines(tmp_path, job, caplog):
    out = tmp_path / "out"
    job(out)
    mine = {"tfrecord/my_own_dataset.tfrecord": b"1", "parquet/thesis_results.parquet": b"2",
            "_pieces/user.txt": b"3", ".tmp-user-keep": b"4", "notes.md": b"5",
            "tfrecord/part-1-of-2.tfrecord": b"6"}
    for rel, data in mine.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    # A manifest edited to list a file outside the output directory: never deleted.
    outside = tmp_path / "outside.txt"
    outside.write_text("not the pipeline's")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["shards"]["parquet"][0]["path"] = "../outside.txt"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="pipeline.beam.output_dir"):
        job(out, "--overwrite", "--num_shards=3")
    for rel, data in mine.items():
        assert (out / rel).read_bytes() == data, rel
    assert outside.read_text() == "not the pipeline's"
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "keeps 6 file(s)" in warned and "tfrecord/my_own_dataset.tfrecord" in warned
    assert not list((out / "tfrecord").glob("part-*-of-00002.tfrecord"))
    check_complete(out)


def test_root_home_and_the_inputs_directory_are_refused(tmp_path, job, corpus, monkeypatch):
    with pytest.raises(output_dir.OutputDirError, match="root directory"):
        job("/", "--overwrite")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(output_dir.OutputDirError, match="home directory"):
        job(home, "--overwrite")
    with pytest.raises(output_dir.OutputDirError, match="holds 1 of the input files"):
        job(corpus.parent, "--overwrite")
    with pytest.raises(output_dir.OutputDirError, match="input files"):
        job(tmp_path, "--overwrite")  # a directory above the input
    assert sorted(os.listdir(corpus.parent)) == ["news.txt"]


def test_exact_names(tmp_path):
    ours = ["manifest.json", "stats.json", "vocab.txt", "tfrecord/part-00000-of-00004.tfrecord",
            "tfrecord/part-00003-of-00004.tfrecord.gz", "parquet/part-00001-of-00002.parquet",
            f"tfrecord/.tmp-{'a' * 32}-part-00000-of-00004.tfrecord", f".tmp-{'0' * 32}-stats.json"]
    temporary = ["_pieces/piece-0123456789abcdef-10b-3r.bin",
                 "_pieces/run-20261206-103000-1a2b3c4d/piece-0123456789abcdef-10b-3r.bin",
                 "_staging/run-20261206-103000-1a2b3c4d/parquet/part-00001-of-00002.parquet"]
    foreign = ["tfrecord/part-0-of-4.tfrecord", "tfrecord/x/part-00000-of-00004.tfrecord",
               "_pieces/user.txt", ".tmp-user-keep", "manifest.json.bak", "a/vocab.txt",
               "_staging/run-x/tfrecord/part-00000-of-00004.tfrecord", "parquet/notes.parquet"]
    assert [output_dir.classify(r) for r in ours] == ["result"] * len(ours)
    assert [output_dir.classify(r) for r in temporary] == ["temporary"] * len(temporary)
    assert [output_dir.classify(r) for r in foreign] == ["foreign"] * len(foreign)
    listed = {"vocab_file": "my-vocab.txt", "shards": {"parquet": [
        {"path": "../escape.parquet"}, {"path": "/etc/passwd"}, {"path": "data/a.parquet"}]}}
    assert output_dir.manifest_files(listed) == ["my-vocab.txt", "data/a.parquet"]
    assert output_dir.classify("data/a.parquet", listed) == "result"


# 4. One job at a time ---------------------------------------------------------------------

def test_a_second_job_is_refused_with_the_first_ones_identity(tmp_path, small_ltp_model_dir):
    """Two real jobs: the first, in another process, holds the lock while it runs."""
    big = tmp_path / "big.txt"
    big.write_text("\n\n".join(sample_documents(200)) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    first = subprocess.Popen(
        [sys.executable, "-m", "pipeline.run", f"--input={big}", f"--output_dir={out}",
         "--dupe_factor=3", "--num_shards=2", f"--ltp_model={small_ltp_model_dir}"],
        cwd=REPO, stderr=subprocess.PIPE, text=True)
    lock = out / schema.LOCK_FILE
    try:
        for _ in range(600):
            if lock.exists() and lock.stat().st_size:
                break
            assert first.poll() is None, first.stderr.read()
            import time
            time.sleep(0.1)
        holder = json.loads(lock.read_text())
        with pytest.raises(output_dir.LockedError, match=holder["run_id"]):
            run([f"--input={big}", f"--output_dir={out}", "--overwrite", "--dupe_factor=1",
                 f"--ltp_model={small_ltp_model_dir}"])
        with pytest.raises(output_dir.LockedError, match="process is running"):
            run([f"--input={big}", f"--output_dir={out}", "--overwrite", "--break_lock",
                 f"--ltp_model={small_ltp_model_dir}"])
    finally:
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert not lock.exists()
    assert check_complete(out)["run_id"] == holder["run_id"]


def test_a_stale_lock_says_how_to_clear_it(tmp_path, job):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = dict(output_dir.lock_record("run-20261206-000000-deadbeef"), pid=dead.pid)
    (out / schema.LOCK_FILE).write_text(json.dumps(record))
    with pytest.raises(output_dir.LockedError, match="stale lock.*--break_lock"):
        job(out)
    manifest = job(out, "--break_lock")
    assert manifest["total_instances"] > 0 and not (out / schema.LOCK_FILE).exists()


def test_pieces_carry_the_run_identity(tmp_path, job):
    out = tmp_path / "out"
    job(out)
    (out / "_pieces" / "run-20200101-000000-00000000").mkdir(parents=True)
    crashed = out / "_pieces" / "run-20200101-000000-00000000" / "piece-0123456789abcdef-9b-1r.bin"
    crashed.write_bytes(b"left by a run that was killed")
    job(out, "--overwrite")
    assert not crashed.exists()  # an earlier run's leftovers go when the next run starts
    layout = output_dir.layout(str(out), "run-20261206-103000-1a2b3c4d")
    assert layout.pieces_dir == f"{out}/_pieces/run-20261206-103000-1a2b3c4d"


# 5. An input that changes while the job reads it ------------------------------------------

def _truncate_after_planning(monkeypatch, victim):
    """The file is cut to a third after the job listed it and planned its ranges (the user's
    copy still running), before its ranges are read."""
    from pipeline.beam import dofns

    plan = dofns.PlanRangesDoFn.process

    def process(self, element):
        ranges = list(plan(self, element))
        if element[0] == str(victim):
            data = victim.read_bytes()
            victim.write_bytes(data[:len(data) // 3])
        yield from ranges

    monkeypatch.setattr(dofns.PlanRangesDoFn, "process", process)


def test_an_input_truncated_while_the_job_runs_fails_it_by_name(tmp_path, job, corpus,
                                                                 monkeypatch):
    _truncate_after_planning(monkeypatch, corpus)
    with pytest.raises(Exception, match="news.txt changed while the job read it"):
        job(tmp_path / "out", "--range_mb=0.01")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_on_input_change_skip_counts_the_skipped_ranges(tmp_path, job, corpus, monkeypatch):
    _truncate_after_planning(monkeypatch, corpus)
    job(tmp_path / "out", "--range_mb=0.01", "--on_input_change=skip")
    counts = json.loads((tmp_path / "out" / "stats.json").read_text())["counts"]
    assert counts["input_ranges_changed"] > 0


# 6. A JSON line nested too deep -----------------------------------------------------------

def test_a_json_line_nested_5000_deep_is_counted_not_fatal(tmp_path, job):
    lines = [json.dumps({"text": doc.replace("\n", "")}) for doc in sample_documents(10)]
    lines.insert(3, "[" * 5000 + "]" * 5000)
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    job(tmp_path / "out", "--input_format=jsonl", input=path)
    counts = json.loads((tmp_path / "out" / "stats.json").read_text())["counts"]
    assert counts["jsonl_bad_lines"] == 1 and counts["documents"] == 10


# 9. Credentials ---------------------------------------------------------------------------

def test_credentials_never_printed_even_with_verbose(tmp_path, small_ltp_model_dir, corpus):
    secret, key_id = "wJalrXUtnFEMI-K7MDENG-SECRET", "AKIA-TEST-KEY-ID"
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.run", f"--input={corpus}", f"--output_dir={out}",
         "--dupe_factor=1", "--num_shards=1", f"--ltp_model={small_ltp_model_dir}",
         f"--s3_secret_access_key={secret}", "--s3_access_key_id", key_id,
         "--s3_session_token=TOKEN-VALUE-123", "--verbose",
         "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Pipeline_options" in done.stderr  # the workers' log that used to carry them
    for value in (secret, key_id, "TOKEN-VALUE-123"):
        assert value not in done.stderr + done.stdout
        for rel in digests(out):
            assert value.encode() not in (out / rel).read_bytes(), rel


def test_redaction_masks_values_and_credential_pairs():
    from pipeline.tools import console

    values = console.secret_values(["--s3_secret_access_key", "S3CRET", "--project=p",
                                    "--s3_session_token=T0KEN"], environ={})
    assert values == {"S3CRET", "T0KEN"}
    text = "{'s3_secret_access_key': 'other', 'project': 'p'} aws_session_token=zzz S3CRET"
    assert console.redact(text, values) == ("{'s3_secret_access_key': '***', 'project': 'p'} "
                                            "aws_session_token=*** ***")


# 10. Shard counts and inputs that reach into outputs --------------------------------------

def test_a_huge_shard_count_is_refused_before_anything_is_created(tmp_path, job):
    with pytest.raises(ValueError, match="--allow_many_shards"):
        job(tmp_path / "out", "--num_shards=100000")
    assert not (tmp_path / "out").exists()


def test_more_shards_than_instances_is_said_before_and_after(tmp_path, job, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.run"):
        manifest = job(tmp_path / "out", "--num_shards=2000")
    said = [r.getMessage() for r in caplog.records]
    assert any("most shards will be empty" in m for m in said)
    empty = 2000 - manifest["total_instances"]
    assert any(f"{empty} of 2000 shards are empty" in m for m in said)


def test_an_input_glob_over_an_earlier_output_reads_only_the_corpus(tmp_path, job, corpus):
    alone = job(tmp_path / "alone")
    data = corpus.parent
    job(data / "earlier")  # an earlier output under the corpus directory
    again = job(tmp_path / "out", input=f"{data}/**")
    assert again["total_instances"] == alone["total_instances"]
    counts = json.loads((tmp_path / "out" / "stats.json").read_text())["counts"]
    assert counts["files"] == 1
