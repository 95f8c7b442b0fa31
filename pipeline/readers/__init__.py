"""Reading a finished output back (the tools ``inspect``, ``verify`` and ``report`` share it):
``output`` the directory, its manifest, vocabulary and files on any filesystem; ``tfrecord``
the framing and its CRCs; ``example`` tf.train.Example decoded into numpy columns; ``shards``
either format in chunks; ``rows`` checked, unpadded instances. Like the writers, this layer
depends on ``pipeline.schema`` (and the leaf helpers of ``pipeline.common``) only: it reads
the files, not the job. The tools' command lines are in ``pipeline.tools``."""
