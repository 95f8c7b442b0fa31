"""Run Google's create_pretraining_data.py (PyPI bert-tensorflow 1.0.4) as its own process.

The module is written against TF1 names (``tf.flags``, ``tf.gfile``, ``tf.app``); it is imported
with ``tensorflow`` bound to ``tensorflow.compat.v1`` (as tests/google_reference.py does), then
its ``main`` runs under absl's ``app.run`` with the usual flags::

    python bench/run_google.py --input_file=in.txt --output_file=out.tfrecord \
        --vocab_file=vocab.txt --do_lower_case=True --max_seq_length=128 \
        --max_predictions_per_seq=20 --masked_lm_prob=0.15 --dupe_factor=5 --random_seed=12345
"""
import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load():
    import tensorflow as tf

    real = sys.modules["tensorflow"]
    sys.modules["tensorflow"] = tf.compat.v1
    try:
        return importlib.import_module("bert.create_pretraining_data")
    finally:
        sys.modules["tensorflow"] = real


if __name__ == "__main__":
    from absl import app

    module = load()
    for name in ("input_file", "output_file", "vocab_file"):
        module.flags.mark_flag_as_required(name)
    app.run(module.main)  # parses sys.argv into the module's flags; logs go to stderr
