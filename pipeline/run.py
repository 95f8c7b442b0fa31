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
from collections.abc import Sequence

from pipeline.tools import console

console.hold_import_noise()  # before Beam: it warns on import about clients this job never uses
import apache_beam as beam  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402
from apache_beam.options.pipeline_options import (  # noqa
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    TestOptions,
)

from pipeline import schema  # noqa: E402
from pipeline.beam import direct_runner, dofns, fs, output_dir, transforms  # noqa: E402
from pipeline.beam.ltp_device import check_model_device  # noqa: E402
from pipeline.beam.options import (  # noqa
    JobConfig,
    check_flags,
    expand_config,
    parse_input,
    resolve_runner,
    str2bool,
    with_pattern,
)
from pipeline.beam.pieces import is_sketch, parse_piece_name  # noqa: E402
from pipeline.common.paths import is_remote, local_path  # noqa: E402
from pipeline.common.sizes import megabytes  # noqa: E402
from pipeline.core.ranges import is_compressed  # noqa: E402
from pipeline.core.wordpiece import read_vocab  # noqa: E402
from pipeline.readers.output import warning_messages  # noqa: E402
from pipeline.tools import progress  # noqa: E402
from pipeline.writers.manifest import sha256_hex  # noqa: E402

LOG = logging.getLogger("pipeline.run")


def absolute(path: str | None) -> str | None:
    """A local path made absolute (workers may run in another directory); others as given."""
    if path is None or is_remote(path):
        return path
    return os.path.abspath(local_path(path))


def watch_job(config: JobConfig, layout: output_dir.Layout,
              files: list[tuple[str, int]]) -> progress.JobWatch:
    """Progress lines while the job runs, from the files it writes (listed through Beam's
    filesystems, so on any runner and store): each range's piece file names its input bytes
    and instances; the shards appear under their final names when complete. The number of
    ranges is estimated from the file sizes (the job plans them itself)."""
    fmt = config.output_formats[0]
    shard_dir = fs.join(layout.shard_root,
                        schema.TFRECORD_DIR if fmt == "tfrecord" else schema.PARQUET_DIR)
    # With length bins, every bin's shards (a bin left empty writes none: the count then
    # stops short of the total).
    shards = {fs.join(layout.shard_root, schema.shard_path(
        fmt, i, config.num_shards, gzip=config.compression == "gzip", bound=bound))
        for i in range(config.num_shards) for bound in (config.bin_bounds or (None,))}

    def poll() -> progress.JobState:
        listed = [path for path, _ in fs.list_tree(layout.pieces_dir)]
        done = [parsed for parsed in map(parse_piece_name, listed) if parsed]
        return progress.JobState(
            ranges=len(done), bytes_read=sum(size for size, _ in done),
            instances=sum(rows for _, rows in done),
            shards_written=sum(path in shards for path, _ in fs.list_tree(shard_dir)),
            sketched=sum(is_sketch(path) for path in listed))

    ranges = sum(1 if is_compressed(path) else max(1, -(-size // config.range_bytes))
                 for path, size in files)
    return progress.JobWatch(poll, total_bytes=sum(size for _, size in files), ranges=ranges,
                             num_shards=len(shards),
                             emit=lambda line: LOG.info("progress: %s", line)).start()


def prepare_output_dir(config: JobConfig, options: PipelineOptions, run_id: str,
                       files: list[tuple[str, int]]) -> output_dir.Layout:
    """Everything that touches --output_dir before the job, in an order that loses nothing:
    guards (root, home, inputs inside, symlinks leaving it), the lock, then the plan (refuse a
    non-empty directory without --overwrite). Leftovers of earlier runs (their pieces, staged
    shards, partly written files) are deleted now; the previous output stays until the new
    one is complete. Returns the run's layout; the caller releases the lock."""
    out = config.output_dir
    output_dir.check_location(out, inputs=[path for path, _ in files])
    held = output_dir.read_lock(output_dir.lock_path(out))
    if held is not None and not config.break_lock:
        raise output_dir.LockedError(output_dir.describe_lock(output_dir.lock_path(out), held))
    plan = output_dir.plan(out, overwrite=config.overwrite)
    output_dir.acquire_lock(out, run_id, options=options, break_lock=config.break_lock)
    try:
        output_dir.warn_foreign(out, plan.foreign)
        if plan.temporary:
            LOG.info("removing %d temporary file(s) left under %s by earlier runs",
                     len(plan.temporary), out)
            output_dir.delete_below(out, plan.temporary)
        layout = output_dir.layout(out, run_id, temp_dir=config.temp_dir,
                                   previous=plan.previous)
        if layout.staged:
            LOG.info("the previous output under %s stays until this run is complete (new "
                     "shards are staged under %s)", out, layout.shard_root)
        return layout
    except BaseException:
        output_dir.release_lock(out, run_id)
        raise


def estimated_instances(config: JobConfig, input_bytes: int) -> int:
    """A generous guess of the instances ``input_bytes`` make: a token per 3 bytes (a Chinese
    character in UTF-8; English words take more), instances half full on average."""
    tokens = input_bytes / 3
    return int(config.dupe_factor * tokens / max(1, config.max_seq_length // 2)) + 1


def ltp_identity(config: JobConfig, *, build: bool = True) -> dict:
    """What segmented the text, for the manifest: the model as given (``spec``), where it is
    and the sha256 of its files (read where they are: nothing is copied or loaded). The
    default model is built here, once, if it is not cached yet (``build``): workers sharing
    this disk then find it."""
    if not config.do_whole_word_mask:
        return {"kind": "none", "reason": "--do_whole_word_mask=false: no segmentation"}
    from pipeline.core.segment import describe_model, is_neural
    from pipeline.default_segmenter import cache
    from pipeline.versions import version

    spec = config.ltp_model
    if not build and (spec == "default" or is_remote(spec)):
        # A dry run or a template: the model may not exist yet and is not read now.
        identity = {"kind": "legacy" if spec == "default" else None, "sha256": None,
                    "ltp_version": version("ltp"),
                    "note": "described when the job graph was built: not read, not hashed"}
        if spec == "default":
            identity["name"] = cache.MODEL_NAME
        else:
            identity["uri"] = spec
    elif spec == "default":
        identity = describe_model(str(cache.default_model_dir(verbose=config.verbose)))
    elif is_remote(spec):
        config_json = json.loads(fs.read_bytes(fs.join(spec, "config.json")))
        identity = {"kind": "neural" if is_neural(config_json) else "legacy",
                    "uri": spec, "sha256": fs.tree_sha256(spec), "ltp_version": version("ltp")}
    else:
        identity = describe_model(spec)
    if config.user_dict is not None and (build or not is_remote(config.user_dict)):
        from pipeline.core.segment import load_user_dict

        data = fs.read_bytes(config.user_dict)
        with fs.localized(config.user_dict) as local:
            words = len(load_user_dict(local))
        identity.update(user_dict=config.user_dict, user_dict_sha256=sha256_hex(data),
                        user_dict_words=words)
    identity["spec"] = spec
    return identity


def graph_only(options: PipelineOptions) -> str | None:
    """'dry run' or 'template' when the job must only be built, not run; else None."""
    test = options.view_as(TestOptions)
    if isinstance(test.dry_run, str):  # Beam takes the flag's text: "False" would be true
        test.dry_run = str2bool(test.dry_run)
    if options.view_as(GoogleCloudOptions).template_location:
        return "template"
    if test.dry_run:
        return "dry run"
    return None


def run(argv: Sequence[str] | None = None) -> dict:
    """Run the job; returns the manifest it wrote, or for a dry run or a template what was
    built (``{"built": "dry run" | "template", "runner", "transforms", "job_bytes"}``)."""
    started = time.time()  # "done in" counts everything: a first run's model build included
    argv = resolve_runner(expand_config(list(sys.argv[1:] if argv is None else argv)))
    check_flags(argv)
    options = PipelineOptions(argv)
    # The DoFns import pipeline.*: ship the main session's imports, not its globals.
    options.view_as(SetupOptions).save_main_session = False
    FileSystems.set_options(options)  # before anything is listed (S3 needs its options)
    config = JobConfig.from_options(options)
    config = dataclasses.replace(
        config, input=tuple(with_pattern(spec, absolute(parse_input(spec).pattern))
                            for spec in config.input),
        output_dir=absolute(config.output_dir), vocab_file=absolute(config.vocab_file),
        # a local model directory; "default" and hub names stay as they are
        ltp_model=absolute(config.ltp_model) if os.path.isdir(config.ltp_model)
        else config.ltp_model, user_dict=absolute(config.user_dict),
        temp_dir=absolute(config.temp_dir))
    only = graph_only(options)
    runner = str(options.view_as(StandardOptions).runner).rsplit(".", 1)[-1]  # short name
    if only == "template" and "Dataflow" not in runner:
        raise ValueError("--template_location makes a Dataflow template: it needs "
                         "--runner=DataflowRunner")
    vocab_text = fs.read_bytes(config.vocab_file).decode("utf-8")
    # A file without BERT's special tokens, or instance settings out of range, are refused
    # here, before anything is listed or touched.
    dofns.range_config(config, read_vocab(vocab_text))
    files = []
    if not only:  # fail fast, before any work and before --output_dir is touched
        listed = dofns.list_inputs(config.inputs())
        files, skipped = output_dir.skip_outputs([(f.path, f.size) for f, _ in listed],
                                                 current=config.output_dir)
        if skipped:
            LOG.warning("skipping %d file(s) the --input patterns match inside pipeline output "
                        "directories (e.g. %s): not corpus text", len(skipped), skipped[0])
        if not files:
            raise FileNotFoundError("--input matches only files of pipeline output "
                                    "directories: nothing to read")
        expected = estimated_instances(config, sum(size for _, size in files))
        if config.num_shards > expected:
            LOG.warning("--num_shards %d is more than the about %d instances %s of input can "
                        "make: most shards will be empty; fewer shards would do",
                        config.num_shards, expected,
                        megabytes(sum(size for _, size in files)))
    # The model is built (first run) and described before the output is touched.
    identity = ltp_identity(config, build=not only)
    check_model_device(config.ltp_device, identity.get("kind"))  # cuda for a legacy model

    def build(p: beam.Pipeline, layout: output_dir.Layout) -> None:
        transforms.build(p, config=config, layout=layout, vocab_text=vocab_text,
                         vocab_sha256=sha256_hex(vocab_text.encode("utf-8")),
                         ltp_identity=identity, fs_options=fs.filesystem_options(options))

    if only:
        p = beam.Pipeline(options=options)
        build(p, output_dir.layout(config.output_dir, output_dir.new_run_id(),
                                   temp_dir=config.temp_dir))
        return _build_only(p, options, only, runner)
    p = beam.Pipeline(options=options)  # the runner is made (and checked) here
    run_id = output_dir.new_run_id()
    existed = is_remote(config.output_dir) or os.path.isdir(config.output_dir)
    layout = prepare_output_dir(config, options, run_id, files)
    try:
        reading = {path for path, _ in files}
        formats = sorted({spec.input_format for f, spec in listed if f.path in reading})
        LOG.info("reading %d file(s), %s (%s format) → %s; max_seq_length=%d, dupe_factor=%d, "
                 "whole-word masking %s", len(files),
                 megabytes(sum(size for _, size in files)), " and ".join(formats),
                 config.output_dir, config.max_seq_length, config.dupe_factor,
                 "on" if config.do_whole_word_mask else "off")
        watch = None
        try:
            build(p, layout)
            with direct_runner.workers_forked(p):  # before the progress thread starts
                watch = None if config.quiet else watch_job(config, layout, files)
                p.run().wait_until_finish()
        except BaseException:
            output_dir.discard_run(layout)  # the previous output, if any, is untouched
            raise
        finally:
            if watch is not None:
                watch.stop()
    finally:
        output_dir.release_lock(config.output_dir, run_id)
        if not existed:
            output_dir.remove_if_empty(config.output_dir)  # a failed first run leaves nothing
    manifest = json.loads(fs.read_bytes(fs.join(config.output_dir, schema.MANIFEST_FILE)))
    bins = schema.length_bins(manifest)
    LOG.info("done in %.1f s: %d instances in %d shard(s)%s under %s",
             time.time() - started, manifest["total_instances"], manifest["num_shards"],
             f" in {len(bins)} length bins (" + ", ".join(
                 f"{schema.bin_dir(b['bound'])}: {b['instances']}" for b in bins)
             + " instances)" if bins else "", config.output_dir)
    try:
        stats = json.loads(fs.read_bytes(fs.join(config.output_dir, schema.STATS_FILE)))
    except (OSError, ValueError):
        stats = None
    for message in warning_messages(stats):
        LOG.warning("data: %s", message)
    if manifest["total_instances"] == 0:
        LOG.warning("no instances were made: is the input empty, or are all documents too "
                    "short? See %s/stats.json", config.output_dir)
    elif bins:  # a bin with fewer instances than --num_shards has empty shards
        fmt = config.output_formats[0]
        for b in bins:
            empty = sum(1 for s in b["shards"].get(fmt, []) if not s["instances"])
            if empty:
                LOG.warning("%d of %d shards of length bin %s are empty (the bin holds %d "
                            "instance(s)): pass a smaller --num_shards, or fewer --length_bins",
                            empty, len(b["shards"][fmt]), schema.bin_dir(b["bound"]),
                            b["instances"])
    else:
        empty = sum(1 for s in manifest["shards"][config.output_formats[0]]
                    if not s["instances"])
        if empty:
            LOG.warning("%d of %d shards are empty (%d instances): pass a smaller --num_shards",
                        empty, manifest["num_shards"], manifest["total_instances"])
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

    class ShowDefaults(argparse.HelpFormatter):
        """Each flag's default after its help, where it has one that the help does not say."""

        def _get_help_string(self, action):
            text = action.help or ""
            if action.default not in (None, False, argparse.SUPPRESS) and \
                    "Default:" not in text and action.option_strings:
                text += " (default: %(default)s)"
            return text

    parser = argparse.ArgumentParser(
        prog="python -m pipeline.run", description=__doc__.split("\n\n")[0],
        formatter_class=ShowDefaults,
        epilog="Every other flag goes to Beam and the runner (--runner, --direct_num_workers, "
               "--dask_client_address, --project, --s3_endpoint_url, ...); a flag that none of "
               "them knows stops the job before any work.")
    WwmOptions._add_argparse_args(parser)
    parser.print_help()


def console_flags(argv: list[str]) -> tuple[bool, bool]:
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


def main(argv: list[str] | None = None) -> None:
    if any(a in ("-h", "--help") for a in (sys.argv[1:] if argv is None else argv)):
        print_help()
        return
    quiet, verbose = console_flags(list(sys.argv[1:] if argv is None else argv))
    console.setup(quiet=quiet, verbose=verbose, argv=sys.argv[1:] if argv is None else argv)
    try:
        run(argv)
    except (FileNotFoundError, FileExistsError, ValueError, dofns.InputChangedError) as e:
        LOG.error("%s", e)
        sys.exit(2)


if __name__ == "__main__":
    main()
