"""Command-line tools beside the job: the built-in LTP model, the sample corpora."""
