"""manifest.json and stats.json: what was written, how, and what happened to the input."""
from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterable, Mapping

from pipeline import schema
from pipeline.versions import versions


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Always present in stats.json (0 when nothing happened), so users can rely on the keys.
STAT_KEYS = (
    "files", "files_without_documents", "binary_files_skipped", "lines", "lines_cut",
    "chars_removed", "binary_lines_skipped", "jsonl_bad_lines", "jsonl_missing_text_field",
    "jsonl_lines_too_long", "empty_documents", "documents", "sentences", "sentences_cut",
    "sentences_segmented", "ltp_unaligned_words", "ltp_failed_sentences",
    "sentences_empty_after_tokenization",
    "documents_empty_after_tokenization", "tokens", "unk_tokens", "words", "multi_piece_words",
    "ranges", "instances", "nsp_next", "nsp_random", "sop_in_order", "sop_swapped",
    "sop_single_sentence_chunks", "random_next_same_document_avoided",
    "random_next_without_pool", "chunks_without_random_document", "masked_tokens",
    "masked_cjk_tokens", "masked_cjk_multichar_words", "masked_cjk_tokens_in_multichar_words",
    "input_ranges_changed", "google_ranges_without_blank_lines", "jsonl_ranges_all_rejected",
    "ranges_over_twice_range_mb", "documents_kept", "chars_kept", "convert_documents_changed",
    "convert_chars_changed", "weight_copies", "dedup_buckets", "near_dup_buckets_capped",
)
# Why curation dropped documents (core.curation.DROP_REASONS; the writers do not import the
# core): each has dropped_documents:REASON and dropped_chars:REASON counts.
DROP_REASONS = ("min_chars", "repeated_lines", "other_chars", "dedup_exact", "dedup_near",
                "weight")

# NSP pairs with a random B: Google's data has about half; far fewer means documents had no
# others in their range to draw from (one huge document, or a wrong input format).
LOW_RANDOM_NEXT_SHARE = 0.3


def data_warnings(counts: Mapping[str, int], derived: Mapping[str, object]) -> list[dict]:
    """What in the counts says the data is probably not what the user meant, each with the
    flag that fixes it: [{"code", "count", "message"}]. stats.json holds them, the job logs
    them, ``verify`` and the report show them, and ``--strict`` makes them errors."""
    found = []

    def warn(code: str, count: int, message: str) -> None:
        if count:
            found.append({"code": code, "count": int(count), "message": message})

    n = counts.get("google_ranges_without_blank_lines", 0)
    warn("google_without_blank_lines", n,
         f"{n} range(s) of google-format input have 200 or more lines and no blank line: "
         "each became ONE document (no document boundaries: no random next segments, one "
         "unit of work). If each line is a document, read that input with format=lines "
         "(--input_format=lines, or --input='PATTERN;format=lines')")
    n = counts.get("jsonl_ranges_all_rejected", 0)
    warn("jsonl_all_lines_rejected", n,
         f"{n} range(s) of jsonl input had every line rejected (jsonl_bad_lines, "
         "jsonl_missing_text_field): is that input jsonl, and is its text under the "
         "--text_field given? (per input: --input='PATTERN;format=...;text_field=...')")
    n = counts.get("ranges_over_twice_range_mb", 0)
    warn("document_larger_than_range", n,
         f"{n} range(s) are more than twice --range_mb: a document ran on for megabytes "
         "without a boundary (wrong --input_format?), so that work cannot be split")
    share = derived.get("nsp_random_share")
    pairs = counts.get("nsp_next", 0) + counts.get("nsp_random", 0)
    if share is not None and pairs >= 20 and share < LOW_RANDOM_NEXT_SHARE:
        warn("few_random_next", pairs,
             f"only {share:.0%} of NSP pairs have a random B (Google's data: about 50%): "
             f"random_next_without_pool={counts.get('random_next_without_pool', 0)}, "
             f"chunks_without_random_document="
             f"{counts.get('chunks_without_random_document', 0)} (text that made no "
             "instance). Documents had no others in their range to draw from: check the "
             "input format (are documents separated?) or raise --range_mb")
    return found



def curation_section(counters: Counter, inputs: Iterable[str] = ()) -> dict:
    """The ``curation`` part of stats.json, taking its keys out of ``counters``: documents
    and characters dropped per reason, and per --input (in the order given) the documents,
    characters and instances that went into the data."""
    dropped = {}
    for reason in DROP_REASONS:
        dropped[reason] = {"documents": counters.pop(f"dropped_documents:{reason}", 0),
                           "chars": counters.pop(f"dropped_chars:{reason}", 0)}
    per_input: dict[int, dict] = {}
    for key in [k for k in counters if k.startswith("input:")]:
        _, index, what = key.split(":", 2)
        per_input.setdefault(int(index), {})[what] = counters.pop(key)
    inputs = list(inputs)
    rows = []
    for index in sorted(set(per_input) | set(range(len(inputs)))):
        counts = per_input.get(index, {})
        rows.append({"input": inputs[index] if index < len(inputs) else str(index),
                     **{k: counts.get(k, 0) for k in ("documents", "chars", "instances")}})
    return {"dropped": dropped, "inputs": rows}


def curation_emptied(stats_doc: Mapping) -> str | None:
    """Why the corpus has no documents left although it had some, naming what dropped them;
    None if that is not what happened."""
    counts = stats_doc["counts"]
    if not counts.get("documents") or counts.get("documents_kept"):
        return None
    dropped = {r: d["documents"] for r, d in stats_doc["curation"]["dropped"].items()
               if d["documents"]}
    if not dropped:
        return None
    return (f"curation dropped every one of the {counts['documents']} documents read ("
            + ", ".join(f"{reason}: {n}" for reason, n in dropped.items())
            + "): nothing is left to make instances of. Loosen --filters or --dedup, or check "
              "the input's weights; no output was written")


def build_stats(counters: Counter, inputs: Iterable[str] = ()) -> dict:
    """Flat counters → stats.json: totals, NSP balance, masking shares, length histogram,
    curation (``inputs``: the --input specs, naming the per-input rows)."""
    counters = Counter(counters)
    curation = curation_section(counters, inputs)
    for key in STAT_KEYS:
        counters.setdefault(key, 0)
    histogram = {}
    for key in sorted(k for k in counters if k.startswith("seq_length:")):
        histogram[int(key.split(":", 1)[1])] = counters.pop(key)
    unknown = Counter({k.split(":", 1)[1]: counters.pop(k)
                       for k in [k for k in counters if k.startswith("unk_char:")]})
    instances = counters.get("instances", 0)
    tokens = counters.get("tokens", 0)
    masked_cjk = counters.get("masked_cjk_tokens", 0)
    derived = {
        "nsp_random_share": counters.get("nsp_random", 0) / instances
        if instances and counters.get("nsp_random", 0) + counters.get("nsp_next", 0) else None,
        "sop_swapped_share": counters.get("sop_swapped", 0) / instances
        if instances and counters.get("sop_swapped", 0) + counters.get("sop_in_order", 0)
        else None,
        "unk_rate": counters.get("unk_tokens", 0) / tokens if tokens else None,
        "masked_tokens_per_instance":
            counters.get("masked_tokens", 0) / instances if instances else None,
        # Of the masked Chinese characters, the share masked together with the rest of a
        # multi-character word (whole-word masking at work; 0 without it).
        "masked_cjk_in_whole_multichar_words_share":
            counters.get("masked_cjk_tokens_in_multichar_words", 0) / masked_cjk
            if masked_cjk else None,
        "mean_seq_length":
            sum(k * v for k, v in histogram.items()) / instances if instances else None,
    }
    return {"counts": dict(sorted(counters.items())), "derived": derived,
            "curation": curation,
            "warnings": data_warnings(counters, derived),
            "seq_length_histogram": {str(k): v for k, v in sorted(histogram.items())},
            # What still became [UNK]: the first character of each [UNK] token, most frequent
            # first (ties by character), and how many distinct characters there were.
            "unk_top_chars": [[ch, n] for ch, n in
                              sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0]))[:50]],
            "unk_distinct_chars": len(unknown)}


def build_manifest(*, config: Mapping, shards: Iterable[Mapping], vocab_size: int,
                   vocab_sha256: str, ltp_model: Mapping, tfrecord_compression: str,
                   masking: Mapping | None = None,
                   bins: Iterable[tuple[int, int]] = ()) -> dict:
    """The manifest trainers read (keys documented in ``pipeline.schema``). ``bins``:
    (bound, max_predictions_per_seq) of each length bin; the shards' summaries then say their
    bin (``"bin"``), and a bin without shards is listed as empty."""
    shards = sorted(shards, key=lambda s: s["index"])
    bins = list(bins)

    def entries(of_shards) -> dict[str, list[dict]]:
        per_format: dict[str, list[dict]] = {}
        for shard in of_shards:
            for fmt, path in shard["paths"].items():
                per_format.setdefault(fmt, []).append(
                    {"path": path, "instances": shard["instances"],
                     "bytes": shard["bytes"][fmt], "sha256": shard["sha256"][fmt]})
        return per_format

    per_format = entries(shards)
    extra = {}
    if bins:
        extra["bins"] = []
        for b, (bound, predictions) in enumerate(bins):
            mine = [s for s in shards if s.get("bin") == b]
            extra["bins"].append({"bound": bound, "max_predictions_per_seq": predictions,
                                  "instances": sum(s["instances"] for s in mine),
                                  "shards": entries(mine)})
    return {
        "format_version": (schema.BINNED_FORMAT_VERSION if bins
                           else schema.MANIFEST_FORMAT_VERSION),
        "max_seq_length": config["max_seq_length"],
        "max_predictions_per_seq": config["max_predictions_per_seq"],
        "vocab_size": vocab_size,
        "do_lower_case": config["do_lower_case"],
        "do_whole_word_mask": config["do_whole_word_mask"],
        "vocab_file": schema.VOCAB_FILE,
        "vocab_sha256": vocab_sha256,
        "total_instances": sum(s["instances"] for s in shards),
        "num_shards": len(shards),
        "shards": per_format,
        "tfrecord_compression": tfrecord_compression,
        # What next_sentence_labels means, or that there is none (schema.SENTENCE_TASKS).
        "next_sentence": config.get("next_sentence", "nsp"),
        # How masks are made: {"mode": static|dynamic, the core.masking settings}.
        "masking": dict(masking or {"mode": "static"}),
        "features": [{"name": n, "dtype": d, "length": k}
                     for n, d, k in schema.features(config.get("next_sentence", "nsp"),
                                                    (masking or {}).get("mode", "static"))],
        **extra,
        "ltp_model": dict(ltp_model),
        "config": dict(config),
        "versions": versions(),
        "created_unix": int(time.time()),
    }
