"""Google's original create_pretraining_data.py (PyPI ``bert-tensorflow`` 1.0.4) as a reference.

The script does ``import tensorflow as tf`` and uses TF1 names (``tf.flags``, ``tf.gfile``), so it
is imported with ``tensorflow`` bound to ``tensorflow.compat.v1`` for the duration of the import.
"""
import importlib
import sys


def load_google_module(name: str = "bert.create_pretraining_data"):
    if name in sys.modules:
        return sys.modules[name]
    import tensorflow as tf

    real = sys.modules["tensorflow"]
    sys.modules["tensorflow"] = tf.compat.v1
    try:
        return importlib.import_module(name)
    finally:
        sys.modules["tensorflow"] = real
