"""Fixtures for the TF2 trainer tests: TFRecord shard dirs written exactly as the pipeline's
contract says (``pipeline.schema``: Instance.padded_features, shard names, manifest keys) with
``tf.io.TFRecordWriter`` + ``tf.train.Example``, so the trainer is tested without the Beam job.

Instances carry a learnable signal so a few steps visibly reduce the loss: in label-0 pairs
(NSP "is next", SOP "in order") B starts with A's first word; masked tokens are drawn from a
small skewed set. Every sentence task can be written: "none" instances are one segment and their
Examples have no ``next_sentence_labels`` (``schema.features("none")``).
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import tensorflow as tf

from pipeline import schema
from pipeline.core.instance import Instance
from tests.trainer.conftest import (  # noqa: F401
    CLS_ID,
    MASK_ID,
    REPO,
    SEP_ID,
    SPECIALS,
    TINY_MODEL,
    check_task_metrics,
    segments,
    shard_entry,
    write_vocab,
)

FIRST_WORD = len(SPECIALS)
# Model shapes of the tests: 2 layers, hidden 32 (vocab comes from the data, 64).
TINY = TINY_MODEL  # tests/trainer/conftest.py: the one tiny model


def make_instance(rng: random.Random, *, vocab_size: int, max_seq_length: int,
                  max_predictions: int, next_sentence: str = "nsp") -> Instance:
    """[CLS] A [SEP] B [SEP] of random words, labels as Google's (0 = B follows A, or A and B
    in order for SOP); [CLS] A [SEP] with label 0 (not written) for "none"."""
    n = rng.randint(12, max_seq_length)
    len_a = rng.randint(4, n - 7)
    body = [rng.randrange(FIRST_WORD, vocab_size) for _ in range(n - 3)]
    tokens, len_a, label = segments(body, len_a, rng.randrange(2), next_sentence, echo=0)
    candidates = [i for i, t in enumerate(tokens) if t not in (CLS_ID, SEP_ID)]
    num = min(max_predictions, max(1, round(len(tokens) * 0.15)))
    positions = sorted(rng.sample(candidates, num))
    ids = []
    for p in positions:  # skewed targets: a unigram model alone beats uniform guessing
        tokens[p] = FIRST_WORD + min(int(rng.expovariate(0.5)), vocab_size - FIRST_WORD - 1)
        ids.append(tokens[p])
        tokens[p] = MASK_ID
    return Instance(input_ids=tokens, num_a=len_a + 2, masked_lm_positions=positions,
                    masked_lm_ids=ids, next_sentence_label=label)


def to_example(inst: Instance, max_seq_length: int, max_predictions: int,
               next_sentence: str = "nsp") -> bytes:
    feats = inst.padded_features(max_seq_length, max_predictions)
    feature = {}
    for name, dtype, _ in schema.features(next_sentence):
        if dtype == "float32":
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=feats[name]))
        else:
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=feats[name]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_data_dir(out_dir: str, instances: list[Instance], *, num_shards: int,
                   max_seq_length: int, max_predictions: int, vocab_size: int,
                   compression: str = "", next_sentence: str = "nsp") -> str:
    """TFRecord shards (round-robin split) + vocab.txt + manifest.json, as the pipeline does."""
    os.makedirs(os.path.join(out_dir, schema.TFRECORD_DIR), exist_ok=True)
    write_vocab(os.path.join(out_dir, schema.VOCAB_FILE), vocab_size)
    entries = []
    options = tf.io.TFRecordOptions(compression_type=compression)
    for s in range(num_shards):
        rel = os.path.join(schema.TFRECORD_DIR, schema.shard_name(s, num_shards, ".tfrecord"))
        mine = instances[s::num_shards]
        with tf.io.TFRecordWriter(os.path.join(out_dir, rel), options) as w:
            for inst in mine:
                w.write(to_example(inst, max_seq_length, max_predictions, next_sentence))
        entries.append(shard_entry(out_dir, rel, len(mine)))
    manifest = {
        "format_version": schema.MANIFEST_FORMAT_VERSION, "max_seq_length": max_seq_length,
        "max_predictions_per_seq": max_predictions, "vocab_size": vocab_size,
        "do_lower_case": True, "vocab_file": schema.VOCAB_FILE, "vocab_sha256": "",
        "total_instances": len(instances), "shards": {"tfrecord": entries, "parquet": []},
        "tfrecord_compression": compression, "next_sentence": next_sentence,
        "config": {"fixture": True},
    }
    with open(os.path.join(out_dir, schema.MANIFEST_FILE), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    return out_dir


def make_data_dir(out_dir: str, *, num_instances: int, num_shards: int, seed: int,
                  max_seq_length: int = 32, max_predictions: int = 5, vocab_size: int = 64,
                  compression: str = "", next_sentence: str = "nsp") -> str:
    rng = random.Random(seed)
    instances = [make_instance(rng, vocab_size=vocab_size, max_seq_length=max_seq_length,
                               max_predictions=max_predictions, next_sentence=next_sentence)
                 for _ in range(num_instances)]
    return write_data_dir(out_dir, instances, num_shards=num_shards,
                          max_seq_length=max_seq_length, max_predictions=max_predictions,
                          vocab_size=vocab_size, compression=compression,
                          next_sentence=next_sentence)


def write_yaml(path: str, values: dict) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{k}: {v}\n" for k, v in values.items()))
    return path


def run_python(code: str, *, timeout: int = 240) -> str:
    """Run ``code`` in a fresh interpreter at the repo root (for logical-device setups, which
    must precede TF's device initialisation); return stdout, raise with stderr on failure."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, timeout=timeout,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


def run_train_tpu(data_dir: str, run_dir: str, *flags: str,
                  timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m trainer.train_tpu`` on ``data_dir`` with the tiny model and the CPU smoke
    settings, 4 steps of batch 4, output in ``run_dir`` (its model YAML beside it), plus
    ``flags``; the finished process, whatever its exit status."""
    model_yaml = write_yaml(os.path.join(os.path.dirname(run_dir), "tiny.yaml"), TINY)
    return subprocess.run(
        [sys.executable, "-m", "trainer.train_tpu", "--data_dir", data_dir, "--model_config",
         model_yaml, "--train_config", "configs/train/cpu-smoke.yaml", "--output_dir", run_dir,
         "--num_train_steps", "4", "--batch_size", "4", *flags],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
        timeout=timeout)


def make_dynamic_dir(out_dir: str, *, docs: int = 60, num_shards: int = 3,
                     max_seq_length: int = 64, max_predictions: int = 10,
                     extra: tuple = ()) -> str:
    """The real pipeline's ``--masking=dynamic`` output (``word_starts``, no masks) of the first
    ``docs`` documents of the People's Daily sample: real whole words from LTP."""
    from pipeline.run import run

    corpus = os.path.join(REPO, "pipeline", "resources", "sample", "peoples_daily_sample.txt")
    with open(corpus, encoding="utf-8") as f:
        chosen = [d for d in f.read().split("\n\n") if d.strip()][:docs]
    os.makedirs(out_dir, exist_ok=True)
    text = os.path.join(out_dir, "corpus.txt")
    with open(text, "w", encoding="utf-8") as f:
        f.write("\n\n".join(chosen) + "\n")
    data_dir = os.path.join(out_dir, "data")
    run([f"--input={text}", f"--output_dir={data_dir}", "--masking=dynamic",
         f"--max_seq_length={max_seq_length}", f"--max_predictions_per_seq={max_predictions}",
         f"--num_shards={num_shards}", "--quiet", *extra])
    return data_dir


def make_binned_dir(out_dir: str, *, sentences: int = 400, length_bins: str | None = "16,32",
                    extra: tuple = ()) -> str:
    """The real pipeline's ``--length_bins`` output (seq 64, 10 predictions, 4 shards, dupe
    factor 2) of short documents: two consecutive sentences of the People's Daily sample each,
    so that the short bins hold enough instances to be drawn. length_bins None: the same
    instances unbinned."""
    from pipeline.run import run
    from tests.realdata import write_short_documents

    os.makedirs(out_dir, exist_ok=True)
    text = write_short_documents(os.path.join(out_dir, "corpus.txt"), sentences)
    data_dir = os.path.join(out_dir, "data")
    bins = [f"--length_bins={length_bins}"] if length_bins else []
    run([f"--input={text}", f"--output_dir={data_dir}", *bins, "--max_seq_length=64",
         "--max_predictions_per_seq=10", "--num_shards=4", "--dupe_factor=2", "--quiet",
         *extra])
    return data_dir
