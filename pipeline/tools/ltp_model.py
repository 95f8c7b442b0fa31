"""The built-in LTP model as a tool: where it is, how good it is, how fast LTP segments.

    python -m pipeline.tools.ltp_model              # build if needed, print its directory
    python -m pipeline.tools.ltp_model --evaluate   # held-out word precision/recall/F1
    python -m pipeline.tools.ltp_model --benchmark  # chars/s: LTP pipeline vs batch_predict
    python -m pipeline.tools.ltp_model 他叫汤姆去拿外衣。  # the words of some texts

``--model`` evaluates or benchmarks another model (a local LTP directory or a hub name). The
build, the cache and the evaluation are ``pipeline.default_segmenter``'s; this is their command
line (the Dockerfile runs it to put the model into the worker image).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pipeline.core.segment import LtpSegmenter
from pipeline.default_segmenter.cache import default_model_dir
from pipeline.default_segmenter.evaluate import benchmark, evaluate_held_out
from pipeline.tools import console


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluate", action="store_true",
                        help="build if needed, then print train time, size and held-out P/R/F1")
    parser.add_argument("--benchmark", action="store_true",
                        help="segmentation speed: ltp's pipeline vs batch_predict vs word_spans")
    parser.add_argument("--model", default="default",
                        help="'default' (the built-in model), a local LTP directory or a hub name")
    parser.add_argument("--every", type=int, default=1, help="use every N-th held-out paragraph")
    parser.add_argument("--verbose", action="store_true",
                        help="show what LTP's trainer prints while the default model is built")
    parser.add_argument("texts", nargs="*", help="texts to segment (prints their words)")
    args = parser.parse_args(argv)
    console.setup(verbose=args.verbose)  # our lines (the first build says what it does)
    start = time.perf_counter()
    model = str(default_model_dir(verbose=args.verbose)) if args.model == "default" \
        else args.model
    wall = time.perf_counter() - start
    if args.benchmark:
        print(json.dumps(benchmark(model)))
        return 0
    if args.texts:
        seg = LtpSegmenter(model)
        for text, spans in zip(args.texts, seg.word_spans(args.texts)):
            print(json.dumps({"text": text, "words": [text[s:e] for s, e in spans]},
                             ensure_ascii=False))
        return 0
    if not args.evaluate:
        print(model)
        return 0
    model_dir = Path(model)
    info_file = model_dir / "build_info.json"
    info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.exists() else {}
    print(f"model_dir: {model_dir}")
    print(f"build_wall_seconds_this_call: {wall:.1f} (0 means it was cached)")
    print(f"train_seconds: {info.get('train_seconds')} epochs: {info.get('epochs')} "
          f"train_paragraphs: {info.get('train_paragraphs')}")
    print(f"model_size_bytes: {_dir_size(model_dir)}")
    segmenter = LtpSegmenter(str(model_dir))
    result = evaluate_held_out(segmenter.word_spans, every=args.every)
    print(f"held_out_paragraphs: {result['paragraphs']} chars: {result['chars']}")
    print(f"precision: {result['precision']:.4f} recall: {result['recall']:.4f} "
          f"f1: {result['f1']:.4f}")
    print(f"segmentation: {result['chars_per_second']:.0f} chars/s "
          f"(word_spans incl. alignment, batches of 512)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
