"""Dynamic whole-word masking in the TF2 input pipeline, on the real pipeline's
``--masking=dynamic`` output: a record's mask is a function of (seed, epoch, its stable index)
alone (the same for 1, 2 or 4 input pipelines, after a resume, and equal to
``mask_dynamic`` called directly), a new one every epoch, whole words only; the batches are
static data's features, the XLA-compiled step runs on them, and the CLI trains on them."""
import json
import re

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from pipeline import schema  # noqa: E402
from pipeline.core.masking import mask_dynamic  # noqa: E402
from tests.trainer import tf_fixtures as fx  # noqa: E402
from trainer import config as cfg  # noqa: E402
from trainer import data_contract, metrics  # noqa: E402
from trainer.run_setup import Run  # noqa: E402
from trainer.tf2 import data as tfdata  # noqa: E402
from trainer.tf2 import loop  # noqa: E402

SEQ, PREDS, SEED = 64, 10, 7
VOCAB = 21128  # the pipeline's built-in vocabulary (bert-base-chinese)


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    data_dir = fx.make_dynamic_dir(str(tmp_path_factory.mktemp("tf_dynamic")), docs=40,
                                   num_shards=3, max_seq_length=SEQ, max_predictions=PREDS)
    spec = data_contract.load_data_dir(data_dir, cfg.ModelConfig(vocab_size=VOCAB, **fx.TINY))
    assert spec.dynamic and spec.masking.whole_word
    return spec


def _shards(spec, **kwargs):
    return tfdata.host_shards(spec.paths(schema.TFRECORD_DIR), spec.sizes(schema.TFRECORD_DIR),
                              **kwargs)


@pytest.fixture(scope="module")
def raw(spec):
    """Every record unmasked, in stable-index order (shards in manifest order), as arrays."""
    feature_spec = schema.tf_feature_spec(SEQ, PREDS, spec.next_sentence, masking="dynamic")
    ds = tf.data.TFRecordDataset(spec.paths(schema.TFRECORD_DIR)).batch(10_000).map(
        lambda s: tf.io.parse_example(s, feature_spec))
    out = {k: v.numpy() for k, v in next(iter(ds)).items()}
    assert len(out["input_ids"]) == spec.manifest["total_instances"]
    return out


def _key(input_ids):
    return tuple(int(t) for t in input_ids)


@pytest.fixture(scope="module")
def by_key(raw):
    """Unmasked input_ids -> stable index (the instances are distinct, so it identifies them)."""
    keys = {_key(ids): i for i, ids in enumerate(raw["input_ids"])}
    assert len(keys) == len(raw["input_ids"])
    return keys


def _rows(ds, n_rows):
    """The first n_rows rows of ``ds`` as (stable index found from the unmasked ids, masked
    features of the row)."""
    rows = []
    for batch in ds:
        b = {k: v.numpy() for k, v in batch.items()}
        for r in range(len(b["input_ids"])):
            rows.append({k: v[r] for k, v in b.items()})
        if len(rows) >= n_rows:
            return rows[:n_rows]
    return rows


def _unmasked(row):
    ids = row["input_ids"].copy()
    real = row["masked_lm_weights"] > 0
    ids[row["masked_lm_positions"][real]] = row["masked_lm_ids"][real]
    return ids


MASKED = ("input_ids", "masked_lm_positions", "masked_lm_ids", "masked_lm_weights")


def _check_against_reference(rows, by_key, expected):
    """Every row is its instance masked exactly as mask_dynamic masks it."""
    seen = []
    for row in rows:
        i = by_key[_key(_unmasked(row))]
        seen.append(i)
        for name in MASKED:
            np.testing.assert_array_equal(row[name], expected[name][i], err_msg=name)
    return seen


@pytest.fixture(scope="module")
def reference(spec, raw):
    """Epoch -> mask_dynamic called directly on all records with their stable indexes."""
    index = np.arange(len(raw["input_ids"]))
    return {e: mask_dynamic(raw["input_ids"], raw["input_mask"], raw["segment_ids"],
                            raw[schema.WORD_STARTS], index, epoch=e, seed=SEED,
                            config=spec.masking)
            for e in (0, 1)}


def _train(shards, spec, *, batch_size, start_example=0):
    return tfdata.train_dataset(shards, batch_size=batch_size, max_seq_length=SEQ,
                                max_predictions_per_seq=PREDS, seed=SEED, shuffle_buffer=64,
                                start_example=start_example, next_sentence=spec.next_sentence,
                                masking=spec.masking)


def test_each_hosts_files_keep_their_manifest_index_offsets(spec):
    offsets = dict(zip(spec.paths(schema.TFRECORD_DIR), spec.index_offsets(schema.TFRECORD_DIR)))
    for pipelines in (1, 2, 4):
        for host in range(pipelines):
            shards = _shards(spec, num_pipelines=pipelines, pipeline_id=host)
            assert shards.index_offsets == [offsets[f] for f in shards.files]


def test_batches_are_static_datas_features_int32_with_static_shapes(spec):
    ds = _train(_shards(spec), spec, batch_size=4)
    expected = {"input_ids": ([4, SEQ], tf.int32), "input_mask": ([4, SEQ], tf.int32),
                "segment_ids": ([4, SEQ], tf.int32),
                "masked_lm_positions": ([4, PREDS], tf.int32),
                "masked_lm_ids": ([4, PREDS], tf.int32),
                "masked_lm_weights": ([4, PREDS], tf.float32),
                "next_sentence_labels": ([4, 1], tf.int32)}
    assert {k: (v.shape.as_list(), v.dtype) for k, v in ds.element_spec.items()} == expected
    batch = next(iter(ds))
    assert batch["masked_lm_weights"].numpy().sum() > 0
    assert set(np.unique(batch["masked_lm_weights"].numpy())) <= {0.0, 1.0}


def test_an_instances_mask_depends_on_seed_epoch_and_index_only(spec, by_key, reference):
    """1 pipeline (batch 7) vs 2 (by file) vs 4 (more hosts than files: record striding), two
    epochs each: every row is mask_dynamic(seed, epoch, stable index) of its instance, every
    instance is seen once per epoch, and epoch 1 masks differ from epoch 0's. Batches straddle
    the epoch boundary (epoch sizes are not multiples of the batch sizes)."""
    total = spec.manifest["total_instances"]
    for pipelines, batch in ((1, 7), (2, 5), (4, 4)):
        seen = {0: [], 1: []}
        for host in range(pipelines):
            shards = _shards(spec, num_pipelines=pipelines, pipeline_id=host)
            n = shards.epoch_size
            assert n % batch
            rows = _rows(_train(shards, spec, batch_size=batch), 2 * n)
            for epoch in (0, 1):
                seen[epoch] += _check_against_reference(rows[epoch * n:(epoch + 1) * n], by_key,
                                                        reference[epoch])
        for epoch in (0, 1):
            assert sorted(seen[epoch]) == list(range(total)), (pipelines, epoch)
    changed = [not np.array_equal(reference[0]["masked_lm_positions"][i],
                                  reference[1]["masked_lm_positions"][i]) for i in range(total)]
    assert np.mean(changed) > 0.9


@pytest.mark.parametrize("start", [13, 200, 431])
def test_resume_gives_the_same_rows_and_masks(spec, start):
    """Rebuilt at N examples (inside epoch 0, and inside epoch 1 of host 0 of 2), the stream is
    the uninterrupted one from N on, masks included."""
    shards = _shards(spec, num_pipelines=2, pipeline_id=0)
    assert 200 < shards.epoch_size < 431 < 480 < 2 * shards.epoch_size
    full = _rows(_train(shards, spec, batch_size=6), 480)
    resumed = _rows(_train(shards, spec, batch_size=6, start_example=start), 480 - start)
    for a, b in zip(full[start:], resumed, strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _groups(row, word_starts, sep_id):
    """The whole-word groups of a row: runs starting at word_starts=1 and going on over real
    tokens with word_starts=0 that are not [SEP]."""
    groups, current, ids = [], None, _unmasked(row)
    for p in range(SEQ):
        if word_starts[p]:
            current = [p]
            groups.append(current)
        elif current is not None and row["input_mask"][p] and ids[p] != sep_id:
            current.append(p)
        else:
            current = None
    return groups


def test_masked_groups_are_whole_words(spec, raw, by_key):
    vocab = open(spec.vocab_file, encoding="utf-8").read().split("\n")
    sep_id = vocab.index(schema.SEP)
    rows = _rows(_train(_shards(spec), spec, batch_size=16), 320)
    multi = 0
    for row in rows:
        i = by_key[_key(_unmasked(row))]
        masked = set(row["masked_lm_positions"][row["masked_lm_weights"] > 0].tolist())
        assert masked
        for group in _groups(row, raw[schema.WORD_STARTS][i], sep_id):
            assert masked.isdisjoint(group) or masked.issuperset(group), (i, group, masked)
            multi += len(group) > 1 and masked.issuperset(group)
        assert all(raw[schema.WORD_STARTS][i][p] or p - 1 in masked for p in masked)
    assert multi > 100  # Chinese words of several characters are masked whole


def test_held_out_data_is_masked_as_epoch_0_at_every_evaluation(spec, by_key, reference):
    shards = _shards(spec)
    ds = tfdata.eval_dataset(shards, batch_size=8, max_seq_length=SEQ,
                             max_predictions_per_seq=PREDS, next_sentence=spec.next_sentence,
                             masking=spec.masking, seed=SEED)
    first, again = _rows(ds, 10_000), _rows(ds, 10_000)
    assert len(first) == shards.epoch_size // 8 * 8
    assert _check_against_reference(first, by_key, reference[0]) == list(range(len(first)))
    _check_against_reference(again, by_key, reference[0])


# One layer (XLA's compile time grows with layers); the plain-vs-XLA equality is
# test_tf_xla.py's, on static data: the step is the same, only its input differs here.
XLA_MODEL = cfg.ModelConfig(vocab_size=VOCAB, **{**fx.TINY, "num_hidden_layers": 1})
XLA_TRAIN = cfg.TrainConfig(batch_size=4, num_train_steps=10, warmup_steps=1,
                            learning_rate=1e-2, eval_steps=2, shuffle_buffer=16,
                            mixed_precision="fp32", seed=SEED)


def test_xla_compiled_steps_run_on_dynamic_batches(spec, tmp_path):
    """The train and eval steps compile with XLA (as on a TPU) on dynamically masked batches:
    static shapes only, finite losses."""
    run = Run(model_config=XLA_MODEL, train_config=XLA_TRAIN, data=spec,
              output_dir=str(tmp_path))
    trainer = loop.Trainer(run, tf.distribute.get_strategy(), jit_compile=True)
    batches = iter(trainer.train_dataset())
    for _ in range(2):
        assert np.isfinite(trainer.train_steps(batches, 1)["mlm_loss_sum"])
    evaluation = trainer.evaluate(trainer.eval_input(spec))
    assert evaluation["examples"] == 8 and np.isfinite(evaluation["loss"])
    hlo = trainer.replica_step.experimental_get_compiler_ir(next(batches))(stage="hlo")
    assert f"f32[4,{PREDS},{VOCAB}]" in hlo
    assert re.findall(r"\w+\[[^\]]*<=\d+[^\]]*\]", hlo) == []  # no bounded-dynamic dims


def test_cli_trains_and_evaluates_on_dynamic_data(spec, tmp_path):
    proc = fx.run_train_tpu(spec.data_dir, str(tmp_path / "run"), "--eval_data_dir",
                            spec.data_dir, "--log_every", "2", "--eval_every", "4",
                            "--eval_steps", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["step"] == 4 and summary["eval"]["examples"] == 8
    lines = metrics.read(str(tmp_path / "run" / "metrics.jsonl"))
    assert [(x["split"], x["step"]) for x in lines] == [("train", 2), ("train", 4), ("eval", 4)]
    assert all(np.isfinite(x["loss"]) for x in lines)
