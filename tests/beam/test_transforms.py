"""Beam transforms on real Beam (TestPipeline + assert_that), real LTP and tokenizers."""
import gzip
import io
from collections import Counter

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.beam import dofns
from pipeline.beam.options import JobConfig, expand_config
from pipeline.beam.pieces import encode_piece, read_blocks
from pipeline.beam.transforms import MakeInstances
from pipeline.core.instance import Instance, InstanceBatch
from pipeline.core.wordpiece import WORD_START
from tests import realdata


def job_config(*flags):
    return JobConfig.from_options(PipelineOptions(list(flags)))


def test_source_names_are_relative_to_the_patterns_common_directory():
    base = dofns.source_base(["/m/c/b.txt", "/m/c/a/*.gz"])
    assert base == "/m/c"
    assert dofns.source_name("/m/c/a/x.gz", base) == "a/x.gz"
    assert dofns.source_name("/m/c/b.txt", base) == "b.txt"
    assert dofns.source_base(["gs://k/d/one.txt"]) == "gs://k/d"
    assert dofns.source_name("gs://k/d/one.txt", "gs://k/d") == "one.txt"
    assert dofns.source_base(["/data/2024*/part-*.txt"]) == "/data"
    assert dofns.source_base(["gs://k/d/*.txt", "gs://k/e/*.txt"]) == "gs://k"
    assert dofns.source_base(["gs://k/d/*.txt", "/local/*.txt"]) == ""


def _batch(first, count):
    """``count`` one-token instances whose token ids are first, first + 1, ..."""
    return InstanceBatch.from_instances(
        [Instance([first + k], 1, [], [], 0) for k in range(count)], 1 << 16)


@pytest.mark.parametrize("shards", [1, 3, 4])
def test_shard_plan_reads_every_instance_once_sizes_within_one(shards):
    sizes = [7, 0, 1, 30, 2, 1100]  # pieces of uneven sizes, one empty, one of several blocks
    batches = {f"p{k}": _batch(10_000 * k, n) for k, n in enumerate(sizes)}
    files, pieces = {}, []
    for k, (name, batch) in enumerate(batches.items()):
        files[name], classes = encode_piece(batch, shards, block_rows=256)
        pieces.append({"key": ("src", 100 * (len(sizes) - k)), "path": name,
                       "rows": len(batch), "classes": classes})
    offsets, totals = dofns.piece_offsets([(p["key"], [p["rows"]]) for p in pieces])
    assert totals == [sum(sizes)]
    by_shard = {s: [] for s in range(shards)}
    for piece in pieces:
        for shard, (key, path, blocks) in dofns.assign_classes(piece, offsets[piece["key"]],
                                                               shards):
            by_shard[shard].append((path, blocks))
    plan = sorted(by_shard.items())
    got = [sorted(t for path, blocks in sources
                  for part in read_blocks(io.BytesIO(files[path]), blocks)
                  for t in part.tokens.tolist()) for _, sources in plan]
    counts = [len(g) for g in got]
    assert max(counts) - min(counts) <= 1
    # Google's round-robin over pieces in key order: instance g goes to shard g % shards.
    order = [t for p in sorted(pieces, key=lambda p: p["key"])
             for t in batches[p["path"]].tokens.tolist()]
    assert got == [sorted(order[s::shards]) for s in range(shards)]


def _make_instances_dofn(config, vocab, tmp_path):
    return dofns.MakeInstancesDoFn(config, vocab, pieces_dir=str(tmp_path),
                                   filesystem_options={})


def test_ranges_gzip_whole_and_stats(tmp_path, small_ltp_model_dir):
    path = tmp_path / "docs.txt.gz"
    path.write_bytes(gzip.compress("第一句。\n第二句。\n\n第三句。\n".encode()))
    config = job_config(f"--input={path}", "--range_mb=0.001", "--dupe_factor=1",
                        f"--ltp_model={small_ltp_model_dir}")
    plan = dofns.PlanRangesDoFn(range_bytes=1000, filesystem_options={})
    size = path.stat().st_size
    assert list(plan.process((str(path), "docs.txt.gz", size, None, "google", "text"))) == [
        (str(path), "docs.txt.gz", 0, None, size, None, "google", "text")]
    with TestPipeline() as p:
        made = (p | beam.Create([(str(path), "docs.txt.gz", 0, None, size, None, "google",
                                  "text")])
                | beam.ParDo(_make_instances_dofn(config, realdata.vocab(), tmp_path)))
        assert_that(made | beam.Map(lambda piece: (
            piece["stats"]["documents"], piece["stats"]["sentences"], piece["stats"]["files"],
            piece["stats"]["ranges"], piece["path"].startswith("piece-"))),
            equal_to([(2, 3, 1, 1, True)]), label="stats")


def test_tokenize_groups_ltp_words_on_people_daily_text(small_ltp_model_dir):
    """Real LTP on real text: multi-character words become groups."""
    from pipeline.core.ranges import tokenize_documents
    from pipeline.core.segment import LtpSegmenter
    from pipeline.core.wordpiece import WordPieceTokenizer
    from pipeline.default_segmenter.peoples_daily import iter_paragraphs

    paragraphs = [p for _, p in zip(range(40), iter_paragraphs())]
    docs = [(f"doc:{i}", ["".join(p.words)]) for i, p in enumerate(paragraphs)]
    stats = Counter()
    out = list(tokenize_documents(docs, tokenizer=WordPieceTokenizer(realdata.vocab()),
                                  segmenter=LtpSegmenter(small_ltp_model_dir), batch_size=16,
                                  stats=stats))
    assert sorted(d for d, _ in out) == sorted(d for d, _ in docs)
    assert stats["sentences_segmented"] == 40
    groups = Counter()
    for _, sentences in out:
        for s in sentences:
            starts = [i for i, f in enumerate(s.flags) if f & WORD_START] + [len(s.ids)]
            groups.update(b - a for a, b in zip(starts, starts[1:]))
    # People's Daily is mostly two-character words: most groups are longer than one.
    assert groups[2] > groups[1] * 0.5 and sum(groups.values()) > 500


def test_config_yaml_is_overridden_by_flags(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("max_seq_length: 512\nmax_predictions_per_seq: 80\ndupe_factor: 5\n"
                      "output_formats: [parquet]\n")
    argv = expand_config([f"--config={preset}", "--dupe_factor=2"])
    config = JobConfig.from_options(PipelineOptions(argv))
    assert (config.max_seq_length, config.max_predictions_per_seq, config.dupe_factor) == \
        (512, 80, 2)
    assert config.output_formats == ("parquet",)


@pytest.mark.parametrize("flag", ["--output_formats=csv", "--num_shards=0",
                                  "--max_predictions_per_seq=600"])
def test_bad_flags_are_refused(flag):
    with pytest.raises(ValueError):
        job_config(flag)


@pytest.mark.parametrize("name", ["zh-128", "zh-512", "en-128", "en-512", "zh-roberta-512"])
def test_presets_load_and_name_a_real_vocab(name):
    import os

    from tests.realdata import REPO
    config = JobConfig.from_options(PipelineOptions(expand_config(
        [f"--config={os.path.join(REPO, 'configs', 'data', name + '.yaml')}"])))
    assert config.max_seq_length == int(name.split("-")[-1])
    assert config.next_sentence == ("none" if "roberta" in name else "nsp")
    assert config.max_predictions_per_seq == {128: 20, 512: 80}[config.max_seq_length]
    assert os.path.exists(config.vocab_file)
    assert ("chinese" in config.vocab_file) == name.startswith("zh")


@pytest.mark.parametrize("length,bins", [(128, (32, 64, 96, 128)),
                                         (512, (64, 128, 192, 256, 320, 384, 448, 512))])
def test_binned_presets_are_the_phases_with_bins(length, bins):
    import os

    from tests.realdata import REPO
    config = JobConfig.from_options(PipelineOptions(expand_config(
        [f"--config={os.path.join(REPO, 'configs', 'data', f'zh-{length}-bins.yaml')}"])))
    assert config.max_seq_length == length and config.bin_bounds == bins


def test_macbert_preset_is_ngram_sop_and_dynamic():
    import os

    from tests.realdata import REPO
    config = JobConfig.from_options(PipelineOptions(expand_config(
        [f"--config={os.path.join(REPO, 'configs', 'data', 'zh-macbert.yaml')}"])))
    assert (config.next_sentence, config.masking, config.dupe_factor) == ("sop", "dynamic", 1)
    assert config.ngram_lengths == (1, 2, 3, 4)
    assert config.ngram_weight_values == (0.4, 0.3, 0.2, 0.1)
    assert (config.max_seq_length, config.max_predictions_per_seq) == (512, 80)


def test_progress_metrics_are_reported(tmp_path, small_ltp_model_dir):
    from apache_beam.metrics.metric import MetricsFilter

    path = tmp_path / "docs.txt"
    path.write_text("一。\n二。\n\n三。\n", encoding="utf-8")
    config = job_config(f"--input={path}", f"--output_dir={tmp_path / 'out'}",
                        f"--ltp_model={small_ltp_model_dir}")
    p = TestPipeline()
    p | beam.Create([(str(path), "docs.txt", path.stat().st_size, None, "google", "text")]) \
        | MakeInstances(
        config, realdata.vocab(), {}, pieces_dir=str(tmp_path / "pieces"))
    result = p.run()
    result.wait_until_finish()
    counters = {r.key.metric.name: r.committed for r in
                result.metrics().query(MetricsFilter().with_namespace(dofns.NAMESPACE))[
                    "counters"]}
    assert counters["documents"] == 2 and counters["sentences"] == 3 and counters["tokens"] == 6
    dists = result.metrics().query(MetricsFilter().with_name("range_documents"))["distributions"]
    assert sum(d.committed.sum for d in dists) == 2
