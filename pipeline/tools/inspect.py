"""Show instances of a finished output as text, decoded with the data's own vocab.txt.

    python -m pipeline.inspect --output_dir output                     # shard 0, first 5
    python -m pipeline.inspect --output_dir output --seed 1 --n 3      # 3 at random
    python -m pipeline.inspect --output_dir output --record 122 --format parquet
    python -m pipeline.inspect --output_dir gs://bucket/data --html sample.html

Each instance: where it is (file, record), its lengths, the sentence label in words, the text
as ``[CLS] A [SEP] B [SEP]`` with every masked group (adjacent masked positions: for Chinese
the characters of one word) shown as «what the model must predict→what the input holds»,
and a table of the groups: positions, targets, and per token [MASK], kept or the random
replacement. ``--html`` writes the same as a page with colours.
"""
from __future__ import annotations

import dataclasses
import html
import sys
import unicodedata
from collections.abc import Iterator, Sequence

import numpy as np

from pipeline import schema
from pipeline.readers.output import NotAnOutput, Output, open_output
from pipeline.readers.rows import Spec, check_chunk
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


@dataclasses.dataclass
class Token:
    text: str
    kind: str  # "special", "plain", or for a masked position "mask", "kept", "random"
    target: str | None = None
    group: int = 0  # 1-based group number of a masked position


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

    def label_text(self) -> str:
        if self.label is None:
            return "none (next_sentence none: one segment, masked-LM only)"
        return f"{self.label} = {LABELS[self.task].get(self.label, 'not a valid label')} " \
               f"({self.task.upper()})"

    def counts(self) -> dict:
        kinds = [t.kind for t in self.tokens]
        return {k: kinds.count(k) for k in ("mask", "kept", "random")}


def view(row: dict, vocab: Sequence[str], *, file: str, spec: Spec) -> View:
    """A checked row (``Rows.row``) → what to show."""
    ids, num_a = row["input_ids"], row["num_a"]
    token = lambda i: vocab[i] if 0 <= i < len(vocab) else f"<id {i}>"  # noqa: E731
    tokens = [Token(token(i), "special" if token(i) in (schema.CLS, schema.SEP) else "plain")
              for i in ids]
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
                ids={k: row[k] for k in ("input_ids", "positions", "targets")})


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
    """A segment's input as text, each masked group as «targets→inputs»."""
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
    lines = [f"── {v.file}, record {v.record} " + "─" * max(4, 60 - len(v.file)),
             f"length {v.length} of {v.max_length}: {sizes}, {pad} padding",
             f"label  {v.label_text()}",
             f"masked {m} of at most {v.predictions_limit} in {len(v.groups)} groups: "
             f"{c['mask']} [MASK], {c['kept']} kept, {c['random']} random"]
    names = ("A", "B") if len(v.segments) == 2 else ("text",)
    for name, seg in zip(names, v.segments):
        lines.append(f"{name + ':':<6} {segment_text(seg)}")
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
"""


def render_html(v: View) -> str:
    e = html.escape
    c = v.counts()
    parts = [f'<div class="inst"><div class="meta"><b>{e(v.file)}</b>, record {v.record} · '
             f'length {v.length} of {v.max_length} · label {e(v.label_text())} · masked '
             f'{sum(c.values())} in {len(v.groups)} groups ({c["mask"]} [MASK], {c["kept"]} '
             f'kept, {c["random"]} random)</div><div class="seq">']
    for name, seg in zip("AB", v.segments):
        parts.append(f'<span class="seg seg{name}" title="segment {name}">')
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
    parts.append('</div><table><tr><th>group</th><th>positions</th><th>target</th>'
                 '<th>input</th></tr>')
    for g, positions in enumerate(v.groups, 1):
        toks = [v.tokens[p] for p in positions]
        cells = " ".join(f'<span class="{t.kind}">{e(_input_word(t))}</span>' for t in toks)
        parts.append(f"<tr><td>{g}</td><td>{_span(positions, '–')}</td>"
                     f"<td>{e(join_tokens([t.target for t in toks]))}</td><td>{cells}</td></tr>")
    parts.append("</table></div>")
    return "".join(parts)


def legend_html() -> str:
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
           records: Sequence[int]) -> tuple:
    """(views, problems) of the chosen records of one shard: ``records`` if given, else ``n``
    at random with ``seed``, else the first ``n``."""
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
    spec, vocab = Spec.of(output), output.vocab
    views, problems, want = [], [], set(wanted)
    if not want:
        return views, problems
    chunks = read_shard(output, fmt, entry["path"])
    try:
        for chunk in chunks:
            rows, found = check_chunk(chunk, spec)
            problems.extend(p for p in found if p[0] in want)
            views.extend(view(rows.row(k), vocab, file=entry["path"], spec=spec)
                         for k in np.flatnonzero(np.isin(rows.records, wanted)).tolist())
            if chunk.first + chunk.size > wanted[-1]:
                break
    finally:
        chunks.close()
    return views, problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.tool_parser("python -m pipeline.inspect", __doc__.split("\n\n")[0])
    parser.add_argument("--format", choices=("tfrecord", "parquet"), default=None,
                        help="which shards to read (default: tfrecord if written)")
    parser.add_argument("--shard", type=int, default=0, help="shard index (default 0)")
    parser.add_argument("--n", type=int, default=5, help="how many instances (default 5)")
    parser.add_argument("--seed", type=int, default=None,
                        help="pick --n instances at random with this seed (default: the first)")
    parser.add_argument("--record", type=int, action="append", default=[],
                        help="show this record of the shard (repeatable)")
    parser.add_argument("--ids", action="store_true", help="also print the raw ids")
    parser.add_argument("--html", default=None, help="also write the instances to this page")
    args, _ = cli.parse_tool_args(parser, argv)
    try:
        output = open_output(args.output_dir)
    except NotAnOutput as e:
        print(e, file=sys.stderr)
        return 1
    fmt = args.format or (output.formats or ["tfrecord"])[0]
    shards = output.shards(fmt)
    if not shards:
        print(f"{args.output_dir} has no {fmt} shards (formats: {output.formats})",
              file=sys.stderr)
        return 1
    if not 0 <= args.shard < len(shards):
        print(f"--shard {args.shard}: there are {len(shards)} {fmt} shards (0-"
              f"{len(shards) - 1})", file=sys.stderr)
        return 1
    try:
        views, problems = select(output, fmt, args.shard, n=args.n, seed=args.seed,
                                 records=args.record)
    except Exception as e:  # a bad --record, or a shard that cannot be read on
        where = f" (record {e.record})" if isinstance(e, ShardError) and e.record is not None \
            else ""
        what = str(e) if isinstance(e, (IndexError, ShardError)) else \
            f"cannot be read: {type(e).__name__}: {e}"
        print(f"{shards[args.shard]['path']}{where}: {what}; python -m pipeline.verify checks "
              f"the whole output", file=sys.stderr)
        return 1
    m = output.manifest
    print(f"{args.output_dir}: {m['total_instances']:,} instances in {len(shards)} {fmt} "
          f"shards; next_sentence {output.task}, max_seq_length {m['max_seq_length']}, "
          f"max_predictions_per_seq {m['max_predictions_per_seq']}, vocabulary "
          f"{len(output.vocab):,} tokens\n{LEGEND}\n")
    for v in views:
        print(render_text(v, show_ids=args.ids) + "\n")
    for record, field, message in problems:
        print(f"record {record} is not valid: {field + ': ' if field else ''}{message}")
    if args.html:
        body = (f"<h1>{html.escape(args.output_dir)}</h1>{legend_html()}"
                + "".join(render_html(v) for v in views))
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(page(f"inspect {args.output_dir}", body))
        print(f"wrote {args.html}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
