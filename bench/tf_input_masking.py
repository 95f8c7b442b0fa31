"""TF2 input pipeline with dynamic masking vs static masks (a benchmark, not a test).

Measures examples/s of ``trainer.tf2.data.train_dataset`` (read, shuffle, batch, parse, and for
dynamic data the ``mask_dynamic`` call in ``tf.numpy_function``) on two outputs of one corpus
at the same settings, one ``--masking=static`` and one ``--masking=dynamic``, in one process,
after warm-up batches; also ``mask_dynamic`` alone on numpy arrays (one thread). From the repo
root::

    python -m bench.tf_input_masking                       # the built-in sample, 128/20
    python -m bench.tf_input_masking --input corpus.txt --input more/*.txt --batches 100
    python -m bench.tf_input_masking --static_dir out_static --dynamic_dir out_dynamic

It prints the machine's CPU count next to the figures, and the examples/s that one train step
demands (``--step_examples_per_sec``) for comparison: the input must deliver at least that per
host or the accelerator waits. The default, 2000 examples/s, is an ASSUMPTION for BERT-base at
seq 128 on a TPU v3-8 (one host), not a measurement: about 6 x 110M parameters x 128 tokens
= 8.4e10 FLOPs per example for forward and backward, at about 40% of the v3-8's 420 TFLOPS
bf16 peak, is ~2000 examples/s. Give your own measured steps/s x global batch instead.

The input pipeline uses every core TF may use (tf.data's AUTOTUNE); on a shared machine the
figures move with what else runs, so each variant is measured ``--repeats`` times, alternating,
and the best is reported.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def make_outputs(inputs: list[str], work_dir: str, *, seq: int, preds: int, dupe: int,
                 shards: int) -> dict[str, str]:
    """The pipeline's static and dynamic outputs of ``inputs`` (same flags but --masking)."""
    from pipeline.run import run

    dirs = {}
    for masking in ("static", "dynamic"):
        dirs[masking] = os.path.join(work_dir, masking)
        run([*(f"--input={i}" for i in inputs), f"--output_dir={dirs[masking]}",
             f"--masking={masking}", f"--max_seq_length={seq}",
             f"--max_predictions_per_seq={preds}", f"--dupe_factor={dupe}",
             f"--num_shards={shards}", "--quiet"])
    return dirs


def load(data_dir: str):
    from trainer import data_contract
    from trainer.config import ModelConfig

    manifest = data_contract.read_manifest(data_dir)
    return data_contract.load_data_dir(data_dir,
                                       ModelConfig(vocab_size=int(manifest["vocab_size"])))


def input_examples_per_sec(spec, *, batch: int, batches: int, warmup: int,
                           shuffle_buffer: int) -> float:
    """examples/s of train_dataset over ``batches`` batches after ``warmup`` batches."""
    from pipeline import schema
    from trainer.tf2 import data as tfdata

    shards = tfdata.host_shards(spec.paths(schema.TFRECORD_DIR), spec.sizes(schema.TFRECORD_DIR))
    ds = tfdata.train_dataset(shards, batch_size=batch, max_seq_length=spec.max_seq_length,
                              max_predictions_per_seq=spec.max_predictions_per_seq, seed=1,
                              shuffle_buffer=shuffle_buffer, next_sentence=spec.next_sentence,
                              masking=spec.masking)
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batch * batches / (time.perf_counter() - start)


def mask_only_examples_per_sec(spec, *, batch: int, batches: int) -> float:
    """examples/s of mask_dynamic alone on parsed rows (numpy, this thread)."""
    import tensorflow as tf

    from pipeline import schema
    from pipeline.core.masking import mask_dynamic

    feature_spec = schema.tf_feature_spec(spec.max_seq_length, spec.max_predictions_per_seq,
                                          spec.next_sentence, masking="dynamic")
    ds = tf.data.TFRecordDataset(spec.paths(schema.TFRECORD_DIR)).batch(batch,
                                                                        drop_remainder=True)
    rows = {k: v.numpy() for k, v in tf.io.parse_example(next(iter(ds)), feature_spec).items()}
    index = np.arange(batch)
    start = time.perf_counter()
    for epoch in range(batches):
        mask_dynamic(rows["input_ids"], rows["input_mask"], rows["segment_ids"],
                     rows[schema.WORD_STARTS], index, epoch=epoch, seed=1, config=spec.masking)
    return batch * batches / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", action="append", default=[],
                   help="the pipeline's --input, repeatable (default: its built-in sample)")
    p.add_argument("--static_dir", help="an existing static output (with --dynamic_dir)")
    p.add_argument("--dynamic_dir", help="an existing dynamic output of the same corpus")
    p.add_argument("--work_dir", help="where to write the two outputs (default: a temp dir)")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--preds", type=int, default=20)
    p.add_argument("--dupe_factor", type=int, default=5,
                   help="for both outputs, so their epochs are alike")
    p.add_argument("--num_shards", type=int, default=8)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--batches", type=int, default=60, help="timed batches per measurement")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--shuffle_buffer", type=int, default=10000)
    p.add_argument("--step_examples_per_sec", type=float, default=2000.0,
                   help="what one train step consumes per host (default: an assumption for "
                        "BERT-base on a TPU v3-8; see the module doc)")
    args = p.parse_args()
    if bool(args.static_dir) != bool(args.dynamic_dir):
        p.error("give both --static_dir and --dynamic_dir, or neither")
    if args.static_dir:
        dirs = {"static": args.static_dir, "dynamic": args.dynamic_dir}
    else:
        work = args.work_dir or tempfile.mkdtemp(prefix="bench_tf_masking_")
        t0 = time.perf_counter()
        dirs = make_outputs(args.input, work, seq=args.seq, preds=args.preds,
                            dupe=args.dupe_factor, shards=args.num_shards)
        print(f"made {dirs} in {time.perf_counter() - t0:.0f} s")
    specs = {name: load(d) for name, d in dirs.items()}
    if specs["static"].dynamic or not specs["dynamic"].dynamic:
        raise SystemExit("--static_dir must hold static data and --dynamic_dir dynamic data")
    import tensorflow as tf

    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    d = specs["dynamic"]
    print(f"TF {tf.__version__}; cpu cores {cpus} (usable by this process {usable}); "
          f"seq {d.max_seq_length}, preds {d.max_predictions_per_seq}, batch {args.batch}, "
          f"{args.batches} batches after {args.warmup} warm-up, best of {args.repeats}; "
          f"instances static {specs['static'].manifest['total_instances']}, "
          f"dynamic {d.manifest['total_instances']}")
    results = {"static": [], "dynamic": []}
    for _ in range(args.repeats):
        for name in ("static", "dynamic"):
            results[name].append(input_examples_per_sec(
                specs[name], batch=args.batch, batches=args.batches, warmup=args.warmup,
                shuffle_buffer=args.shuffle_buffer))
    best = {name: max(v) for name, v in results.items()}
    for name in ("static", "dynamic"):
        runs = ", ".join(f"{v:.0f}" for v in results[name])
        print(f"tf.data input, {name:7s}: {best[name]:8.0f} examples/s (runs: {runs})")
    mask_only = mask_only_examples_per_sec(d, batch=args.batch, batches=args.batches)
    print(f"mask_dynamic alone, 1 thread: {mask_only:8.0f} examples/s")
    demand = args.step_examples_per_sec
    print(f"train step demand (--step_examples_per_sec): {demand:.0f} examples/s; "
          f"dynamic input covers {best['dynamic'] / demand:.1f}x of it here, static "
          f"{best['static'] / demand:.1f}x; masking alone would need ~"
          f"{demand / mask_only:.2f} of one core's time")


if __name__ == "__main__":
    main()
