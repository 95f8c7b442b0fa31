"""Benchmark (not a test): sequence-length bins against padding every instance to the maximum.

    python -m bench.bins [--model bert-mini] [--steps 30] [--batch_size 16] [--work DIR]
    python -m bench.bins --corpora reviews --lengths 512 --bins512 16,32,48,64,80,96,112,128,256
    python -m bench.bins --learn --steps 800       # held-out accuracy, binned vs not, at 128

For each corpus (``reviews``: short documents, one review each; ``pd``: People's Daily news;
``bench/corpora.py``) and each length (128 with bins 32,64,96; 512 with bins of width 64), the
pipeline writes the same instances twice (dupe_factor 1, the same seed), unbinned and binned.
The PyTorch trainer (``trainer/train_torch.py``, called in this process, one run after the
other) then trains the same small model for ``--steps`` updates on each, and the table gives
the padding fraction of the batches and the train examples/s and real tokens/s of the timed
steps (the ``metrics.jsonl`` train line after the first ``log_every`` updates, so start-up and
the first steps are left out), and binned/unbinned. Speed figures depend on the machine and
what else runs: report them with the command and ``nproc``.

``--learn``: news at 128, Tiny, the same number of examples binned and unbinned, evaluated on
the same held-out data (the last 10% of documents, unbinned, static masks): held-out
masked_lm_accuracy of each.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from bench import corpora
from pipeline.run import run
from trainer import train_torch

REPO = Path(__file__).resolve().parent.parent
BINS = {128: "32,64,96", 512: "64,128,192,256,320,384,448"}
PREDICTIONS = {128: 20, 512: 80}


def make(corpus: Path, out: Path, length: int, binned: bool, vocab: str, *extra: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    flags = [f"--input={corpus}", f"--output_dir={out}", "--quiet", "--num_shards=2",
             "--dupe_factor=1", f"--max_seq_length={length}",
             f"--max_predictions_per_seq={PREDICTIONS[length]}", f"--vocab_file={vocab}", *extra]
    if binned:
        flags.append(f"--length_bins={BINS[length]}")
    return run(flags)


def train(data: Path, out: Path, *, model: str, steps: int, batch_size: int, log_every: int,
          eval_dir: Path | None = None, learning_rate: str = "1e-3") -> list[dict]:
    shutil.rmtree(out, ignore_errors=True)
    argv = ["--data_dir", str(data), "--output_dir", str(out),
            "--model_config", str(REPO / "configs" / "model" / f"{model}.yaml"),
            "--train_config", str(REPO / "configs" / "train" / "cpu-smoke.yaml"),
            "--num_train_steps", str(steps), "--batch_size", str(batch_size),
            "--log_every", str(log_every), "--checkpoint_every", str(steps),
            "--learning_rate", learning_rate, "--warmup_steps", str(min(50, steps // 4)),
            "--eval_every", str(steps), "--eval_steps", "1000"]
    if eval_dir is not None:
        argv += ["--eval_data_dir", str(eval_dir)]
    train_torch.train(argv)
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def speed(args, work: Path) -> None:
    print(f"cpus={os.cpu_count()} model={args.model} batch={args.batch_size} "
          f"steps={args.steps} (timed: the train line of steps "
          f"{args.steps // 2 + 1}-{args.steps}); bins: {BINS}")
    print("| corpus | length | run | padding_fraction | examples/s | tokens/s | binned/unbinned "
          "examples/s |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name in args.corpora.split(","):
        corpus = corpora.corpus_file(name)
        vocab = str(corpora.vocab_for(name))
        for length in (int(n) for n in args.lengths.split(",")):
            lines = {}
            for binned in (False, True):
                tag = f"{name}-{length}-{'binned' if binned else 'plain'}"
                make(corpus, work / tag, length, binned, vocab)
                metrics = train(work / tag, work / f"run-{tag}", model=args.model,
                                steps=args.steps, batch_size=args.batch_size,
                                log_every=args.steps // 2)
                lines[binned] = [x for x in metrics if x["split"] == "train"][-1]
            for binned in (False, True):
                x = lines[binned]
                ratio = x["examples_per_sec"] / lines[False]["examples_per_sec"]
                print(f"| {name} | {length} | {'binned' if binned else 'unbinned'} | "
                      f"{x['padding_fraction']:.3f} | {x['examples_per_sec']:.1f} | "
                      f"{x['tokens_per_sec']:.0f} | {ratio:.2f}x |", flush=True)


def learn(args, work: Path) -> None:
    train_text, heldout_text = corpora.held_out_split("pd", work)
    vocab = str(corpora.vocab_for("pd"))
    make(heldout_text, work / "heldout", 128, False, vocab)
    print(f"cpus={os.cpu_count()} model=bert-tiny batch=32 steps={args.steps}; news, 128, "
          "dupe 5; held-out: last 10% of documents, static, unbinned")
    print("| run | padding_fraction | held-out masked_lm_accuracy | held-out masked_lm_loss |")
    print("|---|---:|---:|---:|")
    for binned in (False, True):
        tag = "learn-binned" if binned else "learn-plain"
        make(train_text, work / tag, 128, binned, vocab, "--dupe_factor=5")
        metrics = train(work / tag, work / f"run-{tag}", model="bert-tiny", steps=args.steps,
                        batch_size=32, log_every=max(1, args.steps // 6),
                        eval_dir=work / "heldout", learning_rate="2e-3")
        padding = sum(x["padding_fraction"] for x in metrics if x["split"] == "train") / \
            sum(1 for x in metrics if x["split"] == "train")
        final = [x for x in metrics if x["split"] == "eval"][-1]
        print(f"| {'binned' if binned else 'unbinned'} | {padding:.3f} | "
              f"{final['masked_lm_accuracy']:.4f} | {final['masked_lm_loss']:.4f} |", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bert-mini")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--corpora", default="reviews,pd")
    parser.add_argument("--lengths", default="128,512")
    parser.add_argument("--bins128", default=BINS[128], help="--length_bins at 128")
    parser.add_argument("--bins512", default=BINS[512], help="--length_bins at 512")
    parser.add_argument("--learn", action="store_true")
    parser.add_argument("--work", default=None)
    args = parser.parse_args(argv)
    BINS.update({128: args.bins128, 512: args.bins512})
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_bins_"))
    work.mkdir(parents=True, exist_ok=True)
    (learn if args.learn else speed)(args, work)
    print(f"outputs under {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
