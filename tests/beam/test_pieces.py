"""The piece-file format is defined once (pipeline.beam.pieces): the names the job writes are the
names the output directory's rules recognise as temporary and delete, and the bytes it writes
read back as the same instances."""
import io
import uuid

import numpy as np

from pipeline.beam import output_dir, pieces
from pipeline.core.instance import Instance, InstanceBatch

RUN = "run-20261206-103000-1a2b3c4d"


def test_the_names_the_job_writes_are_the_names_the_output_rules_know(tmp_path):
    name = pieces.piece_name(("zh/a.txt", 1 << 20), 1_000_123, 4_567)
    assert pieces.parse_piece_name(name) == (1_000_123, 4_567)
    partial = f".tmp-{uuid.uuid4().hex}-{name}"  # fs.atomic_writer's name while writing
    for rel in (f"_pieces/{name}", f"_pieces/{RUN}/{name}", f"_pieces/{RUN}/{partial}"):
        assert output_dir.classify(rel) == "temporary", rel
    assert pieces.parse_piece_name(partial) is None  # the launcher counts complete ones only
    run_dir = tmp_path / "_pieces" / RUN
    run_dir.mkdir(parents=True)
    for file in (name, partial, "piece-notes.txt"):
        (run_dir / file).write_bytes(b"x")
    output_dir.delete_run_pieces(str(run_dir))
    assert sorted(p.name for p in run_dir.iterdir()) == ["piece-notes.txt"]


def test_a_piece_reads_back_by_shard_class():
    batch = InstanceBatch.from_instances([
        Instance(input_ids=[2, 4, 3], num_a=3, masked_lm_positions=[1],
                 masked_lm_ids=[5 + i], next_sentence_label=0) for i in range(10)])
    data, (classes,) = pieces.encode_piece(batch, 3, block_rows=2)
    assert [sum(rows for _, _, rows in blocks) for blocks in classes] == [4, 3, 3]
    for c, blocks in enumerate(classes):
        rows = InstanceBatch.concat(list(pieces.read_blocks(io.BytesIO(data), blocks)))
        assert rows.labels.tolist() == batch.take(np.arange(c, 10, 3)).labels.tolist()


def test_a_piece_with_length_bins_keeps_each_bins_rows_in_order():
    lengths = [3, 9, 4, 12, 5, 16, 7]
    batch = InstanceBatch.from_instances([
        Instance(input_ids=[2] * n, num_a=n, masked_lm_positions=[], masked_lm_ids=[],
                 next_sentence_label=0) for n in lengths])
    data, classes = pieces.encode_piece(batch, 2, block_rows=1, bounds=(4, 8, 16))
    got = [[[len(ids) for part in pieces.read_blocks(io.BytesIO(data), blocks)
             for ids in (i.input_ids for i in part.instances())] for blocks in per_class]
           for per_class in classes]
    # bin <= 4: rows of 3, 4 tokens; <= 8: 5, 7; <= 16: 9, 12, 16; class = rank in bin % 2.
    assert got == [[[3], [4]], [[5], [7]], [[9, 16], [12]]]
