"""Show instances of a finished output as text, decoded with the data's own vocab.txt.

    python -m pipeline.inspect --output_dir output                     # shard 0, first 5
    python -m pipeline.inspect --output_dir output --seed 1 --n 3      # 3 at random
    python -m pipeline.inspect --output_dir output --record 122 --format parquet
    python -m pipeline.inspect --output_dir gs://bucket/data --html sample.html
    python -m pipeline.inspect --output_dir dynamic_out --epoch 3 --train_seed 42
    python -m pipeline.inspect --output_dir output --json --n 100 > sample.jsonl
    python -m pipeline.inspect --output_dir binned_out --bin 64 --shard 1

Each instance: where it is (file, record, stable index), its lengths, the sentence label in
words, the text as ``[CLS] A [SEP] B [SEP]`` with every masked group (adjacent masked
positions: for Chinese the characters of one word) shown as «what the model must
predict→what the input holds», and a table of the groups: positions, targets, and per token
[MASK], kept or the random replacement. ``--html`` writes the same as a page with colours.

Dynamic data (``--masking=dynamic``) stores no masks: its instances show unmasked, words
(``word_starts``) separated by ``|``; with ``--epoch N`` they show masked exactly as the
trainers mask them in epoch N (``pipeline.core.masking.mask_dynamic`` with the training
run's seed, ``--train_seed``, and each instance's stable index). ``--json`` prints one JSON
object per instance instead: the features as the format stores them (for dynamic data with
``--epoch``, masked as the trainers see them), ``tokens`` and ``index``. Binned output
(``--length_bins``): each instance's length bin is shown (``bin`` in JSON: its bound), its shard
read at the bin's lengths; ``--bin BOUND`` picks that bin's shards.
"""
from __future__ import annotations

import dataclasses
import html
import json
import sys
import unicodedata
from collections.abc import Iterator, Sequence

import numpy as np

from pipeline import schema
from pipeline.core.masking import MaskingConfig, mask_dynamic
from pipeline.readers.output import NotAnOutput, Output, open_output
from pipeline.readers.rows import Spec, check_chunk, shard_spec
from pipeline.readers.shards import ShardError, read_shard
from pipeline.tools import cli

LABELS = {
    "nsp": {schema.NSP_IS_NEXT: "IsNext: B is the text that follows A in the document",
            schema.NSP_IS_RANDOM: "random: B comes from another document"},
    "sop": {schema.SOP_IN_ORDER: "in order: A then B, as in the document",
            schema.SOP_SWAPPED: "swapped: B came before A in the document"},
}
LEGEND = ("«target→input» is a masked group (adjacent masked positions; for Chinese the "
          "characters of one word): what the model must predict → what the input holds, "
          "token by token: [MASK], the token kept, or a random replacement")
WORD_SEP = "|"
WORDS_LEGEND = ("dynamic data: no masks are stored, the trainers draw them every epoch "
                "(--epoch N shows epoch N's); words (word_starts: what whole-word masking "
                f"takes together) are separated by {WORD_SEP}")
DEFAULT_TRAIN_SEED = 12345  # the trainers' --seed default


@dataclasses.dataclass
class Token:
    text: str
    kind: str  # "special", "plain", or for a masked position "mask", "kept", "random"
    target: str | None = None
    group: int = 0  # 1-based group number of a masked position
    word_start: bool | None = None  # dynamic data shown unmasked: a word starts here


@dataclasses.dataclass
class View:
    """One instance, decoded for display."""
    file: str
    record: int
    segments: list[list[Token]]  # [CLS] A [SEP], then B [SEP] (one segment for "none")
    groups: list[list[int]]  # positions of each masked group
    tokens: list[Token]
    length: int
    max_length: int
    label: int | None
    task: str
    predictions_limit: int
    ids: dict
    index: int = -1  # the instance's stable index in the dataset
    note: str = ""  # how dynamic data is shown ("" for static data)
    bin: str = ""  # binned output: the instance's length bin ("" when unbinned)

    @property
    def words(self) -> bool:
        """Dynamic data shown unmasked: words, no masked groups."""
        return any(t.word_start is not None for t in self.tokens)

    def label_text(self) -> str:
        if self.label is None:
            return "none (next_sentence none: one segment, masked-LM only)"
        return f"{self.label} = {LABELS[self.task].get(self.label, 'not a valid label')} " \
               f"({self.task.upper()})"

    def counts(self) -> dict:
        kinds = [t.kind for t in self.tokens]
        return {k: kinds.count(k) for k in ("mask", "kept", "random")}


def _token(vocab: Sequence[str], i: int) -> str:
    return vocab[i] if 0 <= i < len(vocab) else f"<id {i}>"


def bin_text(spec: Spec) -> str:
    """A binned shard's length bin in words ("" for an unbinned output)."""
    if not spec.binned:
        return ""
    return (f"{spec.bin_name}: {spec.low + 1} to {spec.max_seq_length} tokens, padded to "
            f"{spec.max_seq_length}" + ("" if spec.dynamic else
                                        f", at most {spec.max_predictions_per_seq} predictions"))


def view(row: dict, vocab: Sequence[str], *, file: str, spec: Spec) -> View:
    """A checked row (``Rows.row``, with its ``index``; dynamic data masked by
    :func:`mask_for_epoch` has ``epoch``) → what to show; ``spec``: its shard's
    (``readers.rows.shard_spec``: a binned output's at its bin's lengths)."""
    ids, num_a = row["input_ids"], row["num_a"]
    token = lambda i: _token(vocab, i)  # noqa: E731
    tokens = [Token(token(i), "special" if token(i) in (schema.CLS, schema.SEP) else "plain")
              for i in ids]
    starts = row.get("word_starts")
    note, keys = "", ("input_ids", "positions", "targets", "word_starts")
    if spec.dynamic and row.get("epoch") is not None:
        note = (f"dynamic: epoch {row['epoch']}'s masks as the trainers draw them (training "
                f"seed {row['train_seed']})")
    elif starts is not None:
        keys = ("input_ids", "word_starts")
        for t, start in zip(tokens, starts):
            t.word_start = bool(start)
        words = _words(tokens)
        several = sum(len(w) > 1 for w in words if w[0].kind != "special")
        note = (f"dynamic, no masks stored: {sum(w[0].kind != 'special' for w in words)} "
                f"words, {several} of 2+ tokens (--epoch N shows the trainers' masks)")
    groups: list[list[int]] = []
    for position, target in zip(row["positions"], row["targets"]):
        if not groups or groups[-1][-1] != position - 1:
            groups.append([])
        groups[-1].append(position)
        t = tokens[position]
        t.target = token(target)
        t.group = len(groups)
        t.kind = "mask" if t.text == schema.MASK else "kept" if ids[position] == target \
            else "random"
    segments = [tokens[:num_a], tokens[num_a:]] if num_a < len(ids) else [tokens]
    return View(file=file, record=row["record"], segments=segments, groups=groups,
                tokens=tokens, length=len(ids), max_length=spec.max_seq_length,
                label=row["label"], task=spec.task,
                predictions_limit=spec.max_predictions_per_seq,
                ids={k: row[k] for k in keys if row.get(k) is not None},
                index=row.get("index", -1), note=note, bin=bin_text(spec))


def _words(tokens: list[Token]) -> list[list[Token]]:
    """Dynamic data's words: a word starts at every word start; [CLS] and [SEP] stand
    alone."""
    words: list[list[Token]] = []
    for t in tokens:
        if t.kind == "special" or t.word_start or not words or words[-1][0].kind == "special":
            words.append([t])
        else:
            words[-1].append(t)
    return words


def _wide(ch: str) -> bool:
    """A character written without spaces around it (CJK, full-width, CJK punctuation)."""
    width = unicodedata.east_asian_width(ch)
    return width in ("W", "F") or (width == "A" and unicodedata.category(ch).startswith("P"))


def _space_between(before: str, after: str) -> bool:
    """Whether two tokens are written with a space between them: not around CJK, not before
    a ``##`` piece; always around [CLS], [SEP], [MASK], [UNK]."""
    if after.startswith("##") and len(after) > 2:
        return False
    if before.endswith("]") or after.startswith("["):
        return True
    return not (_wide(before[-1]) or _wide(after[0]))


def join_tokens(texts: Sequence[str]) -> str:
    """WordPiece tokens → readable text: ``##`` pieces glued, no spaces around CJK."""
    out = ""
    for i, text in enumerate(texts):
        if i and _space_between(texts[i - 1], text):
            out += " "
        out += _bare(text)
    return out


def _pieces(tokens: list[Token]) -> Iterator[tuple]:
    """("text", tokens) runs and ("group", tokens) masked groups, in order."""
    run: list[Token] = []
    for t in tokens:
        if run and (t.group != run[-1].group):
            yield ("group" if run[-1].group else "text"), run
            run = []
        run.append(t)
    if run:
        yield ("group" if run[-1].group else "text"), run


def segment_text(tokens: list[Token]) -> str:
    """A segment's input as text, each masked group as «targets→inputs» (dynamic data shown
    unmasked: its words separated by ``WORD_SEP``)."""
    if any(t.word_start is not None for t in tokens):
        return words_text(tokens)
    out, last = "", None
    for kind, run in _pieces(tokens):
        # Spaces as the text reads: a group by its targets.
        words = [t.text for t in run] if kind == "text" else [t.target for t in run]
        text = join_tokens(words) if kind == "text" else \
            "«" + join_tokens(words) + "→" + join_tokens([t.text for t in run]) + "»"
        if last is not None and _space_between(last, words[0]):
            out += " "
        out += text
        last = words[-1]
    return out


def words_text(tokens: list[Token]) -> str:
    """Unmasked dynamic data as text: the tokens of a word joined as they read, words joined
    by ``WORD_SEP``, [CLS] and [SEP] by spaces."""
    out, last_special = "", True
    for word in _words(tokens):
        special = word[0].kind == "special"
        if out:
            out += " " if special or last_special else WORD_SEP
        out += join_tokens([t.text for t in word])
        last_special = special
    return out


def _padded(text: str, width: int) -> str:
    """``text`` left-aligned in ``width`` terminal columns (CJK characters take two)."""
    used = sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)
    return text + " " * max(1, width - used)


def _span(positions: list[int], dash: str = "-") -> str:
    return f"{positions[0]}" + (f"{dash}{positions[-1]}" if len(positions) > 1 else "")


def _bare(text: str) -> str:
    """A token as it reads inside a word (a ``##`` piece without its mark)."""
    return text[2:] if text.startswith("##") and len(text) > 2 else text


def _input_word(t: Token) -> str:
    return t.text if t.kind == "mask" else f"{t.text} ({t.kind})"


def render_text(v: View, *, show_ids: bool = False) -> str:
    c = v.counts()
    m = sum(c.values())
    pad = v.max_length - v.length
    if len(v.segments) == 2:
        a, b = len(v.segments[0]) - 2, len(v.segments[1]) - 1
        sizes = f"[CLS] + A {a} + [SEP] + B {b} + [SEP]"
    else:
        sizes = f"[CLS] + {len(v.segments[0]) - 2} + [SEP]"
    where = f"── {v.file}, record {v.record}" + (f" (index {v.index})" if v.index >= 0 else "")
    lines = [where + " " + "─" * max(4, 72 - len(where)),
             f"length {v.length} of {v.max_length}: {sizes}, {pad} padding",
             f"label  {v.label_text()}"]
    if v.bin:
        lines.append(f"bin    {v.bin}")
    if v.note:
        lines.append(f"masking {v.note}")
    if not v.words:
        lines.append(f"masked {m} of at most {v.predictions_limit} in {len(v.groups)} groups: "
                     f"{c['mask']} [MASK], {c['kept']} kept, {c['random']} random")
    names = ("A", "B") if len(v.segments) == 2 else ("text",)
    for name, seg in zip(names, v.segments):
        lines.append(f"{name + ':':<6} {segment_text(seg)}")
    if v.words:
        if show_ids:
            lines.extend(f"  {k}: {vals}" for k, vals in v.ids.items())
        return "\n".join(lines)
    lines.append("  group  positions  target        input")
    for g, positions in enumerate(v.groups, 1):
        toks = [v.tokens[p] for p in positions]
        lines.append(f"  {g:>5}  {_span(positions):<9}  "
                     f"{_padded(join_tokens([t.target for t in toks]), 12)}  "
                     + ", ".join(_input_word(t) for t in toks))
    if show_ids:
        lines.extend(f"  {k}: {vals}" for k, vals in v.ids.items())
    return "\n".join(lines)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","PingFang SC",sans-serif;
 margin:24px;color:#1d2330;max-width:1200px}
.inst{border:1px solid #d5d9e0;border-radius:6px;padding:10px 14px;margin:14px 0}
.meta{color:#4a5468;font-size:13px;margin:2px 0}.seq{line-height:2.6;font-size:17px}
.seg{padding:3px 2px;border-radius:3px}.segA{background:#e8f1fd}.segB{background:#fdf5e3}
.sp{color:#6b7385;font-size:12px;font-family:monospace;padding:0 3px}
.grp{border:2px solid #5b6b8c;border-radius:4px;padding:0 1px;margin:0 1px}
ruby rt{font-size:12px;color:#7a1020}.mask{background:#f7c4c4}.kept{background:#c6ecc8}
.random{background:#ffd59e}table{border-collapse:collapse;font-size:13px;margin:6px 0}
td,th{border:1px solid #e1e4ea;padding:2px 8px;text-align:left}th{background:#f4f5f8}
.legend span{padding:1px 6px;margin-right:6px;border-radius:3px}
.word{border-bottom:2px solid #7d8fb3;margin:0 2px;padding:0 1px}
"""


def render_html(v: View) -> str:
    e = html.escape
    c = v.counts()
    masked = (f'masked {sum(c.values())} in {len(v.groups)} groups ({c["mask"]} [MASK], '
              f'{c["kept"]} kept, {c["random"]} random)')
    where = f", index {v.index}" if v.index >= 0 else ""
    parts = [f'<div class="inst"><div class="meta"><b>{e(v.file)}</b>, record {v.record}'
             f'{where} · length {v.length} of {v.max_length}'
             + (f' · bin {e(v.bin)}' if v.bin else '') + f' · label {e(v.label_text())} · '
             + (f"masking {e(v.note)}" if v.words else masked + (
                 f" · masking {e(v.note)}" if v.note else "")) + '</div><div class="seq">']
    for name, seg in zip("AB", v.segments):
        parts.append(f'<span class="seg seg{name}" title="segment {name}">')
        if v.words:
            for word in _words(seg):
                if word[0].kind == "special":
                    parts.append(f'<span class="sp">{e(word[0].text)}</span>')
                else:
                    parts.append('<span class="word">' + "".join(
                        f'<span class="sp">{e(t.text)}</span>' if t.text == schema.UNK
                        else e(_bare(t.text)) for t in word) + "</span>")
            parts.append("</span> ")
            continue
        for kind, run in _pieces(seg):
            if kind == "text":
                parts.extend(f'<span class="sp">{e(t.text)}</span>' if t.kind == "special"
                             or t.text == schema.UNK else e(_bare(t.text)) for t in run)
                continue
            parts.append(f'<span class="grp" title="group {run[0].group}">')
            parts.extend(f'<ruby class="{t.kind}">{e(_bare(t.text))}<rt>{e(_bare(t.target))}'
                         f'</rt></ruby>' for t in run)
            parts.append("</span>")
        parts.append("</span> ")
    if v.words:
        return "".join(parts) + "</div></div>"
    parts.append('</div><table><tr><th>group</th><th>positions</th><th>target</th>'
                 '<th>input</th></tr>')
    for g, positions in enumerate(v.groups, 1):
        toks = [v.tokens[p] for p in positions]
        cells = " ".join(f'<span class="{t.kind}">{e(_input_word(t))}</span>' for t in toks)
        parts.append(f"<tr><td>{g}</td><td>{_span(positions, '–')}</td>"
                     f"<td>{e(join_tokens([t.target for t in toks]))}</td><td>{cells}</td></tr>")
    parts.append("</table></div>")
    return "".join(parts)


def legend_html(words: bool = False) -> str:
    """The legend; ``words``: for dynamic data shown unmasked."""
    if words:
        return ('<p class="legend">Dynamic data: no masks are stored, the trainers draw them '
                'every epoch. Each word (<code>word_starts</code>: what whole-word masking '
                'takes together) is underlined; segment A <span class="segA">blue</span>, B '
                '<span class="segB">yellow</span>.</p>')
    return ('<p class="legend">Masked groups are boxed, the target above each token: '
            '<span class="mask">[MASK]</span><span class="kept">kept</span>'
            '<span class="random">random replacement</span>; segment A '
            '<span class="segA">blue</span>, B <span class="segB">yellow</span>.</p>')


def page(title: str, body: str, css: str = "") -> str:
    """A self-contained page (styles inline, nothing fetched)."""
    return (f'<!DOCTYPE html><html lang="zh"><head><meta charset="utf-8"><title>'
            f'{html.escape(title)}</title><style>{CSS}{css}</style></head><body>{body}'
            f'</body></html>')


def select(output: Output, fmt: str, shard: int, *, n: int, seed: int | None,
           records: Sequence[int], epoch: int | None = None,
           train_seed: int = DEFAULT_TRAIN_SEED) -> tuple:
    """(views, problems) of the chosen records of one shard: ``records`` if given, else ``n``
    at random with ``seed``, else the first ``n``. Dynamic data with ``epoch``: masked as the
    trainers mask it in that epoch (:func:`mask_for_epoch`)."""
    rows, problems = select_rows(output, fmt, shard, n=n, seed=seed, records=records)
    spec, vocab, path = shard_spec(output, fmt, shard), output.vocab, \
        output.shards(fmt)[shard]["path"]
    if epoch is not None:
        mask_for_epoch(output, rows, epoch=epoch, train_seed=train_seed, spec=spec)
    return [view(row, vocab, file=path, spec=spec) for row in rows], problems


def select_rows(output: Output, fmt: str, shard: int, *, n: int, seed: int | None,
                records: Sequence[int]) -> tuple[list[dict], list]:
    """(rows, problems) of the chosen records (as :func:`select`): each row as
    ``readers.rows.Rows.row`` gives it, with its stable ``index`` in the dataset."""
    entry = output.shards(fmt)[shard]
    count = entry["instances"]
    if records:
        wanted = sorted(set(records))
        if wanted[-1] >= count:
            raise IndexError(f"{entry['path']} has {count} records (0-{count - 1})")
    elif seed is not None:
        wanted = sorted(np.random.default_rng(seed).choice(count, min(n, count),
                                                           replace=False).tolist())
    else:
        wanted = list(range(min(n, count)))
    spec = shard_spec(output, fmt, shard)
    offset = output.index_offsets(fmt)[shard]
    rows, problems, want = [], [], set(wanted)
    if not want:
        return rows, problems
    chunks = read_shard(output, fmt, entry["path"])
    try:
        for chunk in chunks:
            checked, found = check_chunk(chunk, spec)
            problems.extend(p for p in found if p[0] in want)
            for k in np.flatnonzero(np.isin(checked.records, wanted)).tolist():
                row = checked.row(k)
                row["index"] = offset + row["record"]
                rows.append(row)
            if chunk.first + chunk.size > wanted[-1]:
                break
    finally:
        chunks.close()
    return rows, problems


def masking_config(output: Output, spec: Spec | None = None) -> MaskingConfig:
    """The settings the trainers mask dynamic data with (the manifest's ``masking``); for
    a shard of a length bin (``spec`` binned), with the bin's max_predictions_per_seq."""
    m = output.manifest
    config = MaskingConfig.from_manifest(m["masking"], m["vocab_size"])
    if spec is not None and spec.binned:
        config = dataclasses.replace(config,
                                     max_predictions_per_seq=spec.max_predictions_per_seq)
    return config


def padded(rows: Sequence[dict], spec: Spec) -> dict[str, np.ndarray]:
    """Rows (``Rows.row``) as the fixed-length [n, max_seq_length] arrays the trainers read
    (``spec``'s max_seq_length: a length bin's bound in binned output):
    input_ids, input_mask, segment_ids and (dynamic data) word_starts, padded with 0."""
    shape = (len(rows), spec.max_seq_length)
    out = {name: np.zeros(shape, dtype=np.int64) for name in
           ("input_ids", "input_mask", "segment_ids", schema.WORD_STARTS)}
    for i, row in enumerate(rows):
        length = len(row["input_ids"])
        out["input_ids"][i, :length] = row["input_ids"]
        out["input_mask"][i, :length] = 1
        out["segment_ids"][i, row["num_a"]:length] = 1
        if row.get("word_starts") is not None:
            out[schema.WORD_STARTS][i, :length] = row["word_starts"]
    return out


def mask_for_epoch(output: Output, rows: list[dict], *, epoch: int,
                   train_seed: int = DEFAULT_TRAIN_SEED, spec: Spec | None = None) -> None:
    """Dynamic data's rows masked in place exactly as the trainers mask them in ``epoch`` of
    a run with ``--seed train_seed``: ``pipeline.core.masking.mask_dynamic`` on the padded
    rows, keyed by each row's stable index. ``spec``: the rows' shard's (default: the
    output's; binned output: its bin's, padded to the bound, the bin's
    max_predictions_per_seq). Sets input_ids (masked), positions, targets, and
    ``epoch``/``train_seed``."""
    if not rows:
        return
    spec = spec or Spec.of(output)
    arrays = padded(rows, spec)
    masked = mask_dynamic(arrays["input_ids"], arrays["input_mask"], arrays["segment_ids"],
                          arrays[schema.WORD_STARTS],
                          np.array([row["index"] for row in rows], dtype=np.int64),
                          epoch=epoch, seed=train_seed, config=masking_config(output, spec))
    for i, row in enumerate(rows):
        predicted = int((masked["masked_lm_weights"][i] != 0).sum())
        row["input_ids"] = masked["input_ids"][i, :len(row["input_ids"])].tolist()
        row["positions"] = masked["masked_lm_positions"][i, :predicted].tolist()
        row["targets"] = masked["masked_lm_ids"][i, :predicted].tolist()
        row["epoch"], row["train_seed"] = epoch, train_seed


def as_stored(row: dict, fmt: str, spec: Spec, vocab: Sequence[str]) -> dict:
    """One row as a JSON object: the features as ``fmt`` stores them (TFRecord: fixed
    lengths, 0-padded, the label a 1-element list; Parquet: unpadded lists, the label a
    number; dynamic data masked by :func:`mask_for_epoch`: masked_lm_* added, as a static
    output of the format holds them), then ``tokens`` (the vocabulary string of each
    input_ids value) and ``index`` (the stable index in the dataset); in a binned output
    ``spec`` is the shard's bin's (TFRecord widths are the bin's) and ``bin`` its bound."""
    length, num_a = len(row["input_ids"]), row["num_a"]
    predicted = len(row["positions"])
    values = {"input_ids": list(row["input_ids"]), "input_mask": [1] * length,
              "segment_ids": [0] * num_a + [1] * (length - num_a),
              schema.WORD_STARTS: row.get("word_starts"),
              "masked_lm_positions": list(row["positions"]),
              "masked_lm_ids": list(row["targets"]),
              "masked_lm_weights": [1.0] * predicted}
    names = {name for name, _, _ in schema.features(spec.task, spec.masking)}
    if spec.dynamic and row.get("epoch") is not None:
        names.update(schema.MASK_FEATURES)
    order = [name for name, _, _ in schema.features(spec.task)]
    order.insert(order.index("segment_ids") + 1, schema.WORD_STARTS)
    out = {}
    for name in order:
        if name not in names:
            continue
        if name == schema.LABEL_FEATURE:
            out[name] = [row["label"]] if fmt == "tfrecord" else row["label"]
            continue
        value = values[name]
        if fmt == "tfrecord":
            width = spec.max_predictions_per_seq if name in schema.MASK_FEATURES else \
                spec.max_seq_length
            value = value + [0.0 if name == "masked_lm_weights" else 0] * (width - len(value))
        out[name] = value
    out["tokens"] = [_token(vocab, i) for i in out["input_ids"]]
    out["index"] = row["index"]
    if spec.binned:
        out["bin"] = spec.max_seq_length
    return out


def pick_shard(output: Output, fmt: str, shard: int, bound: int | None) -> tuple[int, str]:
    """(index in the manifest's ``fmt`` shards, "") of ``--shard`` (within the length bin of
    ``bound`` when given), or (-1, why not)."""
    shards = output.shards(fmt)
    if bound is None:
        if not 0 <= shard < len(shards):
            return -1, (f"--shard {shard}: there are {len(shards)} {fmt} shards (0-"
                        f"{len(shards) - 1})")
        return shard, ""
    if not output.binned:
        return -1, f"--bin {bound}: {output.root} has no length bins (--length_bins)"
    found = next((b for b in output.bins if b.bound == bound), None)
    if found is None:
        return -1, (f"--bin {bound}: the bins' bounds are "
                    f"{', '.join(str(b.bound) for b in output.bins)}")
    mine = [i for i in range(len(shards)) if (b := output.shard_bin(fmt, i)) is not None
            and b.index == found.index]
    if not mine:
        return -1, f"--bin {bound}: bin {found.name} is empty (no shards)"
    if not 0 <= shard < len(mine):
        return -1, (f"--shard {shard}: bin {found.name} has {len(mine)} {fmt} shards (0-"
                    f"{len(mine) - 1})")
    return mine[shard], ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.tool_parser("python -m pipeline.inspect", __doc__.split("\n\n")[0])
    parser.add_argument("--format", choices=("tfrecord", "parquet"), default=None,
                        help="which shards to read (default: tfrecord if written)")
    parser.add_argument("--shard", type=int, default=0,
                        help="shard index (default 0; with --bin: within that bin)")
    parser.add_argument("--bin", type=int, default=None, metavar="BOUND",
                        help="binned output (--length_bins): read the shards of the length bin "
                             "with this bound (e.g. 64)")
    parser.add_argument("--n", type=int, default=5, help="how many instances (default 5)")
    parser.add_argument("--seed", type=int, default=None,
                        help="pick --n instances at random with this seed (default: the first; "
                             "not the masks' seed: see --train_seed)")
    parser.add_argument("--record", type=int, action="append", default=[],
                        help="show this record of the shard (repeatable)")
    parser.add_argument("--ids", action="store_true", help="also print the raw ids")
    parser.add_argument("--html", default=None, help="also write the instances to this page")
    parser.add_argument("--epoch", type=int, default=None,
                        help="dynamic data: show the masks the trainers draw in this epoch "
                             "(0, 1, ...)")
    parser.add_argument("--train_seed", type=int, default=None,
                        help=f"with --epoch: the training run's --seed (default "
                             f"{DEFAULT_TRAIN_SEED}, the trainers' default)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per instance: its features as stored "
                             "(dynamic data with --epoch: masked as the trainers see them), "
                             "tokens and index")
    args, _ = cli.parse_tool_args(parser, argv)
    if args.epoch is not None and args.epoch < 0:
        parser.error(f"--epoch {args.epoch}: epochs count from 0")
    if args.train_seed is not None and args.epoch is None:
        parser.error("--train_seed goes with --epoch (it picks whose masks to show)")
    train_seed = DEFAULT_TRAIN_SEED if args.train_seed is None else args.train_seed
    try:
        output = open_output(args.output_dir)
    except NotAnOutput as e:
        print(e, file=sys.stderr)
        return 1
    if args.epoch is not None and not output.dynamic:
        print(f"--epoch: {args.output_dir} holds static data: its masks were drawn once by the "
              f"pipeline and are stored, the same in every epoch (--epoch is for "
              f"--masking=dynamic output)", file=sys.stderr)
        return 2
    fmt = args.format or (output.formats or ["tfrecord"])[0]
    shards = output.shards(fmt)
    if not shards:
        print(f"{args.output_dir} has no {fmt} shards (formats: {output.formats})",
              file=sys.stderr)
        return 1
    shard, problem = pick_shard(output, fmt, args.shard, args.bin)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    try:
        rows, problems = select_rows(output, fmt, shard, n=args.n, seed=args.seed,
                                     records=args.record)
    except Exception as e:  # a bad --record, or a shard that cannot be read on
        where = f" (record {e.record})" if isinstance(e, ShardError) and e.record is not None \
            else ""
        what = str(e) if isinstance(e, (IndexError, ShardError)) else \
            f"cannot be read: {type(e).__name__}: {e}"
        print(f"{shards[shard]['path']}{where}: {what}; python -m pipeline.verify checks "
              f"the whole output", file=sys.stderr)
        return 1
    spec, vocab, path = shard_spec(output, fmt, shard), output.vocab, shards[shard]["path"]
    if args.epoch is not None:
        mask_for_epoch(output, rows, epoch=args.epoch, train_seed=train_seed, spec=spec)
    views = [view(row, vocab, file=path, spec=spec) for row in rows]
    invalid = [f"{path}, record {record} is not valid: {field + ': ' if field else ''}"
               f"{message}" for record, field, message in problems]
    if args.json:
        for row in rows:
            print(json.dumps(as_stored(row, fmt, spec, vocab), ensure_ascii=False))
        for line in invalid:
            print(line, file=sys.stderr)
    else:
        m = output.manifest
        masking = "" if not output.dynamic else (
            f", masking dynamic (shown: epoch {args.epoch}, training seed {train_seed})"
            if args.epoch is not None else ", masking dynamic (shown unmasked)")
        legend = WORDS_LEGEND if output.dynamic and args.epoch is None else LEGEND
        bins = "" if not output.binned else (
            f"; {len(output.bins)} length bins: " + ", ".join(
                f"{b.name} {b.instances:,}" for b in output.bins) + " instances; shown: "
            + (spec.bin_name if spec.binned else "no bin lists this shard"))
        print(f"{args.output_dir}: {m['total_instances']:,} instances in {len(shards)} {fmt} "
              f"shards; next_sentence {output.task}, max_seq_length {m['max_seq_length']}, "
              f"max_predictions_per_seq {m['max_predictions_per_seq']}, vocabulary "
              f"{len(output.vocab):,} tokens{masking}{bins}\n{legend}\n")
        for v in views:
            print(render_text(v, show_ids=args.ids) + "\n")
        for line in invalid:
            print(line)
    if args.html:
        words = output.dynamic and args.epoch is None
        body = (f"<h1>{html.escape(args.output_dir)}</h1>{legend_html(words)}"
                + "".join(render_html(v) for v in views))
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(page(f"inspect {args.output_dir}", body))
        print(f"wrote {args.html}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
