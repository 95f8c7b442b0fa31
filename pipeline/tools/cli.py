"""The command line the tools that read an output share (inspect, verify, report):
``--output_dir`` and, for remote paths, the flags of Beam's filesystems, as the job takes them.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from pipeline.common.paths import FILESYSTEM_OPTION_GROUPS

FILESYSTEM_FLAGS_HELP = ("Flags of Beam's filesystems (--s3_endpoint_url, --project, "
                         "--hdfs_host, ...) are accepted for remote paths, as by the job.")


def tool_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The common start of the three tools' command lines."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     epilog=FILESYSTEM_FLAGS_HELP)
    parser.add_argument("--output_dir", required=True,
                        help="the job's --output_dir (local, gs://, s3://, ...)")
    return parser


def parse_tool_args(parser: argparse.ArgumentParser,
                    argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The tool's own flags; the rest go to Beam's filesystems (unknown ones are refused)."""
    args, rest = parser.parse_known_args(argv)
    use_filesystem_flags(rest)
    return args, rest


def use_filesystem_flags(flags: Sequence[str]) -> None:
    """Hand Beam's filesystems the flags the tool did not know; refuse any Beam does not know
    either (argparse's usage error, exit code 2). Beam is imported only when there are flags:
    a tool on a local output never imports it."""
    if not flags:
        return
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options import pipeline_options as po

    parser = po._BeamArgumentParser(allow_abbrev=False, prog="filesystem flags")
    for name in FILESYSTEM_OPTION_GROUPS:
        group = getattr(po, name, None)
        if group is not None:
            group._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(list(flags))
    if unknown:
        parser.error(f"unknown argument(s): {' '.join(unknown)}")
    FileSystems.set_options(po.PipelineOptions(list(flags)))
