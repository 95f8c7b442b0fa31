"""Raw text → whole-word-masked BERT pretraining data, on Apache Beam.

The rooms, from the bottom up (``tests/test_layering.py`` keeps the arrows one way):

- ``common/``: leaf helpers with one meaning everywhere (paths, sizes, digests, TFRecord
  framing);
- ``schema``, ``versions``: the contract the writers, readers and trainers share;
- ``core/``: pure Python: text, segmentation (LTP), WordPiece, instances, masking, seeds;
- ``default_segmenter/``: the built-in LTP model: its corpus, training, cache, evaluation;
- ``writers/``: the output's files (TFRecord, Parquet, manifest and statistics);
- ``readers/``: a finished output read back;
- ``beam/``: the job on Beam: options, DoFns, transforms, files, the output directory's rules,
  the piece files between the job's two halves;
- ``run``: the job's entry point (``python -m pipeline.run``);
- ``tools/``: the user's other command lines (inspect, verify, report, vocab, ltp_model) and
  what every command line shares; ``inspect``, ``verify``, ``report`` and ``vocab`` here
  only start them (``python -m pipeline.inspect``, ...);
- ``dev/``: developer utilities (the shipped sample corpora's generator);
- ``resources/``: the sample corpora, the vocabularies, their NOTICE.
"""
