"""Neural vs legacy LTP segmentation speed: characters per second on one core (and on a GPU
where torch sees one).

    python bench/neural_ltp.py [--chars 20000] [--legacy-chars 400000] [--out FILE.json]

Text: sentences of People's Daily, January 1998 (``corpora.documents("pd")``, the benchmark's
corpus), in corpus order, as the pipeline gives them to the segmenter (a sentence per text).
What is timed is ``LtpSegmenter.word_spans``: LTP plus the alignment to character offsets, in
the segmenter's batches (256 texts, padded to the longest for the neural model), best of
``--repeats``. One core: ``torch.set_num_threads(1)`` and the legacy model's
``parallelism=False``, as in the pipeline's workers.

Models:
  legacy  the built-in default model (LTP's perceptron, ``pipeline.default_segmenter``);
  neural  a neural LTP model of LTP/small's shape with random weights
          (``pipeline.dev.neural_ltp``, shape "small": Chinese-ELECTRA small, embedding 128,
          hidden 256, 12 layers, 4 heads, feed-forward 1024, 21,128 vocabulary, plus LTP's
          cws head). Speed does not depend on the weights' values, so random weights time what
          LTP/small's segmentation costs (its other tasks' heads do not run for segmentation).

The neural model is timed on fewer characters (``--chars``) than the legacy one
(``--legacy-chars``): it is about two orders of magnitude slower on a CPU. On a GPU
(``torch.cuda.is_available()``) the neural model is timed again on ``--gpu-chars`` characters,
at batch sizes 256 and 1024.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))  # the repository's pipeline package

import corpora  # noqa: E402  (bench/ is not a package)


@functools.lru_cache(maxsize=1)
def _documents():
    return corpora.documents("pd")


def sentences(chars: int) -> list[str]:
    """People's Daily sentences in corpus order, ``chars`` characters in all (about)."""
    out, total = [], 0
    for doc in _documents():
        for sentence in doc:
            out.append(sentence)
            total += len(sentence)
            if total >= chars:
                return out
    return out


def chars_per_second(segmenter, texts: list[str], repeats: int) -> dict:
    chars = sum(map(len, texts))
    segmenter.word_spans(texts[:8])  # warm up (first calls allocate)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        segmenter.word_spans(texts)
        best = min(best, time.perf_counter() - start)
    return {"texts": len(texts), "chars": chars, "seconds": round(best, 3),
            "chars_per_s": round(chars / best)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chars", type=int, default=20_000,
                        help="characters the neural model segments on the CPU")
    parser.add_argument("--legacy-chars", type=int, default=400_000)
    parser.add_argument("--gpu-chars", type=int, default=400_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the result as JSON")
    args = parser.parse_args(argv)

    import torch

    from pipeline.core.segment import LtpSegmenter
    from pipeline.default_segmenter.cache import default_model_dir
    from pipeline.dev.neural_ltp import SHAPES, build_neural_model

    torch.set_num_threads(1)
    result = {"date": datetime.date.today().isoformat(), "machine": platform.processor()
              or platform.machine(), "torch": torch.__version__, "torch_threads": 1,
              "neural_shape": SHAPES["small"]}
    legacy = LtpSegmenter(str(default_model_dir()), parallelism=False)
    result["legacy_cpu"] = chars_per_second(legacy, sentences(args.legacy_chars), args.repeats)
    print(json.dumps({"legacy_cpu": result["legacy_cpu"]}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = str(build_neural_model(Path(tmp) / "small", shape="small"))
        neural = LtpSegmenter(model)
        texts = sentences(args.chars)
        result["neural_cpu"] = chars_per_second(neural, texts, args.repeats)
        print(json.dumps({"neural_cpu": result["neural_cpu"]}), flush=True)
        # The same texts in batches of one length (sorted): what padding costs.
        ordered = sorted(texts, key=len)
        result["neural_cpu_length_sorted"] = chars_per_second(neural, ordered, args.repeats)
        print(json.dumps({"neural_cpu_length_sorted": result["neural_cpu_length_sorted"]}),
              flush=True)
        if torch.cuda.is_available():
            result["gpu"] = torch.cuda.get_device_name(0)
            gpu_texts = sentences(args.gpu_chars)
            for batch in (256, 1024):
                on_gpu = LtpSegmenter(model, device="cuda", batch_size=batch)
                result[f"neural_gpu_batch{batch}"] = chars_per_second(on_gpu, gpu_texts,
                                                                      args.repeats)
                print(json.dumps({f"neural_gpu_batch{batch}":
                                  result[f"neural_gpu_batch{batch}"]}), flush=True)
                # The spans on the GPU against the CPU's, on the texts both segmented.
                same = on_gpu.word_spans(texts) == neural.word_spans(texts)
                result[f"gpu_spans_equal_cpu_batch{batch}"] = same
        else:
            result["gpu"] = None
    result["legacy_over_neural_cpu"] = round(result["legacy_cpu"]["chars_per_s"]
                                             / result["neural_cpu"]["chars_per_s"], 1)
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
