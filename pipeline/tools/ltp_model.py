"""The built-in LTP model as a tool: where it is, how good it is, how fast LTP segments.

    python -m pipeline.tools.ltp_model              # build if needed, print its directory
    python -m pipeline.tools.ltp_model --evaluate   # held-out word precision/recall/F1
    python -m pipeline.tools.ltp_model --benchmark  # chars/s: LTP pipeline vs batch_predict
    python -m pipeline.tools.ltp_model 他叫汤姆去拿外衣。  # the words of some texts

``--model`` evaluates or benchmarks another model (a local LTP directory or a hub name).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

from pipeline import console
from pipeline.core import peoples_daily
from pipeline.core.ltp_default import default_model_dir
from pipeline.core.segment import LtpSegmenter

Spans = list[tuple[int, int]]


def gold_spans(words: Sequence[str]) -> Spans:
    """Character spans of consecutive gold words in their concatenation."""
    spans, pos = [], 0
    for word in words:
        spans.append((pos, pos + len(word)))
        pos += len(word)
    return spans


def span_prf(gold: Iterable[Spans], predicted: Iterable[Spans]) -> dict:
    """Word precision/recall/F1: a predicted word is correct when its span equals a gold span."""
    n_gold = n_pred = n_ok = 0
    for g, p in zip(gold, predicted):
        n_gold += len(g)
        n_pred += len(p)
        n_ok += len(set(g) & set(p))
    precision = n_ok / n_pred if n_pred else 0.0
    recall = n_ok / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "gold_words": n_gold, "predicted_words": n_pred, "correct_words": n_ok}


def evaluate_held_out(word_spans: Callable[[list[str]], list[Spans]], *, every: int = 1,
                      batch_size: int = 512) -> dict:
    """Word P/R/F1 of any segmenter on the held-out 10% (every ``every``-th held-out paragraph).

    ``word_spans`` maps raw texts to character spans, e.g. ``LtpSegmenter.word_spans``.
    Held-out text contains no whitespace, so gold spans tile the raw text exactly.
    """
    paras = [p for i, p in enumerate(peoples_daily.held_out_paragraphs()) if i % every == 0]
    gold = [gold_spans(p.words) for p in paras]
    texts = ["".join(p.words) for p in paras]
    predicted: list[Spans] = []
    start = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        predicted.extend(word_spans(texts[i:i + batch_size]))
    seconds = time.perf_counter() - start
    result = span_prf(gold, predicted)
    chars = sum(map(len, texts))
    result.update({"paragraphs": len(paras), "chars": chars, "segment_seconds": seconds,
                   "chars_per_second": chars / seconds if seconds else float("inf")})
    return result


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


def benchmark(model: str, *, n_texts: int = 2000, repeats: int = 3) -> dict:
    """chars/s of ``pipeline`` vs direct ``batch_predict`` (legacy) vs ``word_spans`` on the
    first ``n_texts`` held-out People's Daily paragraphs; best of ``repeats``."""
    texts = [("".join(p.words)) for _, p in zip(range(n_texts),
                                                peoples_daily.held_out_paragraphs())]
    chars = sum(map(len, texts))
    seg = LtpSegmenter(model)
    from ltp import LTP

    ltp = seg.ltp or LTP(seg.location)
    runs = {"pipeline": lambda b: ltp.pipeline(b, tasks=["cws"]).cws,
            "word_spans": seg.word_spans}
    if seg.kind == "legacy":
        runs["batch_predict"] = seg.cws_model.batch_predict
    result = {"texts": len(texts), "chars": chars, "kind": seg.kind}
    for name, fn in runs.items():
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for b in range(0, len(texts), seg.batch_size):
                fn(texts[b:b + seg.batch_size])
            best = min(best, time.perf_counter() - start)
        result[f"{name}_chars_per_s"] = round(chars / best)
    return result


if __name__ == "__main__":
    sys.exit(main())
