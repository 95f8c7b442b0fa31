"""Raw text → whole-word-masked BERT pretraining shards (TFRecord + Parquet + manifest.json).

Locally, on the built-in sample corpus and defaults::

    python -m pipeline.run --runner=DirectRunner

On a corpus, with all cores::

    python -m pipeline.run --runner=DirectRunner --direct_num_workers=0 \\
        --direct_running_mode=multi_processing \\
        --input='corpus/*.txt.gz' --output_dir=out --config=configs/data/zh-128.yaml

Anything that is not a data flag (``--runner``, ``--project``, ``--setup_file``, ...) goes to
Beam, so the same command runs on Dataflow, a Dask cluster (``--runner=DaskRunner``), Flink or
Spark (see README.md). An argument nobody knows stops the job before any work (exit code 2).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from typing import List, Optional, Sequence, Tuple

from pipeline import console

console.hold_import_noise()  # before Beam: it warns on import about clients this job never uses
import apache_beam as beam  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402
from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions,  # noqa
                                                  SetupOptions, StandardOptions, TestOptions)

from pipeline import progress, schema  # noqa: E402
from pipeline.beam import dofns, fs, transforms  # noqa: E402
from pipeline.beam.options import (JobConfig, check_flags, expand_config, resolve_runner,  # noqa
                                   str2bool)
from pipeline.core.ranges import is_compressed  # noqa: E402
from pipeline.core.wordpiece import read_vocab  # noqa: E402
from pipeline.writers.manifest import sha256_hex  # noqa: E402

LOG = logging.getLogger("pipeline.run")


def absolute(path: Optional[str]) -> Optional[str]:
    """A local path made absolute (workers may run in another directory); others as given."""
    if path is None or fs.is_remote(path):
        return path
    return os.path.abspath(fs.local_path(path))


def watch_job(config: JobConfig, files: List[Tuple[str, int]]) -> progress.JobWatch:
    """Progress lines while the job runs, from the files it writes (listed through Beam's
    filesystems, so on any runner and store): each range's piece file names its input bytes
    and instances; the shards appear under their final names when complete. The number of
    ranges is estimated from the file sizes (the job plans them itself)."""
    pieces = transforms.pieces_dir(config)
    fmt = config.output_formats[0]
    shard_dir = fs.join(config.output_dir,
                        schema.TFRECORD_DIR if fmt == "tfrecord" else schema.PARQUET_DIR)
    shards = {fs.join(config.output_dir, schema.shard_path(
        fmt, i, config.num_shards, gzip=config.compression == "gzip"))
        for i in range(config.num_shards)}

    def poll() -> progress.JobState:
        done = [parsed for parsed in (dofns.parse_piece_name(path)
                                      for path, _ in fs.list_tree(pieces)) if parsed]
        return progress.JobState(
            ranges=len(done), bytes_read=sum(size for size, _ in done),
            instances=sum(rows for _, rows in done),
            shards_written=sum(path in shards for path, _ in fs.list_tree(shard_dir)))

    ranges = sum(1 if is_compressed(path) else max(1, -(-size // config.range_bytes))
                 for path, size in files)
    return progress.JobWatch(poll, total_bytes=sum(size for _, size in files), ranges=ranges,
                             num_shards=config.num_shards,
                             emit=lambda line: LOG.info("progress: %s", line)).start()


def _is_ours(relative: str) -> bool:
    top = relative.split("/", 1)[0]
    return (top in schema.OUTPUT_DIRS or relative in schema.OUTPUT_FILES
            or top.startswith(".tmp-"))


def prepare_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse a non-empty output dir unless --overwrite; then delete only the pipeline's own
    files there (by listing them: object stores have no directories to test or delete)."""
    existing = [path for path, _ in fs.list_tree(output_dir)]
    if existing and not overwrite:
        raise FileExistsError(
            f"--output_dir {output_dir} is not empty ({len(existing)} files); "
            f"pass --overwrite to replace the pipeline's files there")
    prefix = output_dir.rstrip("/") + "/"
    fs.delete_files([p for p in existing if _is_ours(p[len(prefix):])])
    fs.remove_tree(prefix + schema.PIECES_DIR)
    fs.make_dirs(output_dir)
    for sub in (schema.TFRECORD_DIR, schema.PARQUET_DIR):
        fs.make_dirs(fs.join(output_dir, sub))


def ltp_identity(config: JobConfig, *, build: bool = True) -> dict:
    """What segmented the text, for the manifest: the model as given (``spec``), where it is
    and the sha256 of its files (read where they are: nothing is copied or loaded). The
    default model is built here, once, if it is not cached yet (``build``): workers sharing
    this disk then find it."""
    if not config.do_whole_word_mask:
        return {"kind": "none", "reason": "--do_whole_word_mask=false: no segmentation"}
    from pipeline.core import ltp_default
    from pipeline.core.segment import describe_model
    from pipeline.versions import version

    spec = config.ltp_model
    if not build and (spec == "default" or fs.is_remote(spec)):
        # A dry run or a template: the model may not exist yet and is not read now.
        identity = {"kind": "legacy" if spec == "default" else None, "sha256": None,
                    "ltp_version": version("ltp"),
                    "note": "described when the job graph was built: not read, not hashed"}
        if spec == "default":
            identity["name"] = ltp_default.MODEL_NAME
        else:
            identity["uri"] = spec
    elif spec == "default":
        identity = describe_model(str(ltp_default.default_model_dir(verbose=config.verbose)))
    elif fs.is_remote(spec):
        config_json = json.loads(fs.read_bytes(fs.join(spec, "config.json")))
        identity = {"kind": "neural" if config_json.get("nerual", False) else "legacy",
                    "uri": spec, "sha256": fs.tree_sha256(spec), "ltp_version": version("ltp")}
    else:
        identity = describe_model(spec)
    if config.user_dict is not None and (build or not fs.is_remote(config.user_dict)):
        from pipeline.core.segment import load_user_dict

        data = fs.read_bytes(config.user_dict)
        with fs.localized(config.user_dict) as local:
            words = len(load_user_dict(local))
        identity.update(user_dict=config.user_dict, user_dict_sha256=sha256_hex(data),
                        user_dict_words=words)
    identity["spec"] = spec
    return identity


def graph_only(options: PipelineOptions) -> Optional[str]:
    """'dry run' or 'template' when the job must only be built, not run; else None."""
    test = options.view_as(TestOptions)
    if isinstance(test.dry_run, str):  # Beam takes the flag's text: "False" would be true
        test.dry_run = str2bool(test.dry_run)
    if options.view_as(GoogleCloudOptions).template_location:
        return "template"
    if test.dry_run:
        return "dry run"
    return None


def run(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the job; returns the manifest it wrote, or for a dry run or a template what was
    built (``{"built": "dry run" | "template", "runner", "transforms", "job_bytes"}``)."""
    argv = resolve_runner(expand_config(list(sys.argv[1:] if argv is None else argv)))
    check_flags(argv)
    options = PipelineOptions(argv)
    # The DoFns import pipeline.*: ship the main session's imports, not its globals.
    options.view_as(SetupOptions).save_main_session = False
    FileSystems.set_options(options)  # before anything is listed (S3 needs its options)
    config = JobConfig.from_options(options)
    config = dataclasses.replace(
        config, input=tuple(absolute(p) for p in config.input),
        output_dir=absolute(config.output_dir), vocab_file=absolute(config.vocab_file),
        # a local model directory; "default" and hub names stay as they are
        ltp_model=absolute(config.ltp_model) if os.path.isdir(config.ltp_model)
        else config.ltp_model, user_dict=absolute(config.user_dict))
    only = graph_only(options)
    runner = str(options.view_as(StandardOptions).runner).rsplit(".", 1)[-1]  # short name
    if only == "template" and "Dataflow" not in runner:
        raise ValueError("--template_location makes a Dataflow template: it needs "
                         "--runner=DataflowRunner")
    vocab_text = fs.read_bytes(config.vocab_file).decode("utf-8")
    read_vocab(vocab_text)  # refuses a file without BERT's special tokens
    if not only:
        files = fs.match_inputs(config.input)  # fail fast, before any work
        prepare_output_dir(config.output_dir, config.overwrite)
        LOG.info("reading %d file(s), %s (%s format) → %s; max_seq_length=%d, dupe_factor=%d, "
                 "whole-word masking %s", len(files),
                 progress.megabytes(sum(size for _, size in files)), config.input_format,
                 config.output_dir,
                 config.max_seq_length, config.dupe_factor,
                 "on" if config.do_whole_word_mask else "off")
    identity = ltp_identity(config, build=not only)
    started = time.time()
    p = beam.Pipeline(options=options)
    transforms.build(p, config=config, vocab_text=vocab_text,
                     vocab_sha256=sha256_hex(vocab_text.encode("utf-8")),
                     ltp_identity=identity, fs_options=fs.filesystem_options(options))
    if only:
        return _build_only(p, options, only, runner)
    watch = None if config.quiet else watch_job(config, files)
    try:
        p.run().wait_until_finish()
    finally:
        if watch is not None:
            watch.stop()
    manifest = json.loads(fs.read_bytes(fs.join(config.output_dir, schema.MANIFEST_FILE)))
    LOG.info("done in %.1f s: %d instances in %d shard(s) under %s",
             time.time() - started, manifest["total_instances"], manifest["num_shards"],
             config.output_dir)
    if manifest["total_instances"] == 0:
        LOG.warning("no instances were made: is the input empty, or are all documents too "
                    "short? See %s/stats.json", config.output_dir)
    return manifest


def _build_only(p: beam.Pipeline, options: PipelineOptions, only: str, runner: str) -> dict:
    """Build (and on Dataflow translate) the job without running it; the output directory and
    the inputs are not touched."""
    if "Dataflow" in runner:
        result = p.run()  # DataflowRunner stops before submitting: a dry run or a template
        proto = result.job.proto_pipeline if only == "dry run" else p.to_runner_api()
    else:
        proto = p.to_runner_api()
    labels = sorted(t.unique_name for t in proto.components.transforms.values())
    built = {"built": only, "runner": runner, "transforms": labels,
             "job_bytes": proto.ByteSize()}
    if only == "template":
        LOG.info("template written to %s (%d transforms); nothing ran and --output_dir was not "
                 "touched", options.view_as(GoogleCloudOptions).template_location, len(labels))
    else:
        LOG.info("dry run: the job was built for %s (%d transforms, %d bytes of pipeline "
                 "description); nothing was submitted and --output_dir was not touched",
                 runner, len(labels), built["job_bytes"])
    return built


def print_help() -> None:
    import argparse

    from pipeline.beam.options import WwmOptions

    parser = argparse.ArgumentParser(
        prog="python -m pipeline.run", description=__doc__.split("\n\n")[0],
        epilog="Every other flag goes to Beam and the runner (--runner, --direct_num_workers, "
               "--dask_client_address, --project, --s3_endpoint_url, ...); a flag that none of "
               "them knows stops the job before any work.")
    WwmOptions._add_argparse_args(parser)
    parser.print_help()


def console_flags(argv: List[str]) -> Tuple[bool, bool]:
    """--quiet and --verbose (flags or --config), read before the job to set up logging."""
    import argparse

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name in ("quiet", "verbose"):
        pre.add_argument(f"--{name}", type=str2bool, nargs="?", const=True, default=False)
    try:
        known, _ = pre.parse_known_args(expand_config(argv))
    except (ValueError, OSError, SystemExit):  # run() reports the problem
        return False, False
    return known.quiet, known.verbose


def main(argv: Optional[List[str]] = None) -> None:
    if any(a in ("-h", "--help") for a in (sys.argv[1:] if argv is None else argv)):
        print_help()
        return
    quiet, verbose = console_flags(list(sys.argv[1:] if argv is None else argv))
    console.setup(quiet=quiet, verbose=verbose)
    try:
        run(argv)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        LOG.error("%s", e)
        sys.exit(2)


if __name__ == "__main__":
    main()
