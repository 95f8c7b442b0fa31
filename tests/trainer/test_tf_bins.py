"""Length bins in the TF2 trainer: the chunk schedule (``trainer.bins``, LDDL's rule), one input
pipeline and one compiled program per bin, every chunk of steps_per_execution steps from one
bin, exact resume from per-bin data positions, binned evaluation, and tokens_per_sec /
padding_fraction in metrics.jsonl. Real pipeline output (``--length_bins=16,40``), tiny models."""
import collections
import dataclasses
import json
import re

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from pipeline import schema  # noqa: E402
from pipeline.core.masking import mask_dynamic  # noqa: E402
from tests.trainer import tf_fixtures as fx  # noqa: E402
from trainer import config as cfg  # noqa: E402
from trainer import data_contract, metrics, run_setup  # noqa: E402
from trainer.bins import BIN_SCHEDULE_KEY, BinSchedule, split_steps  # noqa: E402
from trainer.run_setup import Run  # noqa: E402
from trainer.tf2 import loop  # noqa: E402

VOCAB = 21128  # the pipeline's built-in vocabulary (bert-base-chinese)
MODEL = cfg.ModelConfig(vocab_size=VOCAB, **fx.TINY)
# 4 x 2 micro-batches x 3 steps: a chunk reads 24 examples of one bin.
TRAIN = cfg.TrainConfig(batch_size=4, grad_accum=2, steps_per_execution=3, num_train_steps=6,
                        learning_rate=1e-3, warmup_steps=2, log_every=3, checkpoint_every=3,
                        eval_every=3, eval_steps=20, shuffle_buffer=16, mixed_precision="fp32",
                        seed=7)


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    data_dir = fx.make_binned_dir(str(tmp_path_factory.mktemp("tf_bins")), sentences=800,
                                  length_bins="16,40")
    spec = data_contract.load_data_dir(data_dir, MODEL)
    assert [b.bound for b in spec.bins] == [16, 40, 64]
    assert [b.max_predictions_per_seq for b in spec.bins] == [2, 6, 10]
    return spec


def make_trainer(spec, output_dir, *, jit_compile=False, **overrides):
    run = Run(model_config=MODEL, train_config=dataclasses.replace(TRAIN, **overrides),
              data=spec, output_dir=str(output_dir))
    return loop.Trainer(run, tf.distribute.get_strategy(), jit_compile=jit_compile)


def lower_bounds(spec):
    """bin bound -> the bound below it (instances of a bin are longer than that)."""
    bounds = [b.bound for b in spec.bins]
    return dict(zip(bounds, [0] + bounds[:-1]))


# --- the schedule, pure ----------------------------------------------------------------------

def test_the_schedule_draws_each_bin_its_units_per_epoch_without_state():
    """Hand-checkable: units of 8 from bins of 7, 20 and 33 instances: 0, 2 and 4 per epoch."""
    schedule = BinSchedule([16, 32, 64], [7, 20, 33], global_batch=8, seed=3)
    assert (schedule.bounds, schedule.batches, schedule.skipped) == ((32, 64), (2, 4), (16,))
    assert schedule.steps_per_epoch == 6
    orders = [schedule.order(e).tolist() for e in range(20)]
    assert all(collections.Counter(o) == {32: 2, 64: 4} for o in orders)
    assert len({tuple(o) for o in orders}) > 5  # a new permutation per epoch (15 exist)
    # seeded by (seed, epoch) alone: numpy's permutation of the multiset, nothing else
    rng = np.random.default_rng([3, 11, BIN_SCHEDULE_KEY])
    assert orders[11] == rng.permutation([32, 32, 64, 64, 64, 64]).tolist()
    # unit c is (epoch c // 6, position c % 6): a fresh object (another host, a resumed run)
    # answers any unit in any order, the same
    units = [5 * 6 + 3, 0, 5, 6, 119]
    again = BinSchedule([16, 32, 64], [7, 20, 33], global_batch=8, seed=3)
    assert [again.bin_at(c) for c in units] == [orders[5][3], orders[0][0], orders[0][5],
                                                orders[1][0], orders[19][5]]
    other_seed = BinSchedule([16, 32, 64], [7, 20, 33], global_batch=8, seed=4)
    assert [other_seed.order(e).tolist() for e in range(20)] != orders
    with pytest.raises(ValueError, match="no bin holds one global batch"):
        BinSchedule([16], [7], global_batch=8, seed=3).bin_at(0)


def test_eval_steps_are_split_between_bins_in_proportion():
    assert split_steps([8, 44, 269], 1000) == (8, 44, 269)  # all fit
    assert split_steps([8, 44, 269], 20) == (0, 3, 17)  # 0.50, 2.74, 16.76: remainders decide
    assert split_steps([5], 3) == (3,)
    assert sum(split_steps([3, 3, 3], 4)) == 4


def test_a_chunk_is_the_unit_and_a_bin_without_one_is_skipped_loudly(spec, caplog):
    """The TF unit is a chunk: batch x replicas x grad_accum x steps_per_execution examples."""
    with caplog.at_level("WARNING"):
        schedule = loop.bin_schedule(spec, TRAIN, 2, announce=True)  # chunk 4 x 2 x 2 x 3 = 48
    assert schedule.global_batch == 48
    assert schedule.bounds == (40, 64) and schedule.batches == (179 // 48, 1076 // 48)
    assert "length bin 16 holds 35 instances, fewer than one chunk of 48" in caplog.text
    with pytest.raises(run_setup.Refused, match="no length bin holds one chunk of 2400"):
        loop.bin_schedule(spec, dataclasses.replace(TRAIN, steps_per_execution=300), 1)
    assert loop.bin_schedule(dataclasses.replace(spec, bins=()), TRAIN, 1) is None


# --- the input --------------------------------------------------------------------------------

def read_steps(stream, start, stop, accum):
    """The micro-batches of steps [start, stop) as the loop reads them: (step, part, batches)."""
    out = []
    for step in range(start, stop):
        part = stream.part_at(step)
        out.append((step, part, [{k: v.numpy() for k, v in next(stream.iterators[part]).items()}
                                 for _ in range(accum)]))
    return out


def test_every_chunk_reads_one_bin_at_its_shapes(spec, tmp_path):
    """A whole schedule epoch: each step's micro-batches have one bin's shapes and only its
    instances, a chunk's steps share the bin, and each bin is read its units per epoch."""
    trainer = make_trainer(spec, tmp_path)
    stream = trainer.train_input()
    schedule = stream.schedule
    assert schedule.bounds == (16, 40, 64) and schedule.batches == (1, 7, 44)
    assert set(stream.iterators) == {0, 1, 2}
    steps = schedule.steps_per_epoch * TRAIN.steps_per_execution
    lower, preds = lower_bounds(spec), {b.bound: b.max_predictions_per_seq for b in spec.bins}
    chunks = collections.Counter()
    for step, part, batches in read_steps(stream, 0, steps, TRAIN.grad_accum):
        bound = spec.bins[part].bound
        assert part == stream.part_at(step - step % TRAIN.steps_per_execution)
        if step % TRAIN.steps_per_execution == 0:
            chunks[bound] += 1
        for batch in batches:
            assert batch["input_ids"].shape == batch["input_mask"].shape == (4, bound)
            assert batch["masked_lm_positions"].shape == (4, preds[bound])
            lengths = batch["input_mask"].sum(axis=1)
            assert ((lengths > lower[bound]) & (lengths <= bound)).all()
    assert chunks == {16: 1, 40: 7, 64: 44}


def test_a_resumed_input_continues_with_the_same_batches(spec, tmp_path):
    """Stopped mid-chunk after 10 steps (per-bin positions as the loop counts them), a new
    Trainer's input reads what the uninterrupted one reads next."""
    first = make_trainer(spec, tmp_path / "a")
    stream = first.train_input()
    head = read_steps(stream, 0, 10, TRAIN.grad_accum)
    tail = read_steps(stream, 10, 40, TRAIN.grad_accum)
    assert len({part for _, part, _ in head + tail}) >= 2  # the schedule switches bins
    resumed = make_trainer(spec, tmp_path / "b")
    for _, part, batches in head:
        resumed.bin_examples[part].assign_add(len(batches) * 4)
    again = read_steps(resumed.train_input(), 10, 40, TRAIN.grad_accum)
    for (step, part, batches), (step2, part2, batches2) in zip(tail, again):
        assert (step, part) == (step2, part2)
        for a, b in zip(batches, batches2):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])


def test_dynamic_bins_are_masked_at_their_own_predictions_and_stable_indexes(tmp_path):
    """Dynamic binned data: each bin masked with its max_predictions_per_seq, keyed on the
    stable index of the whole data (its files' index offsets): what mask_dynamic gives."""
    data_dir = fx.make_binned_dir(str(tmp_path), sentences=800, length_bins="40",
                                  extra=("--masking=dynamic",))
    spec = data_contract.load_data_dir(data_dir, MODEL)
    assert spec.dynamic and [b.bound for b in spec.bins] == [40, 64]
    parts = loop.eval_input(tf.distribute.get_strategy(), spec, global_batch=4, eval_steps=100,
                            seed=TRAIN.seed)
    assert [p.shape for p in parts] == [(40, 6), (64, 10)]
    for part, b in zip(parts, spec.bins):
        got = {k: v.numpy() for k, v in next(iter(part.dataset)).items()}
        raw_spec = schema.tf_feature_spec(b.bound, b.max_predictions_per_seq,
                                          spec.next_sentence, masking="dynamic")
        files = tf.data.TFRecordDataset(b.paths[schema.TFRECORD_DIR]).batch(4)  # file order
        raw = {k: v.numpy() for k, v in tf.io.parse_example(next(iter(files)), raw_spec).items()}
        index = np.concatenate([offset + np.arange(size) for offset, size in zip(
            b.index_offsets[schema.TFRECORD_DIR], b.sizes[schema.TFRECORD_DIR])])[:4]
        want = mask_dynamic(raw["input_ids"], raw["input_mask"], raw["segment_ids"],
                            raw[schema.WORD_STARTS], index, epoch=0, seed=TRAIN.seed,
                            config=loop.bin_masking(spec, b))
        for key, value in want.items():
            np.testing.assert_array_equal(got[key], value)
    assert spec.bins[1].index_offsets[schema.TFRECORD_DIR][0] > 0


# --- compiled steps ---------------------------------------------------------------------------

def dynamic_dims(hlo: str) -> list:
    return re.findall(r"\w+\[[^\]]*<=\d+[^\]]*\]", hlo)


def test_xla_compiles_one_static_program_per_bin(spec, tmp_path):
    """jit_compile steps (as on a TPU) across two bin shapes: one trace, one program each,
    static [batch, predictions, vocab] logits, no dynamic dimension. (Binned evaluation runs
    the same way, one eval program per bin: the loop tests below evaluate without XLA.)"""
    model = dataclasses.replace(MODEL, num_hidden_layers=1, hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0)
    run = Run(model_config=model, data=spec, output_dir=str(tmp_path),
              train_config=dataclasses.replace(TRAIN, grad_accum=1, steps_per_execution=2))
    trainer = loop.Trainer(run, tf.distribute.get_strategy(), jit_compile=True)
    stream = trainer.train_input()
    for part in (0, 2, 0):  # bins 16 and 64, chunks of 2 steps
        sums = trainer.train_steps(stream.iterators[part], 2, part)
        assert np.isfinite(sums["mlm_loss_sum"]) and sums["num_examples"] == 8
        seq = spec.bins[part].bound
        assert sums["token_slots"] == 8 * seq and 0 < sums["tokens"] <= 8 * seq
    for part in (0, 2):
        shape = trainer.part_shape(part)
        step = trainer.compiled("train", shape)
        assert step.experimental_get_tracing_count() == 1
        assert trainer.compiled("train_chunk", shape).experimental_get_tracing_count() == 1
        hlo = step.experimental_get_compiler_ir(next(stream.iterators[part]))(stage="hlo")
        assert f"f32[4,{shape[1]},{VOCAB}]" in hlo and f"s32[4,{shape[0]}]" in hlo
        assert dynamic_dims(hlo) == []
    assert int(trainer.data_examples.numpy()) == 24
    assert [int(v.numpy()) for v in trainer.bin_examples] == [16, 0, 8]


# --- the loop ---------------------------------------------------------------------------------

def resume_seed(spec, chunks=3):
    """A seed whose first chunks (of TRAIN's loop run below) read more than one bin."""
    for seed in range(100):
        schedule = loop.bin_schedule(spec, dataclasses.replace(TRAIN, seed=seed, grad_accum=1,
                                                               steps_per_execution=2), 1)
        if len({schedule.bin_at(c) for c in range(chunks)}) > 1:
            return seed
    raise AssertionError("no seed")


def _fit(spec, output_dir, seed, **kwargs):
    train = dataclasses.replace(TRAIN, seed=seed, grad_accum=1, steps_per_execution=2)
    run = Run(model_config=MODEL, train_config=train, data=spec, output_dir=str(output_dir),
              **kwargs)
    return loop.fit(run, tf.distribute.get_strategy())


def test_a_binned_run_resumes_exactly_and_reports_its_tokens(spec, tmp_path):
    """6 steps in chunks of 2 straight, vs stopped at step 3 (mid-chunk) and resumed: the same
    weights and per-bin positions. Each train line's tokens and padding are those of the
    batches its steps read (replayed from a fresh input). (No held-out data: each evaluated
    shape costs a trace; the CLI test below evaluates on bins.)"""
    seed = resume_seed(spec)
    straight = _fit(spec, tmp_path / "straight", seed)
    stopped = _fit(spec, tmp_path / "resumed", seed, stop_at_step=3)
    assert stopped.step == 3
    resumed = _fit(spec, tmp_path / "resumed", seed)
    assert straight.step == resumed.step == 6
    positions = [[int(v.numpy()) for v in r.trainer.bin_examples] for r in (straight, resumed)]
    assert positions[0] == positions[1] and sum(positions[0]) == 6 * 4
    assert len([n for n in positions[0] if n]) > 1
    for a, b in zip(straight.trainer.model.trainable_variables,
                    resumed.trainer.model.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    lines = metrics.read(str(tmp_path / "straight" / metrics.METRICS_FILE))
    assert [(x["split"], x["step"]) for x in lines] == [("train", 3), ("train", 6)]
    assert list(lines[0]) == ["split", "step", *metrics.train_keys("nsp", tokens=True)]
    fresh = make_trainer(spec, tmp_path / "replay", seed=seed, grad_accum=1,
                         steps_per_execution=2)
    replay = read_steps(fresh.train_input(), 0, 6, 1)
    for line, window in ((lines[0], replay[:3]), (lines[1], replay[3:])):
        masks = [batch["input_mask"] for _, _, batches in window for batch in batches]
        tokens, slots = sum(m.sum() for m in masks), sum(m.size for m in masks)
        assert line["padding_fraction"] == pytest.approx(1 - tokens / slots, rel=1e-6)
        seconds = line["examples"] / line["examples_per_sec"]
        assert line["tokens_per_sec"] * seconds == pytest.approx(tokens, rel=1e-5)
    resumed_lines = metrics.read(str(tmp_path / "resumed" / metrics.METRICS_FILE))
    assert resumed_lines[1]["padding_fraction"] == pytest.approx(lines[1]["padding_fraction"])
    assert resumed_lines[1]["loss"] == pytest.approx(lines[1]["loss"], rel=1e-5)


def test_the_cli_trains_on_binned_data_and_reports_tokens(spec, tmp_path):
    proc = fx.run_train_tpu(spec.data_dir, str(tmp_path / "run"), "--eval_data_dir",
                            spec.data_dir, "--steps_per_execution", "2", "--log_every", "2",
                            "--eval_every", "4", "--eval_steps", "20", "--shuffle_buffer", "16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "length bins 16,40,64: 4,22,134 chunks of 2 steps" in proc.stderr
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    # eval_steps 20 split over the bins' 8, 44 and 269 full batches: 0, 3 and 17
    assert summary["step"] == 4 and summary["eval"]["examples"] == 20 * 4
    lines = metrics.read(str(tmp_path / "run" / metrics.METRICS_FILE))
    assert [(x["split"], x["step"]) for x in lines] == [("train", 2), ("train", 4), ("eval", 4)]
    for line in lines[:2]:
        assert tuple(line)[-2:] == metrics.TOKEN_KEYS
        assert line["tokens_per_sec"] > 0 and 0 <= line["padding_fraction"] < 1
    assert summary["train"] == {k: v for k, v in lines[1].items() if k not in ("split", "step")}


def test_compile_flag_runs_the_xla_steps_per_bin(spec, tmp_path):
    """``--compile``: the TF trainer's steps compiled by XLA on this CPU, one program per bin
    shape drawn (the flag's meaning for TF; test_tf_xla.py checks the programs themselves)."""
    proc = fx.run_train_tpu(spec.data_dir, str(tmp_path / "run"), "--log_every", "2",
                            "--eval_every", "100", "--shuffle_buffer", "16", "--compile",
                            timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "steps compiled by XLA (jit_compile)" in proc.stderr
    assert json.loads(proc.stdout[proc.stdout.index("{"):])["step"] == 4
