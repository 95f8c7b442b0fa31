"""BERT's optimizers in Keras 3: AdamW or LAMB, linear warmup then linear decay.

The schedule is ``trainer.config.learning_rate`` written in TF ops (a test checks they agree step
by step), evaluated at ``optimizer.iterations`` = updates already applied, as that function
expects. Gradients arrive here already summed over replicas and clipped by the *global* norm
(see ``loop.py``): Keras's optimizer would otherwise all-reduce them again, and its own clipping
options clip each replica's partial gradient, which makes N replicas train differently from one.
"""
from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from trainer.config import TrainConfig


class BertSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = base_lr*(step+1)/warmup for step < warmup, then base_lr*(total-step)/
    (total-warmup) down to 0 at ``total_steps``, 0 after. ``step`` = updates already applied."""

    def __init__(self, base_lr: float, warmup_steps: int, total_steps: int):
        self.base_lr = float(base_lr)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.base_lr * (step + 1.0) / float(max(1, self.warmup_steps))
        decay = self.base_lr * (float(self.total_steps) - step) / float(
            max(1, self.total_steps - self.warmup_steps))
        after = tf.where(step >= float(self.total_steps), 0.0, decay)
        return tf.where(step < float(self.warmup_steps), warm, after)

    def get_config(self):
        return {"base_lr": self.base_lr, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps}


def _pre_reduced(cls):
    """``cls`` that applies gradients as given instead of all-reducing them once more.

    Relies on Keras's TF-backend hook ``_all_reduce_sum_gradients``; if Keras renames it the
    gradients would be summed twice, which ``tests/trainer/test_tf_distributed.py`` catches
    (2 replicas must match 1 replica on the same global batch).
    """
    if not hasattr(cls, "_all_reduce_sum_gradients"):
        raise RuntimeError(f"{cls.__name__} has no _all_reduce_sum_gradients: the Keras TF "
                           "backend changed; check trainer/tf2/optim.py")

    class PreReduced(cls):
        def _all_reduce_sum_gradients(self, grads_and_vars):
            return list(grads_and_vars)

    PreReduced.__name__ = f"PreReduced{cls.__name__}"
    return PreReduced


def make_optimizer(config: TrainConfig, *, no_decay: Sequence = ()) -> keras.optimizers.Optimizer:
    """AdamW or LAMB with BertSchedule and decoupled weight decay (none on ``no_decay``).

    "lamb" is ``keras.optimizers.Lamb``: bias-corrected, with the weight decay applied first
    and decoupled (``w -= lr * wd * w``), outside the trust ratio, where the LAMB paper puts
    it inside; at BERT's 0.01 the difference is small. The PyTorch trainer's ``Lamb``
    (trainer/pt/model.py) follows this rule step for step (tests/trainer/test_lamb.py).
    """
    schedule = BertSchedule(config.learning_rate, config.warmup_steps, config.num_train_steps)
    kwargs = dict(learning_rate=schedule, weight_decay=config.weight_decay,
                  beta_1=config.adam_beta1, beta_2=config.adam_beta2,
                  epsilon=config.adam_epsilon)
    base = {"adamw": keras.optimizers.AdamW, "lamb": keras.optimizers.Lamb}[config.optimizer]
    optimizer = _pre_reduced(base)(**kwargs)
    if no_decay:
        optimizer.exclude_from_weight_decay(var_list=list(no_decay))
    return optimizer


def clip_by_global_norm(grads, max_norm: float):
    """(clipped grads, global norm); max_norm <= 0 disables clipping."""
    norm = tf.linalg.global_norm(grads)
    if max_norm <= 0:
        return grads, norm
    clipped, _ = tf.clip_by_global_norm(grads, max_norm, use_norm=norm)
    return clipped, norm
