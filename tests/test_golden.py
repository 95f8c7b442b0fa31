"""Golden output: a small fixed corpus whose shards are checked in as sha256 digests.

Determinism tests compare runs with each other; this one compares with bytes recorded once, so
an accidental change to the output (a draw order, a feature's encoding, a shard's order) is
caught. Changing ``tests/golden/shards.json`` is a deliberate act: regenerate it with
``UPDATE_GOLDEN=1 python -m pytest -q tests/test_golden.py`` and say why in the commit.

TFRecord shards are hashed as files (their bytes are all ours). Parquet shards are hashed by
content (every row, every column, in order), because the file bytes also carry the pyarrow
version that wrote them.
"""
import hashlib
import json
import os

import pytest

from pipeline.run import run
from tests.realdata import write_corpus

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "shards.json")
VARIANTS = {
    "default": [],
    "exact_google_draws": ["--exact_google_draws"],
    "no_whole_word_mask": ["--do_whole_word_mask=false"],
}


def digests(out) -> dict:
    import pyarrow.parquet as pq

    result = {}
    for name in sorted(os.listdir(out / "tfrecord")):
        with open(out / "tfrecord" / name, "rb") as f:
            result[f"tfrecord/{name}"] = hashlib.sha256(f.read()).hexdigest()
    for name in sorted(os.listdir(out / "parquet")):
        rows = pq.read_table(out / "parquet" / name).to_pylist()
        blob = json.dumps(rows, sort_keys=True).encode("utf-8")
        result[f"parquet/{name}"] = hashlib.sha256(blob).hexdigest()
    return result


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, small_ltp_model_dir):
    root = tmp_path_factory.mktemp("golden")
    corpus = write_corpus(root)
    made = {}
    for name, flags in VARIANTS.items():
        out = root / f"out-{name}"
        run([f"--input={corpus}", f"--output_dir={out}", f"--ltp_model={small_ltp_model_dir}",
             "--dupe_factor=2", "--num_shards=2", "--range_mb=0.004",
             "--tokenize_batch_size=5"] + flags)
        made[name] = digests(out)
    return made


def test_shards_match_the_checked_in_digests(outputs):
    if os.environ.get("UPDATE_GOLDEN"):
        with open(GOLDEN, "w", encoding="utf-8") as f:
            json.dump(outputs, f, indent=2, sort_keys=True)
            f.write("\n")
    with open(GOLDEN, encoding="utf-8") as f:
        golden = json.load(f)
    assert set(golden) == set(VARIANTS)
    for name in VARIANTS:
        assert outputs[name] == golden[name], (
            f"{name}: the shards changed. If on purpose, regenerate {GOLDEN} "
            "(see this module's docstring) and say why in the commit")
