"""Developer utilities: not part of the job or of a user's tools. ``sample_corpus`` regenerates
the sample corpora shipped under ``pipeline/resources/sample`` (and writes larger People's
Daily corpora for measurements: ``bench/corpora.py``)."""
