"""One self-contained HTML page about a finished output: the job's configuration, the corpus
counts, plots of the instances, the vocabulary, the input files and the repairs made to the
input (``python -m pipeline.report``). ``tally`` counts in the shards, ``plots`` draws with
matplotlib, ``fonts`` embeds the CJK glyphs the page shows, ``page`` assembles the page; the
command line is in ``__main__``."""
