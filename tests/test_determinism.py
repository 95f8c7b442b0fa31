"""Same inputs and flags → byte-identical shards, whatever the runner mode and worker count."""
import filecmp
import os

from pipeline.run import run
from tests import realdata
from tests.conftest import run_cli


def _corpus(tmp_path):
    with open(realdata.SAMPLE_CORPUS, encoding="utf-8") as f:
        docs = f.read().split("\n\n")
    (tmp_path / "part1.txt").write_text("\n\n".join(docs[:12]), encoding="utf-8")
    (tmp_path / "part2.txt").write_text("\n\n".join(docs[12:24]), encoding="utf-8")
    return f"{tmp_path}/part*.txt"


def _shards(out):
    return sorted(os.path.join(d, f) for d in ("tfrecord", "parquet")
                  for f in os.listdir(os.path.join(out, d)))


def test_byte_identical_across_worker_counts_and_modes(tmp_path, small_ltp_model_dir):
    corpus = _corpus(tmp_path)
    common = [f"--input={corpus}", "--dupe_factor=2", "--num_shards=3",
              "--range_mb=0.002", "--tokenize_batch_size=3", f"--ltp_model={small_ltp_model_dir}"]
    runs = {
        "in_memory": ["--direct_running_mode=in_memory"],
        "mp1": ["--direct_running_mode=multi_processing", "--direct_num_workers=1"],
        "mp2": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
    }
    manifests = {}
    for name, flags in runs.items():
        manifests[name] = run(common + flags + [f"--output_dir={tmp_path / name}"])
    # From the command line: a fresh launcher forks its workers (this process may not: threads
    # of earlier jobs run in it, and then Beam starts them).
    _, err = run_cli([*common, *runs["mp2"], f"--output_dir={tmp_path / 'mp2-forked'}"],
                     os.environ["BERT_WWM_CACHE"])
    assert "not forked" not in err
    reference = _shards(tmp_path / "in_memory")
    assert len(reference) == 6
    for name in ("mp1", "mp2", "mp2-forked"):
        assert _shards(tmp_path / name) == reference
        match, mismatch, errors = filecmp.cmpfiles(tmp_path / "in_memory", tmp_path / name,
                                                   reference, shallow=False)
        assert not mismatch and not errors, (name, mismatch, errors)
    # Files were cut into many ranges, so ranges really met different workers and pools.
    import json
    with open(tmp_path / "mp2" / "stats.json", encoding="utf-8") as f:
        counts = json.load(f)["counts"]
    assert counts["ranges"] > 10 and counts["files"] == 2 and counts["documents"] == 24
    assert manifests["mp2"]["total_instances"] > 0


def test_a_different_seed_changes_the_data(tmp_path, small_ltp_model_dir):
    corpus = _corpus(tmp_path)
    model = f"--ltp_model={small_ltp_model_dir}"
    a = run([f"--input={corpus}", "--dupe_factor=1", model, f"--output_dir={tmp_path / 'a'}"])
    b = run([f"--input={corpus}", "--dupe_factor=1", "--random_seed=7", model,
             f"--output_dir={tmp_path / 'b'}"])
    assert a["total_instances"] and b["total_instances"]
    first = a["shards"]["parquet"][0]["path"]
    assert not filecmp.cmp(tmp_path / "a" / first, tmp_path / "b" / first, shallow=False)


def test_output_does_not_depend_on_where_the_corpus_lives(tmp_path, small_ltp_model_dir):
    """Document ids are relative to the inputs' common directory, not absolute paths."""
    (tmp_path / "here").mkdir()
    (tmp_path / "there" / "deeper").mkdir(parents=True)
    _corpus(tmp_path / "here")
    _corpus(tmp_path / "there" / "deeper")
    for where in ("here", "there/deeper"):
        run([f"--input={tmp_path / where}/part*.txt", "--dupe_factor=1", "--num_shards=2",
             f"--ltp_model={small_ltp_model_dir}",
             f"--output_dir={tmp_path / 'out' / where}"])
    shards = _shards(tmp_path / "out" / "here")
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "out" / "here",
                                               tmp_path / "out" / "there/deeper", shards,
                                               shallow=False)
    assert match == shards and not mismatch and not errors


def test_exact_google_draws_path_is_deterministic_and_distinct(tmp_path, small_ltp_model_dir):
    corpus = _corpus(tmp_path)
    common = [f"--input={corpus}", "--dupe_factor=1", "--num_shards=2", "--range_mb=0.005",
              f"--ltp_model={small_ltp_model_dir}"]
    exact = [run(common + ["--exact_google_draws", f"--output_dir={tmp_path / name}"])
             for name in ("exact1", "exact2")]
    default = run(common + [f"--output_dir={tmp_path / 'default'}"])
    shards = _shards(tmp_path / "exact1")
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "exact1", tmp_path / "exact2", shards,
                                               shallow=False)
    assert match == shards and not mismatch and not errors
    assert exact[0]["total_instances"] > 100
    assert abs(exact[0]["total_instances"] / default["total_instances"] - 1) < 0.1
    assert not filecmp.cmp(tmp_path / "exact1" / shards[0], tmp_path / "default" / shards[0],
                           shallow=False)
