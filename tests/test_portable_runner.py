"""The portable job API (what Flink, Spark and Dataflow runner v2 use) writes the same bytes.

``--runner=PortableRunner --job_endpoint=embed --environment_type=LOOPBACK`` starts Beam's
in-process job server and runs the SDK harness in this process: the pipeline goes through the
Runner API protos, the Fn API, and the portable GroupByKey/side-input paths, all offline. Its
shards must be byte-identical to DirectRunner's on the same input and flags.
"""
import filecmp
import os

from pipeline.run import run
from tests import realdata


def _corpus(tmp_path):
    with open(realdata.SAMPLE_CORPUS, encoding="utf-8") as f:
        docs = f.read().split("\n\n")
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(docs[:12]), encoding="utf-8")
    return str(path)


def _shards(out):
    return sorted(os.path.join(d, f) for d in ("tfrecord", "parquet")
                  for f in os.listdir(os.path.join(out, d)))


def test_portable_runner_matches_direct_runner(tmp_path, small_ltp_model_dir):
    common = [f"--input={_corpus(tmp_path)}", "--dupe_factor=2", "--num_shards=3",
              "--range_mb=0.002", "--tokenize_batch_size=4", f"--ltp_model={small_ltp_model_dir}"]
    direct = run(common + ["--runner=DirectRunner", f"--output_dir={tmp_path / 'direct'}"])
    portable = run(common + ["--runner=PortableRunner", "--job_endpoint=embed",
                             "--environment_type=LOOPBACK",
                             f"--output_dir={tmp_path / 'portable'}"])
    assert direct["total_instances"] > 0
    assert portable["total_instances"] == direct["total_instances"]
    assert portable["num_shards"] == direct["num_shards"] == 3
    reference = _shards(tmp_path / "direct")
    assert len(reference) == 6  # 3 TFRecord + 3 Parquet shards
    assert _shards(tmp_path / "portable") == reference
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "direct", tmp_path / "portable",
                                               reference, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)
    # The manifests describe the same shards (paths, sizes, checksums, counts).
    assert portable["shards"] == direct["shards"]
