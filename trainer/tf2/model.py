"""BERT for pretraining in Keras 3: keras-hub ``BertBackbone`` + masked-LM head + NSP head.

The masked-LM head is keras-hub's ``MaskedLMHead`` tied to the token embedding and fed the
*stored* ``masked_lm_positions``: the pipeline already masked the data (static masking, as in
Google's run_pretraining), so nothing is re-masked here. The NSP head is a 2-way Dense on the
pooled [CLS] output. Layer for layer this is Hugging Face's ``BertForPreTraining``, which is what
``hf_convert`` relies on to move weights both ways.

Losses and metrics follow google-research/bert ``run_pretraining``: MLM cross-entropy weighted by
``masked_lm_weights`` and divided by their sum, NSP cross-entropy averaged over examples. They
are computed from *sums* (``trainer.metrics.sum_keys``, finished there for both trainers under
the data's metric names) so that replicas can add their sums before dividing: a run on N replicas
then optimises exactly the loss of one replica holding the whole global batch.

Sentence tasks (the manifest's ``next_sentence``): SOP data trains the same 2-way head as NSP
(ALBERT reuses the feature: label 1 = swapped). Single-segment data ("none") trains masked-LM
only: the head's loss is left out and the pooler and the head are frozen (``build_model``), so
they keep their initial (or --init_checkpoint) values and are exported so.
"""
from __future__ import annotations

import keras
import keras_hub
import tensorflow as tf

from trainer.config import ModelConfig
from trainer.metrics import has_pair_head, mlm_denominator

# The features the model reads (Google's names); the labels are read by the losses.
MODEL_INPUTS = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions")


def activation(name: str):
    """Keras activation for a Hugging Face ``hidden_act`` name.

    keras-hub's BertBackbone hard-codes the tanh approximation of GELU (Google's TF BERT), while
    HF's "gelu" is the exact erf form; using the config's own activation keeps logits identical
    to ``transformers`` after a weight transfer (the two GELUs differ by up to ~1e-3).
    """
    table = {
        "gelu": lambda x: keras.activations.gelu(x, approximate=False),
        "gelu_new": lambda x: keras.activations.gelu(x, approximate=True),
        "gelu_pytorch_tanh": lambda x: keras.activations.gelu(x, approximate=True),
        "relu": keras.activations.relu,
    }
    if name not in table:
        raise ValueError(f"hidden_act {name!r} not supported; use one of {sorted(table)}")
    return table[name]


def _match_config(backbone: keras_hub.models.BertBackbone, config: ModelConfig) -> None:
    """Apply the ModelConfig fields BertBackbone's constructor does not take.

    The layers read these attributes at call time, so setting them after construction is
    enough: activation, LayerNorm epsilon and the attention-probability dropout rate.
    """
    act = activation(config.hidden_act)
    norms = [backbone.get_layer("embeddings_layer_norm")]
    for layer in backbone.transformer_layers:
        layer._feedforward_intermediate_dense.activation = act
        norms += [layer._self_attention_layer_norm, layer._feedforward_layer_norm]
        attention = layer._self_attention_layer
        attention._dropout = config.attention_probs_dropout_prob
        if getattr(attention, "_dropout_layer", None) is not None:
            attention._dropout_layer.rate = config.attention_probs_dropout_prob
    for norm in norms:
        norm.epsilon = config.layer_norm_eps


class BertPretrainer(keras.Model):
    """BertForPreTraining: features dict -> {"mlm_logits", "nsp_logits"} (float32).

    Inputs (Google's names, int32): input_ids, input_mask, segment_ids [batch, seq];
    masked_lm_positions [batch, preds]. Outputs: mlm_logits [batch, preds, vocab_size],
    nsp_logits [batch, 2]; index 0 = "B follows A" (Google's label 0), or "A, B in order" for
    SOP data (``schema.SOP_IN_ORDER``).
    """

    def __init__(self, config: ModelConfig, *, dtype: str = "float32", **kwargs):
        super().__init__(**kwargs)
        if config.vocab_size is None:
            raise ValueError("model vocab_size is unset: resolve it from the manifest first")
        self.model_config = config
        init = keras.initializers.TruncatedNormal(stddev=config.initializer_range)
        self.backbone = keras_hub.models.BertBackbone(
            vocabulary_size=config.vocab_size, num_layers=config.num_hidden_layers,
            num_heads=config.num_attention_heads, hidden_dim=config.hidden_size,
            intermediate_dim=config.intermediate_size, dropout=config.hidden_dropout_prob,
            max_sequence_length=config.max_position_embeddings,
            num_segments=config.type_vocab_size, dtype=dtype)
        _match_config(self.backbone, config)
        self.mlm_head = keras_hub.layers.MaskedLMHead(
            token_embedding=self.backbone.token_embedding,
            intermediate_activation=activation(config.hidden_act),
            layer_norm_epsilon=config.layer_norm_eps, kernel_initializer=init,
            dtype=dtype, name="mlm_head")
        self.nsp_head = keras.layers.Dense(2, kernel_initializer=init, dtype=dtype,
                                           name="nsp_head")

    def call(self, features, training=False):
        out = self.backbone({"token_ids": features["input_ids"],
                             "segment_ids": features["segment_ids"],
                             "padding_mask": features["input_mask"]}, training=training)
        mlm = self.mlm_head(out["sequence_output"],
                            mask_positions=features["masked_lm_positions"])
        nsp = self.nsp_head(out["pooled_output"])
        return {"mlm_logits": tf.cast(mlm, tf.float32), "nsp_logits": tf.cast(nsp, tf.float32)}

    def no_decay_variables(self) -> list:
        """Biases and LayerNorm scales/offsets: BERT applies no weight decay to them."""
        out = []
        for layer in self._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, keras.layers.LayerNormalization):
                out += list(layer.trainable_weights)
        out += [v for v in self.trainable_weights if v.name.endswith("bias")]
        return out


def dummy_features(batch_size: int, *, max_seq_length: int,
                   max_predictions_per_seq: int) -> dict[str, tf.Tensor]:
    """All-zero int32 features of the given static shapes (builds variables)."""
    seq = tf.zeros([batch_size, max_seq_length], tf.int32)
    return {"input_ids": seq, "input_mask": tf.ones_like(seq), "segment_ids": seq,
            "masked_lm_positions": tf.zeros([batch_size, max_predictions_per_seq], tf.int32)}


def build_model(config: ModelConfig, *, max_seq_length: int, max_predictions_per_seq: int,
                dtype: str = "float32", next_sentence: str = "nsp") -> BertPretrainer:
    """A BertPretrainer with its variables created (call under ``strategy.scope()``).

    Initial weights come from Keras's seeded global generator (keras-hub's layers take no
    seed); callers that need reproducible inits call ``keras.utils.set_random_seed`` first.
    next_sentence "none": the pooler and the 2-way head get no gradient from a masked-LM-only
    loss, so they are made non-trainable (not in ``trainable_variables``: no optimizer slots,
    no weight decay), as the PyTorch trainer freezes them.
    """
    model = BertPretrainer(config, dtype=dtype, name="bert_pretrainer")
    model(dummy_features(1, max_seq_length=max_seq_length,
                         max_predictions_per_seq=max_predictions_per_seq))
    if not has_pair_head(next_sentence):
        model.backbone.get_layer("pooled_dense").trainable = False
        model.nsp_head.trainable = False
    return model


def loss_sums(outputs: dict[str, tf.Tensor], features: dict[str, tf.Tensor],
              next_sentence: str = "nsp") -> dict[str, tf.Tensor]:
    """Per-batch float32 scalars from which losses and metrics follow
    (``metrics.sum_keys(next_sentence)``; no sentence-head terms for "none", whose data has
    no ``next_sentence_labels``).

    Sums, not means, so replicas can all-reduce them first. MLM terms are weighted by
    masked_lm_weights (0 on padding predictions); accuracy uses the arg-max token.
    """
    logits = outputs["mlm_logits"]                                   # [B, P, V]
    ids = features["masked_lm_ids"]                                  # [B, P]
    weights = tf.cast(features["masked_lm_weights"], tf.float32)     # [B, P]
    mlm_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids, logits=logits)
    mlm_hit = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), ids), tf.float32)
    sums = {"mlm_loss_sum": tf.reduce_sum(mlm_ce * weights),
            "mlm_weight_sum": tf.reduce_sum(weights),
            "mlm_correct_sum": tf.reduce_sum(mlm_hit * weights)}
    if has_pair_head(next_sentence):
        nsp_logits = outputs["nsp_logits"]                               # [B, 2]
        nsp_labels = tf.reshape(features["next_sentence_labels"], [-1])  # [B]
        nsp_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=nsp_labels,
                                                                logits=nsp_logits)
        nsp_hit = tf.equal(tf.argmax(nsp_logits, -1, output_type=tf.int32), nsp_labels)
        sums["nsp_loss_sum"] = tf.reduce_sum(nsp_ce)
        sums["nsp_correct_sum"] = tf.reduce_sum(tf.cast(nsp_hit, tf.float32))
    sums["num_examples"] = tf.cast(tf.shape(ids)[0], tf.float32)
    return sums


def training_loss(sums: dict[str, tf.Tensor], *, global_mlm_weight: tf.Tensor,
                  global_batch_size: int) -> tf.Tensor:
    """This replica's share of the global loss; the replicas' shares add up to the loss
    (weighted-mean MLM CE + mean NSP/SOP CE, the latter only when ``sums`` has it) of the
    whole global batch, so summed gradients are the global batch's gradients whatever the
    number of replicas."""
    mlm = sums["mlm_loss_sum"] / mlm_denominator(tf.stop_gradient(global_mlm_weight))
    if "nsp_loss_sum" not in sums:  # next_sentence "none": masked-LM only
        return mlm
    return mlm + sums["nsp_loss_sum"] / float(global_batch_size)
