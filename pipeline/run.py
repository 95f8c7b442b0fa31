"""Raw text → whole-word-masked BERT pretraining shards (TFRecord + Parquet + manifest.json).

Locally, on the built-in sample corpus and defaults::

    python -m pipeline.run --runner=DirectRunner

On a corpus, with all cores::

    python -m pipeline.run --runner=DirectRunner --direct_num_workers=0 \\
        --direct_running_mode=multi_processing \\
        --input='corpus/*.txt.gz' --output_dir=out --config=configs/zh-128.yaml

Anything that is not a data flag (``--runner``, ``--project``, ``--setup_file``, ...) goes to
Beam, so the same command runs on Dataflow, Flink or Spark (see README.md).
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import List, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from pipeline.beam import sinks, transforms
from pipeline.beam.options import JobConfig, expand_config
from pipeline.core.wordpiece import read_vocab
from pipeline.writers.manifest import sha256_hex

LOG = logging.getLogger("pipeline.run")


def resolve_inputs(globs: Sequence[str]) -> List[str]:
    """Every file the globs match, sorted; a glob that matches nothing is an error."""
    files = []
    for pattern, result in zip(globs, FileSystems.match(list(globs))):
        paths = [m.path for m in result.metadata_list]
        if not paths:
            raise FileNotFoundError(f"--input {pattern!r} matches no file")
        files.extend(paths)
    return sorted(set(files))


def prepare_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse a non-empty output dir unless --overwrite; then clear only our own files."""
    existing = [m.path for m in FileSystems.match([sinks.join(output_dir, "*")])[0].metadata_list] \
        if FileSystems.exists(output_dir) else []
    if existing and not overwrite:
        raise FileExistsError(
            f"--output_dir {output_dir} is not empty ({len(existing)} entries); "
            f"pass --overwrite to replace the pipeline's files there")
    if existing:
        ours = [sinks.join(output_dir, name) for name in sinks.PIPELINE_FILES]
        FileSystems.delete([p for p in ours if FileSystems.exists(p)])
    sinks.make_dirs(output_dir)
    for sub in ("tfrecord", "parquet"):
        sinks.make_dirs(sinks.join(output_dir, sub))


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def ltp_identity(config: JobConfig) -> dict:
    """What segmented the text, for the manifest (hashes the model files, loads nothing).

    The default model is built here, once, if it is not cached yet: workers then find it.
    """
    if not config.do_whole_word_mask:
        return {"kind": "none", "reason": "--do_whole_word_mask=false: no segmentation"}
    from pipeline.beam.dofns import localize
    from pipeline.core.segment import describe_model

    spec = config.ltp_model if config.ltp_model == "default" else localize(config.ltp_model)
    identity = describe_model(spec, user_dict=localize(config.user_dict)
                              if config.user_dict else None)
    identity["spec"] = config.ltp_model
    return identity


def run(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the job; returns the manifest it wrote."""
    argv = expand_config(list(sys.argv[1:] if argv is None else argv))
    if not any(a == "--runner" or a.startswith("--runner=") for a in argv):
        argv.append("--runner=DirectRunner")  # Beam's own default may try to download Prism
    options = PipelineOptions(argv)
    # The DoFns import pipeline.*: ship the main session's imports, not its globals.
    options.view_as(SetupOptions).save_main_session = False
    config = JobConfig.from_options(options)
    files = resolve_inputs(config.input)
    vocab_bytes = read_bytes(config.vocab_file)
    vocab = read_vocab(vocab_bytes.decode("utf-8"))
    prepare_output_dir(config.output_dir, config.overwrite)
    sinks.write_atomic(sinks.join(config.output_dir, "vocab.txt"), vocab_bytes)
    identity = ltp_identity(config)
    LOG.info("reading %d file(s) (%s format) → %s; max_seq_length=%d, dupe_factor=%d, "
             "whole-word masking %s", len(files), config.input_format, config.output_dir,
             config.max_seq_length, config.dupe_factor,
             "on" if config.do_whole_word_mask else "off")
    started = time.time()
    with beam.Pipeline(options=options) as p:
        transforms.build(p, config=config, files=files, vocab=vocab,
                         vocab_sha256=sha256_hex(vocab_bytes), ltp_identity=identity)
    manifest = json.loads(
        read_bytes(sinks.join(config.output_dir, "manifest.json")).decode("utf-8"))
    LOG.info("done in %.1f s: %d instances in %d shard(s) under %s",
             time.time() - started, manifest["total_instances"], manifest["num_shards"],
             config.output_dir)
    if manifest["total_instances"] == 0:
        LOG.warning("no instances were made: is the input empty, or are all documents too "
                    "short? See %s/stats.json", config.output_dir)
    return manifest


def main() -> None:
    # force: importing Beam may already have configured the root logger at WARNING level,
    # which would swallow our start and end lines.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        force=True)
    logging.getLogger("apache_beam").setLevel(logging.WARNING)  # keep our progress lines visible
    try:
        run()
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        LOG.error("%s", e)
        sys.exit(2)


if __name__ == "__main__":
    main()
