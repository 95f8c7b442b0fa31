"""The report page: one self-contained HTML file (figures embedded), from manifest.json,
stats.json and one pass over the shards (``tally``)."""
from __future__ import annotations

import datetime
import html
import json

import numpy as np

from pipeline import schema
from pipeline.common.sizes import megabytes
from pipeline.readers.output import Output, warning_messages
from pipeline.readers.shards import ShardError
from pipeline.tools.inspect import legend_html, page, render_html, select
from pipeline.tools.report import fonts, plots
from pipeline.tools.report.tally import Tally

e = html.escape
# stats.json counters that record a repair or a compromise, and what each one means.
REPAIRS = {
    "chars_removed": "invalid UTF-8 bytes, NUL and control characters removed",
    "binary_lines_skipped": "lines that were mostly garbage, dropped",
    "binary_files_skipped": "binary or UTF-16 files skipped whole",
    "files_without_documents": "files without any document (empty)",
    "empty_documents": "whitespace-only documents dropped",
    "jsonl_bad_lines": "JSON lines that did not parse, dropped",
    "jsonl_missing_text_field": "JSON lines without the text field, dropped",
    "jsonl_lines_too_long": "JSON lines too long to read, dropped",
    "lines_cut": "very long lines read in bounded pieces",
    "sentences_cut": "sentences longer than --max_sentence_chars, cut",
    "ltp_unaligned_words": "LTP words that did not align with the text",
    "ltp_failed_sentences": "sentences LTP failed on",
    "sentences_empty_after_tokenization": "sentences with no token left, dropped",
    "documents_empty_after_tokenization": "documents with no token left, dropped",
    "unk_tokens": "characters missing from the vocabulary, written as [UNK]",
    "random_next_same_document_avoided": "random B drawn from A's own document, redrawn",
    "random_next_without_pool": "chunks with no other document to draw a random B from: "
                                "kept their true continuation",
    "chunks_without_random_document": "one-sentence chunks with no other document: no "
                                      "instance",
    "sop_single_sentence_chunks": "one-sentence chunks with nothing to order (SOP)",
}
LABEL_NAMES = {"nsp": ("IsNext (0)", "random (1)"), "sop": ("in order (0)", "swapped (1)")}
SPECIAL = (schema.CLS, schema.SEP, schema.PAD, schema.MASK)

CSS = """
h1{font-size:24px;margin-bottom:2px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid
#d5d9e0;padding-bottom:4px}.sub{color:#4a5468;margin-top:0}.cards{display:flex;flex-wrap:wrap;
gap:10px}.card{border:1px solid #d5d9e0;border-radius:6px;padding:8px 12px;min-width:120px}
.card b{display:block;font-size:20px}.card span{color:#4a5468;font-size:12px}
.figs{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:12px}.figs img{width:100%}
.bar{background:#3b6fb6;height:10px;display:inline-block;vertical-align:middle}
.warn{background:#fff4e5;border:1px solid #f0b35b;padding:8px 14px;margin:12px 0}
.zero{color:#8a93a5}.nz{font-weight:600}.note{color:#4a5468;font-size:13px}
.cols{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:16px}
td{overflow-wrap:anywhere}td code,td:first-child{white-space:nowrap}
"""


def _table(rows: list[list[str]], head: list[str] | None = None, cls: str = "") -> str:
    out = [f'<table class="{cls}">']
    if head:
        out.append("<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>")
    out.extend("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return "".join(out) + "</table>"


def _value(v) -> str:
    if isinstance(v, (list, tuple)):
        return "<br>".join(e(str(x)) for x in v)
    return e(json.dumps(v) if isinstance(v, (dict, bool)) or v is None else str(v))


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def _histogram_from_stats(stats: dict | None, size: int) -> np.ndarray | None:
    hist = (stats or {}).get("seq_length_histogram")
    if not hist:
        return None
    counts = np.zeros(size, np.int64)
    for k, v in hist.items():
        if int(k) < size:
            counts[int(k)] = v
    return counts


def build(output: Output, t: Tally, *, examples: int = 3, seed: int = 0) -> str:
    """The whole page."""
    m, stats = output.manifest, output.stats
    counts = (stats or {}).get("counts", {})
    derived = (stats or {}).get("derived", {})
    created = datetime.datetime.fromtimestamp(m.get("created_unix", 0), datetime.timezone.utc)
    head = (f"<h1>Data report: {e(output.root)}</h1><p class='sub'>written "
            f"{created:%Y-%m-%d %H:%M} UTC by bert-wwm-pipeline "
            f"{e(str(m.get('versions', {}).get('bert-wwm-pipeline')))} · next_sentence "
            f"{output.task} · masking {output.masking} · "
            f"{m['num_shards'] if 'num_shards' in m else '?'} shards in "
            f"{', '.join(output.formats)}"
            + (f" in {len(output.bins)} length bins" if output.binned else "")
            + f" · counted from the {t.fmt} shards"
            + (f" (a sample: the first records of each shard, {t.instances:,} instances)"
               if t.sampled else "") + "</p>")
    sections = [_warnings(stats), _glance(output, t, counts, derived),
                _figures(output, t, stats), _bins(output, t), _masking(output, counts),
                _words(output, t, counts, derived), _vocabulary(output, t, counts, derived),
                _inputs(output, counts, stats), _curation(output, counts, stats),
                _repairs(counts), _shards(output, t),
                _config(output), _examples(output, t.fmt, examples, seed)]
    title, body = f"report {output.root}", head + "".join(sections)
    # The glyphs of every CJK character shown, embedded (or a notice on top saying what to
    # install): a reader's machine may have no CJK font.
    font_css, font_notice = fonts.embed(title + body)
    return page(title, head + font_notice + "".join(sections), CSS + font_css)


def _warnings(stats: dict | None) -> str:
    """stats.json's data warnings (``writers.manifest.data_warnings``), first on the page."""
    items = "".join(f"<li>{e(message)}</li>" for message in warning_messages(stats))
    return (f"<div class='warn'><b>The data may not be what was meant:</b><ul>{items}</ul>"
            f"</div>") if items else ""


def _glance(output: Output, t: Tally, counts: dict, derived: dict) -> str:
    size = sum(output.files.get(s["path"], 0) for f in output.formats for s in output.shards(f))
    cards = [("documents", counts.get("documents")), ("sentences", counts.get("sentences")),
             ("tokens", counts.get("tokens")), ("instances", output.manifest["total_instances"]),
             ("masked tokens", "none stored" if output.dynamic else counts.get("masked_tokens")),
             ("[UNK] rate", None if derived.get("unk_rate") is None
              else f"{100 * derived['unk_rate']:.2f}%"),
             ("whole-word share", None if derived.get(
                 "masked_cjk_in_whole_multichar_words_share") is None else
              f"{100 * derived['masked_cjk_in_whole_multichar_words_share']:.1f}%"),
             ("shard files", megabytes(size))]
    shown = [(k, v if isinstance(v, str) else "–" if v is None else f"{v:,}") for k, v in cards]
    body = "".join(f"<div class='card'><b>{v}</b><span>{k}</span></div>" for k, v in shown)
    note = "" if output.stats else ("<p class='note'>stats.json is missing: corpus counts "
                                    "are not shown.</p>")
    if t.invalid or t.unreadable:
        note += (f"<p class='note'><b>{t.invalid} invalid record(s) left out; unreadable: "
                 f"{e('; '.join(t.unreadable)) or 'none'}.</b> Run python -m pipeline.verify."
                 f"</p>")
    return f"<h2>At a glance</h2><div class='cards'>{body}</div>{note}"


def _figures(output: Output, t: Tally, stats: dict | None) -> str:
    m = output.manifest
    seq = _histogram_from_stats(stats, len(t.seq_lengths))
    source = "stats.json" if seq is not None and not t.sampled else f"the {t.fmt} shards"
    seq = seq if seq is not None and not t.sampled else t.seq_lengths
    figs = [plots.histogram(seq, title=f"Sequence length ([CLS] and [SEP] included; from "
                                       f"{source})", xlabel="tokens",
                            mark=m["max_seq_length"], mark_label="max_seq_length",
                            bounds=[b.bound for b in output.bins[:-1]])]
    if output.task == "none":
        figs.append(plots.histogram(t.a_lengths, title="Text length (without [CLS], [SEP])",
                                    xlabel="tokens", color=plots.ORANGE))
    else:
        figs.append(plots.two_histograms(t.a_lengths, t.b_lengths, labels=("A", "B"),
                                         title="Segment lengths (without [CLS], [SEP])",
                                         xlabel="tokens"))
        names = LABEL_NAMES[output.task]
        figs.append(plots.bars({names[0]: t.labels[0], names[1]: t.labels[1]},
                               title=f"{output.task.upper()} labels", ylabel="instances",
                               colors=(plots.GREEN, plots.ORANGE), percent_of=t.labels.sum()))
    mean = (np.arange(len(t.predictions)) * t.predictions).sum() / max(1, t.instances)
    which = "" if t.epoch is None else f"; epoch {t.epoch} masks"  # dynamic data
    figs.append(plots.histogram(t.predictions, title=f"Masked tokens per instance (mean "
                                                     f"{mean:.2f}{which})", xlabel="predictions",
                                color=plots.GREEN, mark=m["max_predictions_per_seq"],
                                mark_label="max_predictions_per_seq"))
    figs.append(plots.bars({f"size {k}" if k < 6 else "6+": v for k, v in _grouped(
        t.group_sizes).items()}, title=f"Masked groups by size (adjacent masked tokens{which})",
        ylabel="groups", colors=[plots.BLUE] * 7, percent_of=t.group_sizes.sum()))
    held = t.input_at_masked
    figs.append(plots.bars({"[MASK]": held["mask"], "kept": held["kept"],
                            "random": held["random"]},
                           title=f"What the input holds at masked positions (80/10/10{which})",
                           ylabel="masked tokens", colors=(plots.RED, plots.GREEN, plots.ORANGE),
                           percent_of=sum(held.values())))
    imgs = "".join(f"<img alt='figure' src='{src}'>" for src in figs)
    note = "" if t.epoch is None else (
        f"<p class='note'>Dynamic data stores no masks: the masking figures count the masks "
        f"the trainers draw in epoch {t.epoch} of a run with --seed {t.train_seed} (their "
        f"default); every epoch draws new ones with the same settings.</p>")
    return f"<h2>Instances</h2>{note}<div class='figs'>{imgs}</div>"


def _bins(output: Output, t: Tally) -> str:
    """Binned output (``--length_bins``): per bin its lengths, instances (the manifest's),
    mean real tokens and padding share (counted in the shards), beside the padding the same
    instances would have unbinned, all padded to max_seq_length."""
    if not output.binned:
        return ""
    seq = output.manifest["max_seq_length"]
    total = sum(b.instances for b in output.bins)
    rows = []

    def bars(binned: float | None, unbinned: float | None) -> str:
        return "".join(f"<span class='bar' style='width:{int(120 * share)}px;background:"
                       f"{color}'></span><br>" for share, color in
                       ((binned, plots.BLUE), (unbinned, plots.GREY)) if share is not None)

    for b in output.bins:
        n, tokens = int(t.bin_instances[b.index]), int(t.bin_tokens[b.index])
        mean = tokens / n if n else None
        binned = None if mean is None else 1 - mean / b.bound
        unbinned = None if mean is None else 1 - mean / seq
        rows.append([f"<code>{e(b.name)}</code>", f"{b.low + 1}–{b.bound}",
                     str(b.max_predictions_per_seq), f"{b.instances:,}",
                     _share(b.instances, total), "–" if mean is None else f"{mean:.1f}",
                     "–" if binned is None else f"{100 * binned:.1f}%",
                     "–" if unbinned is None else f"{100 * unbinned:.1f}%",
                     bars(binned, unbinned)])
    counted = int(t.bin_instances.sum())
    tokens = int(t.bin_tokens.sum())
    padded = sum(int(t.bin_instances[b.index]) * b.bound for b in output.bins)
    summary = ""
    if counted:
        binned, unbinned = 1 - tokens / padded, 1 - tokens / (counted * seq)
        saved = counted * seq - padded
        rows.append(["<b>all bins</b>", f"1–{seq}", "", f"<b>{total:,}</b>", "100%",
                     f"{tokens / counted:.1f}", f"<b>{100 * binned:.1f}%</b>",
                     f"{100 * unbinned:.1f}%", bars(binned, unbinned)])
        summary = (f"<p>Binned, <b>{100 * binned:.1f}%</b> of the padded tokens are padding; "
                   f"the same instances all padded to max_seq_length {seq} would be "
                   f"<b>{100 * unbinned:.1f}%</b> padding: {saved:,} fewer token positions "
                   f"({_share(saved, counted * seq)} less) per pass over the "
                   f"{'instances counted' if t.sampled else 'data'}.</p>")
    note = ("<p class='note'>Each bin holds the instances of its lengths ([CLS] and [SEP] "
            "included), in shards of its own padded to its bound, with its own "
            "max_predictions_per_seq. Instances: the manifest's; mean real tokens and the "
            "padding shares: counted in the " + e(t.fmt) + " shards"
            + (" (a sample)" if t.sampled else "") + ". Padding share: of the token "
            "positions a trainer reads, how many are padding; blue binned (padded to the "
            "bin's bound), grey unbinned (padded to max_seq_length). An empty bin has no "
            "shards.</p>")
    return ("<h2>Length bins</h2>" + summary + _table(
        rows, ["bin", "tokens", "max predictions", "instances", "share", "mean real tokens",
               "padding (binned)", f"padding at {seq}", ""]) + note)


def _masking(output: Output, counts: dict) -> str:
    """The masking mode and its settings (the manifest's ``masking``; older manifests: the
    job's flags), and the share of n-gram spans by length if stats.json counts them."""
    m = output.manifest
    settings = m.get("masking")
    config = m.get("config", {})
    if isinstance(settings, dict):
        rows = [["mode", e(output.masking) + (
            " (no masks stored: the trainers draw them every epoch from the run's seed, the "
            "epoch and each instance's index)" if output.dynamic else
            " (masks drawn once by the pipeline, stored in the shards)")]]
        rows += [[f"<code>{e(k)}</code>", e(", ".join(map(str, v))) if isinstance(v, list)
                  else _value(v)] for k, v in settings.items() if k != "mode"]
    else:
        rows = [["mode", "static (this manifest predates the masking record)"]]
        rows += [[f"<code>--{e(k)}</code>", _value(config[k])]
                 for k in ("masked_lm_prob", "do_whole_word_mask") if k in config]
    spans = {int(k.split(":", 1)[1]): int(v) for k, v in counts.items()
             if k.startswith("masked_spans:") and k.split(":", 1)[1].isdigit()}
    span_html = ""
    if spans:
        total = sum(spans.values())
        lengths = settings.get("ngram_lengths", []) if isinstance(settings, dict) else []
        weights = settings.get("ngram_weights", []) if isinstance(settings, dict) else []
        asked = dict(zip(lengths, weights))
        top = max(spans.values()) or 1
        span_rows = [[f"{n} word{'s' if n > 1 else ''}", f"{spans[n]:,}",
                      _share(spans[n], total),
                      "–" if n not in asked else f"{100 * float(asked[n]):.1f}%",
                      f"<span class='bar' style='width:{int(160 * spans[n] / top)}px'></span>"]
                     for n in sorted(spans)]
        mean = sum(n * c for n, c in spans.items()) / total if total else 0.0
        span_html = (f"<h3>Masked spans by length</h3><p class='note'>{total:,} spans masked "
                     f"(stats.json <code>masked_spans:N</code>), {mean:.2f} words each on "
                     f"average; the weights asked for, beside them (a span cut at its "
                     f"segment's end or by the budget counts at the length it was masked "
                     f"with).</p>"
                     + _table(span_rows, ["span", "spans", "share", "weight", ""]))
    return "<h2>Masking</h2>" + _table(rows) + span_html


def _grouped(sizes: np.ndarray) -> dict[int, int]:
    out = {k: int(sizes[k]) for k in range(1, min(6, len(sizes)))}
    out[6] = int(sizes[6:].sum())
    return out


def _words(output: Output, t: Tally, counts: dict, derived: dict) -> str:
    if output.dynamic:
        return ("<h2>Whole-word masking</h2><p class='note'>For Chinese the characters of one "
                "LTP word are masked together. Dynamic data stores each word's start "
                "(<code>word_starts</code>) instead of masks, so the pipeline counted no "
                f"masked words; in the masks of epoch {t.epoch} counted here, "
                f"{int(t.group_sizes[2:].sum()):,} of {int(t.group_sizes.sum()):,} masked "
                f"groups hold 2+ tokens.</p>" + _table(
                    [["words (LTP and WordPiece) in the text", f"{counts.get('words', 0):,}"],
                     ["of them of 2+ tokens",
                      f"{counts.get('multi_piece_words', 0):,}"]]))
    share = derived.get("masked_cjk_in_whole_multichar_words_share")
    rows = [["masked Chinese characters", f"{counts.get('masked_cjk_tokens', 0):,}"],
            ["of them in a multi-character word masked whole",
             f"{counts.get('masked_cjk_tokens_in_multichar_words', 0):,} ("
             + ("–" if share is None else f"{100 * share:.1f}%") + ")"],
            ["multi-character words masked", f"{counts.get('masked_cjk_multichar_words', 0):,}"],
            ["words (LTP and WordPiece) in the text", f"{counts.get('words', 0):,}"],
            ["masked groups of 2+ tokens in the shards",
             f"{int(t.group_sizes[2:].sum()):,} of {int(t.group_sizes.sum()):,}"]]
    return ("<h2>Whole-word masking</h2><p class='note'>For Chinese the characters of one LTP "
            "word are masked together; the share below is of masked Chinese characters "
            "that belong to a multi-character word, masked with the rest of it (0 without "
            "whole-word masking).</p>" + _table(rows))


def _vocabulary(output: Output, t: Tally, counts: dict, derived: dict) -> str:
    vocab = output.vocab
    total = int(t.token_counts.sum())
    order = [int(i) for i in np.argsort(-t.token_counts, kind="stable")
             if t.token_counts[i] and vocab[i] not in SPECIAL][:30]
    top = t.token_counts[order[0]] if order else 1
    rows = [[str(r), e(vocab[i]), f"{int(t.token_counts[i]):,}", _share(t.token_counts[i], total),
             f"<span class='bar' style='width:{int(160 * t.token_counts[i] / top)}px'></span>"]
            for r, i in enumerate(order, 1)]
    unk = derived.get("unk_rate")
    text = (f"<p>[UNK] rate in the tokenized text: <b>{'–' if unk is None else f'{100 * unk:.2f}%'}"
            f"</b> ({counts.get('unk_tokens', 0):,} of {counts.get('tokens', 0):,} tokens). "
            f"{int((t.token_counts > 0).sum()):,} of {len(vocab):,} vocabulary entries occur "
            f"in the instances.</p>")
    unk_top = (output.stats or {}).get("unk_top_chars")
    if unk_top:
        pairs = unk_top.items() if isinstance(unk_top, dict) else [tuple(p) for p in unk_top]
        unk_rows = [[e(str(ch)), f"{int(n):,}"] for ch, n in list(pairs)[:30]]
        distinct = (output.stats or {}).get("unk_distinct_chars")
        unk_html = ("<h3>Most frequent characters written as [UNK]</h3>"
                    + (f"<p class='note'>{distinct:,} distinct characters in all.</p>"
                       if distinct is not None else "")
                    + _table(unk_rows, ["character", "occurrences"]))
    else:
        unk_html = ("<p class='note'>Which characters became [UNK] is not recorded in this "
                    "stats.json (no <code>unk_top_chars</code>).</p>")
    zipf = plots.rank_frequency(t.token_counts, title="Token frequency by rank (original "
                                                      "text of the instances)")
    return (f"<h2>Vocabulary</h2>{text}<div class='cols'><div><h3>Most frequent tokens "
            f"</h3>{_table(rows, ['rank', 'token', 'count', 'share', ''])}</div><div>"
            f"<img alt='rank-frequency' src='{zipf}' style='width:100%'>{unk_html}</div></div>")


def _inputs(output: Output, counts: dict, stats: dict | None) -> str:
    config = output.manifest.get("config", {})
    inputs = config.get("input", [])
    patterns = "".join(f"<li><code>{e(str(p))}</code></li>"
                       for p in (inputs if isinstance(inputs, list) else [inputs]))
    text = (f"<p>--input ({e(str(config.get('input_format', '?')))} format):</p><ul>{patterns}"
            f"</ul><p>{counts.get('files', '–')} file(s) read, {counts.get('lines', 0):,} "
            f"lines, {counts.get('ranges', '–')} range(s).</p>")
    per_file = (stats or {}).get("per_file")
    if per_file:
        keys = sorted({k for v in per_file.values() for k in v})
        rows = [[e(name)] + [f"{v.get(k, 0):,}" for k in keys] for name, v in
                sorted(per_file.items())]
        return "<h2>Input files</h2>" + text + _table(rows, ["file"] + keys)
    per_input = ((stats or {}).get("curation") or {}).get("inputs")
    if per_input:
        rows = [[f"<code>{e(str(r['input']))}</code>", f"{r['documents']:,}",
                 f"{r['chars']:,}", f"{r['instances']:,}"] for r in per_input]
        return ("<h2>Input files</h2>" + text + "<p class='note'>What each --input gave the "
                "data (after curation and its weight):</p>"
                + _table(rows, ["--input", "documents", "characters", "instances"]))
    return ("<h2>Input files</h2>" + text + "<p class='note'>Counts per input file are not "
            "recorded: stats.json holds totals only, and the shards do not say which file an "
            "instance came from.</p>")


def _curation(output: Output, counts: dict, stats: dict | None) -> str:
    """What --convert, --filters, --dedup and the inputs' weights did (stats.json's
    ``curation``); nothing when the job ran without curation."""
    config = output.manifest.get("config", {})
    section = (stats or {}).get("curation")
    used = [f"--{flag}={config[flag]}" for flag in ("convert", "filters", "dedup")
            if config.get(flag) not in (None, "none")]
    weighted = [str(i) for i in config.get("input", []) if ";weight=" in str(i)]
    if not section or not (used or weighted):
        return ""
    read = counts.get("documents", 0)
    rows = [[f"<code>{e(reason)}</code>",
             f"<span class='{'nz' if d['documents'] else 'zero'}'>{d['documents']:,}</span>",
             _share(d["documents"], read), f"{d['chars']:,}"]
            for reason, d in section["dropped"].items()]
    if config.get("dedup") == "near":
        rule = (f" Near duplicates: estimated Jaccard similarity of "
                f"{config.get('near_dup_shingle', 3)}-character shingles at least "
                f"{config.get('near_dup_threshold')} to an earlier document.")
    else:
        rule = ""
    text = (f"<p>{e(' '.join(used + ([f'{len(weighted)} weighted input(s)'] if weighted else [])))}"
            f": {read:,} documents read, {counts.get('documents_kept', 0):,} went on "
            f"({counts.get('weight_copies', 0):,} of them copies made by weights); converted "
            f"to simplified: {counts.get('convert_documents_changed', 0):,} documents, "
            f"{counts.get('convert_chars_changed', 0):,} characters.{e(rule)}</p>")
    return ("<h2>Curation</h2>" + text + "<p class='note'>Documents dropped, per reason "
            "(the first in input order of each group of duplicates is kept):</p>"
            + _table(rows, ["reason", "documents", "of those read", "characters"]))


def _repairs(counts: dict) -> str:
    rows = [[f"<code>{k}</code>", f"<span class='{'nz' if counts.get(k) else 'zero'}'>"
             f"{counts.get(k, 0):,}</span>", e(meaning)]
            for k, meaning in REPAIRS.items() if k in counts]
    return ("<h2>Repairs made to the input</h2><p class='note'>Nothing is dropped silently; "
            "non-zero counts are bold.</p>" + _table(rows, ["counter", "count", "meaning"]))


def _shards(output: Output, t: Tally) -> str:
    rows = [[e(s["path"]), f"{s['instances']:,}", megabytes(s.get("bytes", 0)),
             f"<code>{e(s.get('sha256', '')[:16])}</code>"]
            for f in output.formats for s in output.shards(f)]
    return "<h2>Shards</h2>" + _table(rows, ["file", "instances", "size", "sha256 (start)"])


def _config(output: Output) -> str:
    m = output.manifest
    config = [[f"<code>--{e(k)}</code>", _value(v)] for k, v in m.get("config", {}).items()]
    model = [[e(k), _value(v)] for k, v in m.get("ltp_model", {}).items()]
    versions = [[e(k), _value(v)] for k, v in m.get("versions", {}).items()]
    return ("<h2>Configuration</h2>" + _table(config, ["flag", "value"])
            + "<div class='cols'><div><h3>Segmentation model</h3>" + _table(model)
            + "</div><div><h3>Versions</h3>" + _table(versions) + "</div></div>")


def _examples(output: Output, fmt: str, n: int, seed: int) -> str:
    if n <= 0 or not output.shards(fmt):
        return ""
    try:
        views, _ = select(output, fmt, 0, n=n, seed=seed, records=())
    except ShardError as error:
        return (f"<h2>Examples</h2><p class='note'>Shard 0 cannot be read: "
                f"{e(error.message)}</p>")
    return (f"<h2>Examples</h2><p class='note'>{n} instances of shard 0 at random (python -m "
            f"pipeline.inspect shows more).</p>" + legend_html(output.dynamic)
            + "".join(render_html(v) for v in views))
