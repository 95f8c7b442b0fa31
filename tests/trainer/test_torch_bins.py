"""Length bins in the PyTorch trainer: the bin schedule (LDDL's rule), one stream and one set
of cursors per bin, the same bins on every rank, exact resume, binned evaluation, and the
token metrics of metrics.jsonl. Real pipeline output (``binned_shards``: the same instances
binned and unbinned), tiny models."""
import collections
import copy
import os
import subprocess
import sys

import pytest
import torch

from tests.realdata import write_short_documents
from tests.trainer.conftest import TINY_MODEL
from trainer import data_contract, metrics
from trainer.bins import BinSchedule, split_steps
from trainer.config import ModelConfig, TrainConfig
from trainer.pt import checkpoint, loop
from trainer.pt.data import BinnedCursorTracker, CursorTracker, tracker_from_state
from trainer.pt.dist import DistContext
from trainer.train_torch import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(REPO, "configs", "train", "cpu-smoke.yaml")
SEED = 12345


def spec_of(data_dir: str) -> data_contract.DataSpec:
    model = data_contract.resolve_model_config(ModelConfig(**TINY_MODEL),
                                               data_contract.read_manifest(data_dir))
    return data_contract.load_data_dir(data_dir, model)


def args(data_dir, model_yaml, out, *extra):
    return ["--data_dir", data_dir, "--model_config", model_yaml, "--train_config", SMOKE,
            "--output_dir", str(out), "--num_train_steps", "8", "--batch_size", "4",
            "--checkpoint_every", "100", "--log_every", "2", "--shuffle_buffer", "16",
            "--num_workers", "2", "--seed", str(SEED), *extra]


def test_the_schedule_draws_each_bin_its_batches_per_epoch_without_state(binned_shards):
    spec = spec_of(binned_shards["binned"])
    bounds, instances = [b.bound for b in spec.bins], [b.instances for b in spec.bins]
    assert bounds == [16, 40, 56, 64]
    schedule = BinSchedule(bounds, instances, global_batch=8, seed=3)
    per_epoch = {b: n // 8 for b, n in zip(bounds, instances)}
    assert schedule.steps_per_epoch == sum(per_epoch.values())
    orders = [schedule.order(e).tolist() for e in range(3)]
    for order in orders:
        assert collections.Counter(order) == per_epoch  # floor(instances / global batch) each
    assert orders[0] != orders[1] != orders[2]
    # Step t is (epoch t // S, position t % S): a fresh object (another rank, a resumed run)
    # answers any step in any order, the same.
    again = BinSchedule(bounds, instances, global_batch=8, seed=3)
    steps = [5 * schedule.steps_per_epoch + 3, 0, schedule.steps_per_epoch - 1,
             schedule.steps_per_epoch]
    expected = [int(schedule.order(5)[3]), orders[0][0], orders[0][-1], orders[1][0]]
    assert [again.bin_at(t) for t in steps] == [schedule.bin_at(t) for t in steps] == expected
    # The schedule depends on the global batch, not on the rank.
    config = TrainConfig(batch_size=2, grad_accum=2, seed=3)
    for rank in range(2):
        ranked = loop.bin_schedule(spec, config, DistContext(rank=rank, world_size=2))
        assert ranked.order(4).tolist() == schedule.order(4).tolist()
    # A bin with fewer instances than one global batch is never drawn.
    assert instances[0] < 64 <= min(instances[1:])
    wide = BinSchedule(bounds, instances, global_batch=64, seed=3)
    assert wide.skipped == (16,) and 16 not in wide.order(0).tolist()


def test_a_bin_without_a_global_batch_is_skipped_loudly_and_none_is_refused(binned_shards,
                                                                            tiny_model_yaml,
                                                                            tmp_path, caplog):
    spec = spec_of(binned_shards["binned"])
    with caplog.at_level("WARNING"):
        schedule = loop.bin_schedule(spec, TrainConfig(batch_size=32),
                                     DistContext(rank=0, world_size=2))
    assert schedule.bounds == (40, 56, 64)
    assert (f"length bin 16 holds {spec.bins[0].instances} instances, fewer than one global "
            "batch of 64: it is never drawn") in caplog.text
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match="no length bin holds one global batch of 4000"):
        train(args(binned_shards["binned"], tiny_model_yaml, out, "--batch_size", "1000",
                   "--grad_accum", "4"))
    assert not out.exists()


def read_steps(spec, config, ctx, tracker, schedule, *, start, steps, keep=None):
    """``steps`` updates' micro-batches as the loop reads them (tracker updated per batch);
    keep: {step: tracker state} snapshots after those steps."""
    batches = loop.train_batches(spec, config, ctx, tracker, schedule=schedule,
                                 start_step=start)
    out = []
    for step in range(start, start + steps):
        for _ in range(config.grad_accum):
            out.append(next(batches))
            tracker.update(out[-1])
        if keep is not None and step + 1 in keep:
            keep[step + 1] = copy.deepcopy(tracker.state_dict())
    return out


@pytest.mark.parametrize("world, workers", [(2, 0), (1, 2)])
def test_every_batch_is_one_bins_on_every_rank_and_a_resume_continues_exactly(binned_shards,
                                                                              world, workers):
    """Each update's micro-batches are padded to the bound (and predictions) of the bin the
    schedule names, hold only that bin's instances, and are the same bin on every rank; a
    stream rebuilt from the tracker's state after 17 updates reads what the uninterrupted one
    read (each bin's readers rotated by its own batch count)."""
    spec = spec_of(binned_shards["binned"])
    bins = {b.bound: b for b in spec.bins}
    lower = dict(zip([16, 40, 56, 64], [0, 16, 40, 56]))
    config = TrainConfig(batch_size=4, grad_accum=2, seed=5, shuffle_buffer=16,
                         num_workers=workers)
    steps, split = 40, 17
    drawn = []
    for rank in range(world):
        ctx = DistContext(rank=rank, world_size=world)
        schedule = loop.bin_schedule(spec, config, ctx)
        keep = {split: None}
        full = read_steps(spec, config, ctx, BinnedCursorTracker(), schedule, start=0,
                          steps=steps, keep=keep)
        for i, batch in enumerate(full):
            bound = schedule.bin_at(i // config.grad_accum)
            assert int(batch["cursor_bin"]) == bound
            assert batch["input_ids"].shape == batch["labels"].shape == (4, bound)
            assert batch["masked_lm_ids"].shape == (4, bins[bound].max_predictions_per_seq)
            lengths = batch["attention_mask"].sum(1)
            assert ((lengths > lower[bound]) & (lengths <= bound)).all()
        drawn.append([int(b["cursor_bin"]) for b in full])
        resumed = tracker_from_state(keep[split])
        assert isinstance(resumed, BinnedCursorTracker)
        rest = read_steps(spec, config, ctx, resumed, schedule, start=split,
                          steps=steps - split)
        assert len(rest) == len(full[split * config.grad_accum:])
        for a, b in zip(full[split * config.grad_accum:], rest):
            assert a.keys() == b.keys()
            for name in a:
                assert torch.equal(a[name], b[name]), name
    assert all(d == drawn[0] for d in drawn)  # every rank the same bin, every step
    assert len(set(drawn[0])) >= 3


def test_checkpoint_data_state_of_unbinned_runs_still_loads():
    """The state every checkpoint before length bins holds: one stream's cursors."""
    state = {"cursors": {"0": [0, 32], "1": [1, 4]}, "batches": 8}
    tracker = tracker_from_state(state)
    assert isinstance(tracker, CursorTracker)
    assert tracker.cursors == {0: (0, 32), 1: (1, 4)} and tracker.state_dict() == state
    binned = BinnedCursorTracker({64: tracker})
    assert tracker_from_state(binned.state_dict()).state_dict() == binned.state_dict() == {
        "bins": {"64": state}}


def test_eval_steps_are_split_over_the_bins_in_proportion():
    assert split_steps([8, 40, 589], 1000) == (8, 40, 589)  # one pass: all
    assert split_steps([8, 40, 589], 10) == (0, 1, 9)
    assert split_steps([3, 3, 3], 4) == (2, 1, 1)
    assert sum(split_steps([5, 0, 17, 2], 7)) == 7


@pytest.fixture(scope="module")
def binned_run(binned_shards, tmp_path_factory):
    """8 updates of batch 4 on binned data (2 DataLoader workers per bin), evaluated on the
    binned data at step 8."""
    out = tmp_path_factory.mktemp("binned_run")
    model_yaml = out / "tiny.yaml"
    model_yaml.write_text("".join(f"{k}: {v}\n" for k, v in TINY_MODEL.items()))
    data = binned_shards["binned"]
    summary = train(args(data, str(model_yaml), out, "--eval_data_dir", data, "--eval_every",
                         "8", "--eval_steps", "6"))
    return out, str(model_yaml), summary


def test_a_binned_run_reports_tokens_and_padding_of_its_bins(binned_run, binned_shards):
    out, _, summary = binned_run
    spec = spec_of(binned_shards["binned"])
    config = TrainConfig(batch_size=4, seed=SEED, eval_steps=6)
    schedule = loop.bin_schedule(spec, config, DistContext())
    assert len({schedule.bin_at(t) for t in range(8)}) >= 2  # the run crosses bins
    lines = metrics.read(str(out / metrics.METRICS_FILE))
    assert [(x["split"], x["step"]) for x in lines] == [
        ("train", 2), ("train", 4), ("train", 6), ("train", 8), ("eval", 8)]
    for line in lines[:4]:
        assert list(line) == ["split", "step", *metrics.train_keys("nsp", tokens=True)]
        assert line["tokens_per_sec"] > 0 and 0 <= line["padding_fraction"] < 1
        # Slots are the bins' bounds: padding counted against each batch's own length.
        slots = sum(4 * schedule.bin_at(t) for t in range(line["step"] - 2, line["step"]))
        tokens = line["tokens_per_sec"] / line["examples_per_sec"] * line["examples"]
        assert line["padding_fraction"] == pytest.approx(1 - tokens / slots, abs=1e-9)
    assert summary["train"]["padding_fraction"] == lines[3]["padding_fraction"]
    # Held-out binned data: eval_steps split over the bins, each bin's batches in turn.
    steps = loop.eval_batches(spec, config, DistContext())
    assert sum(steps) == 6 and len(steps) == 4
    assert lines[4]["examples"] == 4 * 6 == summary["eval"]["examples"]


def test_a_binned_run_resumes_exactly(binned_run, binned_shards, tmp_path):
    """Stop after 3 updates, rerun to 8: the uninterrupted run's weights and every bin's
    cursors (binned data's checkpoints hold one tracker per bin)."""
    straight, model_yaml, _ = binned_run
    data = binned_shards["binned"]
    out = tmp_path / "resumed"
    assert train(args(data, model_yaml, out, "--stop_at_step", "3"))["step"] == 3
    assert train(args(data, model_yaml, out))["step"] == 8

    def state(o, name):
        return torch.load(os.path.join(checkpoint.latest_checkpoint(str(o)), name),
                          weights_only=False)

    for name, tensor in state(straight, "state.pt")["model"].items():
        assert torch.equal(tensor, state(out, "state.pt")["model"][name]), name
    cursors = state(straight, "rank-00000.pt")["data"]
    assert cursors == state(out, "rank-00000.pt")["data"]
    schedule = loop.bin_schedule(spec_of(data), TrainConfig(batch_size=4, seed=SEED),
                                 DistContext())
    counts = collections.Counter(schedule.bin_at(t) for t in range(8))
    assert {int(b): s["batches"] for b, s in cursors["bins"].items()} == {
        b: counts[b] for b in schedule.bounds}  # every drawable bin, drawn or not yet
    assert [x["step"] for x in metrics.read(str(out / metrics.METRICS_FILE))] == [2, 3, 4, 6, 8]


@pytest.mark.slow
def test_padding_fraction_is_lower_binned_than_unbinned_on_the_same_instances(binned_shards,
                                                                             tiny_model_yaml,
                                                                             tmp_path):
    """The first 24 updates of the binned data (bins drawn by the schedule) and 24 of the same
    instances unbinned: one train line each, 384 instances. Binned batches are padded to
    their bin's bound, not to 64. (Over a whole schedule epoch: about 0.037 binned against
    0.097 unbinned.)"""
    spec = spec_of(binned_shards["binned"])
    steps = min(24, loop.bin_schedule(spec, TrainConfig(batch_size=16, seed=SEED),
                                      DistContext()).steps_per_epoch)
    padding = {}
    for name in ("binned", "unbinned"):
        out = tmp_path / name
        train(args(binned_shards[name], tiny_model_yaml, out, "--batch_size", "16",
                   "--num_train_steps", str(steps), "--log_every", str(steps),
                   "--num_workers", "0"))
        (line,) = metrics.read(str(out / metrics.METRICS_FILE))
        assert line["examples"] == 16 * steps
        padding[name] = line["padding_fraction"]
    assert 0 < padding["binned"] < 0.8 * padding["unbinned"], padding  # 0.073 vs 0.119


@pytest.mark.slow
def test_torchrun_two_ranks_read_the_same_bins_and_resume(binned_shards, tiny_model_yaml,
                                                          tmp_path):
    """2 processes (gloo), stopped after 3 updates and resumed to 6: both ranks' checkpoints
    count, per bin, the batches the schedule names (ranks never read different bins), and
    each rank reads its own files."""
    data = binned_shards["binned"]
    out = tmp_path / "ddp"

    def torchrun(*extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", os.path.join(REPO, "trainer", "train_torch.py"),
               *args(data, tiny_model_yaml, out, "--num_train_steps", "6", "--num_workers",
                     "1", "--grad_accum", "2", "--checkpoint_every", "3", *extra)]
        env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
        return subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                              timeout=300)

    schedule = loop.bin_schedule(spec_of(data), TrainConfig(batch_size=4, grad_accum=2,
                                                             seed=SEED),
                                 DistContext(world_size=2))
    assert len({schedule.bin_at(t) for t in range(6)}) >= 3  # the run crosses bins
    for extra, steps in ((("--stop_at_step", "3"), 3), ((), 6)):
        proc = torchrun(*extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        path = checkpoint.latest_checkpoint(str(out))
        assert path.endswith(f"step-{steps:08d}")
        expected = dict.fromkeys(schedule.bounds, 0)
        for t in range(steps):
            expected[schedule.bin_at(t)] += 2  # grad_accum micro-batches per update
        for rank in range(2):
            bins = torch.load(checkpoint.rank_file(path, rank), weights_only=False)["data"]["bins"]
            assert {int(b): s["batches"] for b, s in bins.items()} == expected
            assert all(set(s["cursors"]) == ({str(rank)} if s["batches"] else set())
                       for s in bins.values())  # its own reader of each bin it read
    lines = metrics.read(str(out / metrics.METRICS_FILE))  # rank 0's; log_every 2, stop at 3
    assert [x["step"] for x in lines] == [2, 3, 4, 6]
    assert [x["examples"] for x in lines] == [32.0, 16.0, 16.0, 32.0]  # 2 ranks x 2 micro x 4
    assert all(0 <= x["padding_fraction"] < 1 for x in lines)


def test_compile_makes_one_graph_per_bin_and_never_recompiles(binned_shards, tiny_model_yaml,
                                                              tmp_path):
    """--compile (backend aot_eager here: the same dynamo graphs and guards as inductor, whose
    C++ compilation takes minutes per graph on this CPU): 8 updates over 3 bins make exactly
    one graph per bin, each compiled when its bin first comes; the later updates of the
    same bins (5 of them) recompile nothing."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    data = binned_shards["binned"]
    schedule = loop.bin_schedule(spec_of(data), TrainConfig(batch_size=4, seed=SEED),
                                 DistContext())
    drawn = [schedule.bin_at(t) for t in range(8)]
    assert len(set(drawn)) == 3 and len(drawn) - len(set(drawn)) == 5
    torch._dynamo.reset()
    counters.clear()
    try:
        summary = train(args(data, tiny_model_yaml, tmp_path / "run", "--compile", "aot_eager",
                             "--num_workers", "0"))
        graphs = counters["stats"]["unique_graphs"]
    finally:
        torch._dynamo.reset()
        counters.clear()
    assert summary["step"] == 8
    assert graphs == len(set(drawn))  # one per bin shape, none recompiled


@pytest.mark.slow
def test_dynamic_bins_draw_the_masks_of_unbinned_reading(tmp_path):
    """--masking=dynamic with bins: each bin's stream masks with the bin's prediction count,
    and every instance gets the mask it gets read from the top-level shard list (padded to
    64, 10 predictions), keyed on its stable index. Slow: a pipeline run of its own."""
    import numpy as np
    import pyarrow.parquet as pq

    from pipeline.run import run
    from trainer.pt.data import ShardDataset, decode_block, mask_block

    text = write_short_documents(tmp_path / "corpus.txt", 300)
    data = str(tmp_path / "data")
    run([f"--input={text}", f"--output_dir={data}", "--masking=dynamic",
         "--length_bins=16,40,56", "--max_seq_length=64", "--max_predictions_per_seq=10",
         "--num_shards=2", "--dupe_factor=2", "--quiet"])
    spec = spec_of(data)
    assert spec.dynamic and len(spec.bins) >= 3 and spec.bins[-1].bound == 64
    config = TrainConfig(batch_size=2, seed=7, shuffle_buffer=8)
    for length_bin in spec.bins:
        stream = loop.stream_config(spec, config, train=True, length_bin=length_bin)
        assert stream.masking.max_predictions_per_seq == length_bin.max_predictions_per_seq
        for path, offset in zip(length_bin.paths["parquet"], length_bin.index_offsets["parquet"]):
            table = pq.read_table(path)
            index = offset + np.arange(table.num_rows)
            binned = mask_block(decode_block(table, max_seq_length=length_bin.bound,
                                             max_predictions=stream.max_predictions_per_seq),
                                index, epoch=3, seed=7, config=stream.masking)
            whole = mask_block(decode_block(table, max_seq_length=64, max_predictions=10),
                               index, epoch=3, seed=7, config=spec.masking)
            assert not whole["input_ids"][:, length_bin.bound:].any()  # all of it fits
            assert np.array_equal(binned["input_ids"], whole["input_ids"][:, :length_bin.bound])
            assert np.array_equal(binned["labels"], whole["labels"][:, :length_bin.bound])
        batch = next(iter(ShardDataset(stream)))  # the trainer's stream of the bin
        assert batch["masked_lm_ids"].shape == (2, length_bin.max_predictions_per_seq)
