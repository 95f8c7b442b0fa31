"""Train a WordPiece vocabulary on your corpus, as the Chinese BERT model zoo does.

    python -m pipeline.vocab --input='corpus/*.txt' --output=vocab.txt
    python -m pipeline.vocab --input='gs://b/corpus/*.jsonl' --input_format=jsonl \\
        --text_field=content --vocab_size=21128 --sample_mb=500 --output=vocab.txt

Reads the inputs as the pipeline does (same formats, cleaning and sentence splitting; any Beam
filesystem), trains Hugging Face ``tokenizers``' BERT WordPiece trainer (BERT's normalizer and
pre-tokenizer, so every CJK character is its own word and Chinese vocabularies are characters
plus Latin/digit sub-words), and writes a ``vocab.txt`` with BERT's special tokens that
``--vocab_file``, ``transformers.BertTokenizerFast`` and Google's ``FullTokenizer`` load.

Large corpora: ``--sample_mb`` bounds what is read: the inputs are cut into document-aligned
ranges of about 1 MB (as the job cuts them) and a seeded random choice of ranges, spread over
the whole corpus, is read until the sample is full. The trainer's alphabet is not capped at
its default 1,000 characters (which left 10% of held-out Chinese tokens [UNK]): it keeps every
character up to ``--vocab_size``.

``--normalize nfkc_punct`` applies NFKC to the training text, as the job does before its
table step; the table (curly quotes, dashes, ...) maps only characters a vocabulary lacks, and a
vocabulary trained on such text has the frequent ones.

Printed and written beside the vocabulary (``<output>.stats.json``): the size, the characters
of the sample it covers, and the [UNK] rate on a held-out part of the sample (documents chosen
by a seeded hash, never trained on) with this vocabulary and with ``--compare_vocab``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence

from pipeline import schema
from pipeline.beam import fs
from pipeline.beam.dofns import source_base, source_name
from pipeline.beam.options import BUILTIN_VOCABS, str2bool
from pipeline.common.paths import is_remote
from pipeline.common.sizes import MB
from pipeline.core.instance import InstanceConfig
from pipeline.core.normalize import normalizer_for
from pipeline.core.ranges import RangeConfig, plan_ranges, read_range_documents
from pipeline.core.seeds import stable_hash64
from pipeline.core.text import FORMATS
from pipeline.core.wordpiece import WordPieceTokenizer, read_vocab

SPECIAL_TOKENS = [schema.PAD, schema.UNK, schema.CLS, schema.SEP, schema.MASK]
RANGE_BYTES = 1_000_000


def sample_ranges(files: Sequence[tuple[str, int]], *, input_format: str, sample_bytes: int,
                  seed: int, range_bytes: int = RANGE_BYTES
                  ) -> list[tuple[str, int, int | None, int]]:
    """(path, start, end, bytes) of the ranges to read: all of them if the corpus fits the
    sample, else a seeded random choice over the whole corpus until ``sample_bytes``."""
    ranges = []
    for path, size in files:
        with fs.open_read(path) as f:
            cuts = plan_ranges(f, path=path, size=size, input_format=input_format,
                               range_bytes=range_bytes)
        for start, end in cuts:
            ranges.append((path, start, end, (size if end is None else end) - start))
    if sum(r[3] for r in ranges) <= sample_bytes:
        return ranges
    rng = random.Random(seed)
    chosen, total = [], 0
    for r in rng.sample(ranges, len(ranges)):
        if total >= sample_bytes:
            break
        chosen.append(r)
        total += r[3]
    return sorted(chosen)


def read_sample(ranges, *, base: str, config: RangeConfig, normalize: str, held_out: float,
                seed: int, stats: Counter) -> tuple[list[str], list[str]]:
    """The sample's sentences, split into (train, held-out) by document (by a seeded hash of
    the document id, which names the file relative to ``base``: the same wherever the corpus
    lives)."""
    train, test = [], []
    nfkc = normalize == "nfkc_punct"
    for path, start, end, _ in ranges:
        with fs.open_read(path) as raw:
            for doc_id, sentences in read_range_documents(
                    raw, path=path, source=source_name(path, base), start=start, end=end,
                    config=config, stats=stats):
                if nfkc:
                    sentences = [unicodedata.normalize("NFKC", s) for s in sentences]
                held = stable_hash64(seed, "held_out", doc_id) % 10_000 < held_out * 10_000
                (test if held else train).extend(sentences)
    return train, test


def train_vocab(sentences: Sequence[str], *, vocab_size: int, min_frequency: int,
                do_lower_case: bool) -> list[str]:
    """WordPiece tokens in id order (BERT's special tokens first), at most ``vocab_size``.

    The trainer keeps its whole initial alphabet (characters, and ##-characters seen inside
    words) even past ``vocab_size``; when the characters alone do not fit, the alphabet is
    capped to the most frequent ones and trained again, so the size asked for is kept and the
    [UNK] rate shows what the missing characters cost."""
    from tokenizers import BertWordPieceTokenizer

    limit = max(vocab_size - len(SPECIAL_TOKENS), 1)
    for _ in range(8):
        tokenizer = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True,
                                           strip_accents=None, lowercase=do_lower_case)
        tokenizer.train_from_iterator(
            _batches(sentences), vocab_size=vocab_size, min_frequency=min_frequency,
            limit_alphabet=limit, special_tokens=SPECIAL_TOKENS, show_progress=False,
            wordpieces_prefix="##")
        vocab = tokenizer.get_vocab()
        if len(vocab) <= vocab_size:
            return sorted(vocab, key=vocab.get)
        limit = max(1, limit - (len(vocab) - vocab_size))
    raise ValueError(f"could not fit the alphabet in --vocab_size={vocab_size}")


def _batches(sentences: Sequence[str], size: int = 1000) -> Iterator[list[str]]:
    for i in range(0, len(sentences), size):
        yield list(sentences[i:i + size])


def unk_rate(vocab: Sequence[str], sentences: Sequence[str], do_lower_case: bool,
             normalize: str = "none") -> float:
    """Share of WordPiece tokens that are [UNK], normalized and tokenized as the pipeline would
    with this vocabulary."""
    stats = Counter()
    tokenizer = WordPieceTokenizer(vocab, do_lower_case=do_lower_case)
    normalizer = normalizer_for(vocab, normalize)
    for batch in _batches(sentences):
        tokenizer.encode([normalizer(s) for s in batch] if normalizer else batch, stats=stats)
    return stats["unk_tokens"] / stats["tokens"] if stats["tokens"] else 0.0


def char_coverage(vocab: Sequence[str], sentences: Sequence[str]) -> dict[str, float]:
    """Distinct non-space characters of ``sentences``, and the share the vocabulary has as a
    token of its own (or as ##X)."""
    chars = Counter(ch for s in sentences for ch in s if not ch.isspace())
    tokens = set(vocab)
    covered = [ch for ch in chars if ch in tokens or ch.lower() in tokens
               or f"##{ch}" in tokens]
    return {"characters": len(chars), "characters_covered": len(covered),
            "occurrences_covered": sum(chars[c] for c in covered) / max(1, sum(chars.values()))}


def write_vocab(tokens: Sequence[str], path: str) -> None:
    read_vocab("\n".join(tokens) + "\n")  # BERT's special tokens are all there
    fs.write_atomic(path, ("\n".join(tokens) + "\n").encode("utf-8"))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipeline.vocab",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--input", action="append", required=True,
                   help="file glob on any Beam filesystem; repeatable")
    p.add_argument("--input_format", default="google", choices=FORMATS)
    p.add_argument("--text_field", default="text", help="JSON key holding the text (jsonl)")
    p.add_argument("--normalize", default="none", choices=("none", "nfkc_punct"))
    p.add_argument("--max_sentence_chars", type=int, default=500)
    p.add_argument("--vocab_size", type=int, default=21128)
    p.add_argument("--min_frequency", type=int, default=2)
    p.add_argument("--do_lower_case", type=str2bool, default=True)
    p.add_argument("--sample_mb", type=float, default=200.0,
                   help="read at most about this much of the corpus (a spread-out sample)")
    p.add_argument("--held_out", type=float, default=0.05,
                   help="share of the sample's documents kept out of training, for the "
                        "[UNK] rate")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--compare_vocab", default="bert-base-chinese",
                   help="the vocabulary to compare the [UNK] rate with (a path or built-in "
                        "name)")
    p.add_argument("--output", required=True, help="where vocab.txt goes (any filesystem)")
    args = p.parse_args(argv)
    if args.vocab_size <= len(SPECIAL_TOKENS):
        p.error(f"--vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens")
    if not 0 <= args.held_out < 1:
        p.error("--held_out must be in [0, 1)")
    return args


def build(args: argparse.Namespace) -> dict:
    """Sample, train, write, evaluate; returns the statistics written beside the vocab."""
    patterns = [p if is_remote(p) else os.path.abspath(p) for p in args.input]
    files = dict(fs.match_inputs(patterns))
    # Only the reading settings matter here (no instances are made): the instance settings
    # are the defaults, for BERT's vocabulary size.
    config = RangeConfig(instance=InstanceConfig(vocab_size=30522),
                         input_format=args.input_format,
                         text_field=args.text_field,
                         max_sentence_chars=args.max_sentence_chars)
    ranges = sample_ranges(sorted(files.items()), input_format=args.input_format,
                           sample_bytes=int(args.sample_mb * MB), seed=args.seed)
    read = Counter()
    train, test = read_sample(ranges, base=source_base(patterns), config=config,
                              normalize=args.normalize,
                              held_out=args.held_out, seed=args.seed, stats=read)
    if not train:
        raise ValueError("no text to train on: the inputs hold no documents")
    vocab = train_vocab(train, vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                        do_lower_case=args.do_lower_case)
    write_vocab(vocab, args.output)
    compare = BUILTIN_VOCABS.get(args.compare_vocab, args.compare_vocab)
    other = read_vocab(fs.read_bytes(compare).decode("utf-8"))
    evaluation = test or train
    result = {
        "output": args.output, "vocab_size": len(vocab), "requested_vocab_size": args.vocab_size,
        "files": len(files), "sample_bytes": sum(r[3] for r in ranges),
        "corpus_bytes": sum(files.values()), "documents": read["documents"],
        "train_sentences": len(train), "held_out_sentences": len(test),
        **char_coverage(vocab, train),
        "held_out_unk_rate": unk_rate(vocab, evaluation, args.do_lower_case, args.normalize),
        "compare_vocab": args.compare_vocab,
        "compare_vocab_held_out_unk_rate": unk_rate(other, evaluation, args.do_lower_case,
                                                    args.normalize),
        "unk_rate_measured_on": "held-out documents" if test else "the training sample (no "
                                "document was held out)",
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
    }
    base = args.output[:-len(".txt")] if args.output.endswith(".txt") else args.output
    stats_path = base + ".stats.json"
    fs.write_atomic(stats_path, json.dumps(result, indent=2, ensure_ascii=False).encode())
    result["stats_file"] = stats_path
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = build(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {result['output']}: {result['vocab_size']} tokens from "
          f"{result['sample_bytes'] / MB:.1f} MB of {result['corpus_bytes'] / MB:.1f} MB "
          f"({result['train_sentences']} sentences)")
    print(f"characters covered: {result['characters_covered']} of {result['characters']} "
          f"({result['occurrences_covered']:.4%} of occurrences)")
    print(f"[UNK] rate on {result['unk_rate_measured_on']}: {result['held_out_unk_rate']:.4%} "
          f"(with {result['compare_vocab']}: {result['compare_vocab_held_out_unk_rate']:.4%})")
    print(f"statistics: {result['stats_file']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
