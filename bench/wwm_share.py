"""Measure, on a finished output directory, how often Chinese words are masked whole.

For every instance, the original ids are restored (masked positions get their labels back), each
run of Chinese characters is re-segmented with an LTP model (independently of the segmentation
the pipeline used), and every multi-character word with at least one masked character is counted
as "whole" when all its characters are masked, else "partial".

    python bench/wwm_share.py --output_dir output [--ltp_model default] [--limit 5000]

Compare a run with --do_whole_word_mask=true (ours) to one with false (Google's behaviour for
Chinese: every character on its own) on the same corpus.
"""
from __future__ import annotations

import argparse
import json
import os
from collections import Counter

import pyarrow.parquet as pq

from pipeline.core.segment import LtpSegmenter
from pipeline.core.text import is_cjk_char


def chinese_runs(tokens):
    """Maximal runs of single-CJK-character tokens: (start position, text)."""
    run, start = [], None
    for i, tok in enumerate(tokens):
        if len(tok) == 1 and is_cjk_char(tok):
            if start is None:
                start = i
            run.append(tok)
        else:
            if run:
                yield start, "".join(run)
            run, start = [], None
    if run:
        yield start, "".join(run)


def measure(output_dir: str, *, ltp_model: str = "default", limit: int = 5000) -> dict:
    with open(os.path.join(output_dir, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    with open(os.path.join(output_dir, manifest["vocab_file"]), encoding="utf-8") as f:
        vocab = f.read().split("\n")
    rows = []
    for shard in manifest["shards"]["parquet"]:
        rows += pq.read_table(os.path.join(output_dir, shard["path"])).to_pylist()
        if len(rows) >= limit:
            break
    rows = rows[:limit]
    if ltp_model == "default":
        from pipeline.default_segmenter.cache import default_model_dir

        ltp_model = str(default_model_dir())
    segmenter = LtpSegmenter(ltp_model)
    counts = Counter()
    for row in rows:
        ids = list(row["input_ids"])
        for p, label in zip(row["masked_lm_positions"], row["masked_lm_ids"]):
            ids[p] = label
        masked = set(row["masked_lm_positions"])
        runs = list(chinese_runs([vocab[i] for i in ids]))
        spans = segmenter.word_spans([text for _, text in runs])
        for (start, _), words in zip(runs, spans):
            for s, e in words:
                if e - s < 2:
                    continue
                hit = sum(1 for p in range(start + s, start + e) if p in masked)
                if hit:
                    counts["whole" if hit == e - s else "partial"] += 1
    words = counts["whole"] + counts["partial"]
    return {"instances": len(rows), "multichar_words_with_a_masked_char": words,
            "masked_whole": counts["whole"],
            "share_masked_whole": counts["whole"] / words if words else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--ltp_model", default="default")
    parser.add_argument("--limit", type=int, default=5000, help="instances to examine")
    args = parser.parse_args()
    print(json.dumps(measure(args.output_dir, ltp_model=args.ltp_model, limit=args.limit),
                     indent=2))


if __name__ == "__main__":
    main()
