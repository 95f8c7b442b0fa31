"""How good and how fast a segmenter is, on the held-out 10% of People's Daily 1998 (the
default model never trains on it): word precision/recall/F1 and characters per second. Any
segmenter can be measured (``python -m pipeline.tools.ltp_model --evaluate --model ...``).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from pipeline.core.segment import LtpSegmenter
from pipeline.default_segmenter import peoples_daily

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
