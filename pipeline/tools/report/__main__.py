"""Write an HTML report about a finished output.

    python -m pipeline.report --output_dir output --out report.html
    python -m pipeline.report --output_dir gs://bucket/data128 --out report.html \
        --max_instances 200000

The page is one file with its figures embedded: it opens offline and can be mailed. Counts of
the corpus come from stats.json; lengths, labels, masking and token frequencies are counted
in the shards (all of them, or about --max_instances: the first records of every shard,
an even sample since each shard is shuffled). Needs matplotlib (the ``report`` extra).

Chinese on the page reads without a CJK font on the reader's machine: the page embeds the
glyphs it shows, cut from Noto Sans CJK (``noto-cjk-sans-otc``, in the ``report`` extra; or
Debian/Ubuntu's ``fonts-noto-cjk``). Without either, the page says so at its top.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from pipeline.common.sizes import KB
from pipeline.readers.output import NotAnOutput, open_output
from pipeline.tools import cli


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.tool_parser("python -m pipeline.report", __doc__.split("\n\n")[0])
    parser.add_argument("--out", default="report.html", help="the page to write (local path)")
    parser.add_argument("--format", choices=("tfrecord", "parquet"), default=None,
                        help="which shards to count (default: parquet if written)")
    parser.add_argument("--max_instances", type=int, default=None,
                        help="count about this many instances instead of all")
    parser.add_argument("--examples", type=int, default=3, help="instances shown (default 3)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args, _ = cli.parse_tool_args(parser, argv)
    from pipeline.tools.report import fonts, page, plots, tally

    plots._pyplot()  # fail early, before reading, without matplotlib
    started = time.perf_counter()
    try:
        output = open_output(args.output_dir)
    except NotAnOutput as e:
        print(e, file=sys.stderr)
        return 1
    counted = tally.tally(output, fmt=args.format, max_instances=args.max_instances,
                          quiet=args.quiet)
    text = page.build(output, counted, examples=args.examples)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {args.out} ({len(text) / KB:,.0f} KB): {counted.instances:,} instances "
          f"counted in {time.perf_counter() - started:.1f} s")
    if fonts.NOTICE_START in text:
        print(f"report: no CJK font to embed, so Chinese shows only where the reader has "
              f"one: pip install {fonts.PIP_NAME} (or apt-get install fonts-noto-cjk) and "
              f"write the report again", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
