"""Benchmark (not a test): does dynamic masking learn as well as static masking?

    python -m bench.masking_learning [--steps 2000] [--work DIR]

People's Daily news (``bench/corpora.py`` ``pd``), split by document: the last 10% held out.
Train data is made twice from the same documents at 128/20: static masks with dupe_factor 5
(Google's README) and dynamic masking with dupe_factor 1. Held-out data is made once, static,
dupe_factor 1, so both runs are scored on identical masks. The PyTorch trainer trains BERT-Tiny
(``configs/model/bert-tiny.yaml``) on each for the same number of steps (batch 32, the
learning recipe of ``tests/trainer``), in this process one after the other, and the final
held-out masked_lm_accuracy and loss of each are printed, with the data sizes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import corpora
from pipeline.run import run

REPO = Path(__file__).resolve().parent.parent


def make(corpus: Path, out: Path, *flags: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    return run([f"--input={corpus}", f"--output_dir={out}", "--quiet", "--num_shards=4",
                "--normalize=nfkc_punct", *flags])


def train(data: Path, heldout: Path, out: Path, steps: int) -> tuple[dict, float]:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([
        sys.executable, str(REPO / "trainer" / "train_torch.py"), "--data_dir", str(data),
        "--eval_data_dir", str(heldout), "--output_dir", str(out),
        "--model_config", str(REPO / "configs" / "model" / "bert-tiny.yaml"),
        "--train_config", str(REPO / "configs" / "train" / "cpu-smoke.yaml"),
        "--num_train_steps", str(steps), "--batch_size", "32", "--learning_rate", "2e-3",
        "--warmup_steps", "50", "--log_every", "200", "--eval_every", str(steps),
        "--eval_steps", "1000", "--checkpoint_every", str(steps)], check=True)
    seconds = time.perf_counter() - start
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x.get("split") == "eval"][-1], seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--work", default=None)
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_masking_learning_"))
    work.mkdir(parents=True, exist_ok=True)
    train_text, heldout_text = corpora.held_out_split("pd", work)
    heldout = work / "heldout"
    made = {"heldout": make(heldout_text, heldout, "--dupe_factor=1")}
    made["static"] = make(train_text, work / "static", "--dupe_factor=5")
    made["dynamic"] = make(train_text, work / "dynamic", "--masking=dynamic")
    print(f"cpus={os.cpu_count()} steps={args.steps} batch=32 "
          f"({args.steps * 32:,} examples); held-out {made['heldout']['total_instances']:,} "
          "instances, static dupe 1")
    print("| train data | instances | TFRecord MB | epochs at the end | held-out masked_lm_accuracy"
          " | held-out masked_lm_loss | train s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in ("static", "dynamic"):
        m = made[name]
        result, seconds = train(work / name, heldout, work / f"run-{name}", args.steps)
        mb = sum(s["bytes"] for s in m["shards"]["tfrecord"]) / 1e6
        epochs = args.steps * 32 / m["total_instances"]
        print(f"| {name} | {m['total_instances']:,} | {mb:.1f} | {epochs:.2f} | "
              f"{result['masked_lm_accuracy']:.4f} | {result['masked_lm_loss']:.4f} | "
              f"{seconds:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
