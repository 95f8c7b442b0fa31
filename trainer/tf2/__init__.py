"""TF2 / Keras 3 BERT pretraining trainer (TPU, GPUs or CPU) over the pipeline's TFRecord shards.

data.py: tf.data input from ``pipeline.schema``; model.py: keras-hub BertBackbone + MLM/NSP heads,
losses and optimizer; hf_convert.py: weights to and from Hugging Face ``BertForPreTraining``;
loop.py: strategy, custom training loop, checkpoints, eval. ``trainer/train_tpu.py`` is the CLI.
"""
