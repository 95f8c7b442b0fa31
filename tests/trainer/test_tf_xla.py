"""TPU readiness on a CPU: the TF train and eval steps compile with XLA (``jit_compile=True``) to
a static-shape program, as a TPU compiles them, and compute what the plain graph computes. A
dynamic shape or an op XLA cannot compile fails here, not on a TPU."""
import re

import pytest

tf = pytest.importorskip("tensorflow")

from tests.trainer import tf_fixtures as fx  # noqa: E402
from trainer import config as cfg  # noqa: E402
from trainer import data_contract  # noqa: E402
from trainer.run_setup import Run  # noqa: E402
from trainer.tf2 import loop  # noqa: E402

# Dropout off: XLA draws its random bits differently, and both runs must compute one function.
# LAMB and 2 micro-batches: the optimizer and the accumulation are compiled too. One layer: the
# layers are alike, and XLA's compile time grows with them.
MODEL = cfg.ModelConfig(vocab_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        **{**fx.TINY, "num_hidden_layers": 1})
TRAIN = cfg.TrainConfig(batch_size=4, grad_accum=2, num_train_steps=10, warmup_steps=1,
                        learning_rate=1e-2, optimizer="lamb", eval_steps=2,
                        shuffle_buffer=16, mixed_precision="fp32")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = fx.make_data_dir(str(tmp_path_factory.mktemp("xla")), num_instances=40,
                            num_shards=2, seed=3)
    return data_contract.load_data_dir(path, MODEL)


def make_trainer(data, output_dir, *, jit_compile, cls=loop.Trainer):
    run = Run(model_config=MODEL, train_config=TRAIN, data=data, output_dir=str(output_dir))
    return cls(run, tf.distribute.get_strategy(), jit_compile=jit_compile)


def dynamic_dims(hlo: str) -> list:
    """Bounded-dynamic dimensions ("<=N") in an HLO module: shapes a TPU program must not have."""
    return re.findall(r"\w+\[[^\]]*<=\d+[^\]]*\]", hlo)


def test_xla_compiled_steps_have_static_shapes_and_match_the_graph(data, tmp_path):
    results = {}
    for jit in (False, True):
        trainer = make_trainer(data, tmp_path / str(jit), jit_compile=jit)
        batches = iter(trainer.train_dataset())
        results[jit] = ([trainer.train_steps(batches, 1) for _ in range(3)],
                        trainer.evaluate(trainer.eval_input(data)))
    for plain, xla in zip(results[False][0], results[True][0]):
        for key, value in plain.items():
            assert xla[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    assert results[True][1] == pytest.approx(results[False][1], rel=1e-4)
    # the program XLA compiled for the update: [batch, predictions, vocab] logits, all static
    hlo = trainer.replica_step.experimental_get_compiler_ir(next(batches), next(batches))(
        stage="hlo")
    assert "f32[4,5,64]" in hlo
    assert dynamic_dims(hlo) == []


class DataDependentShape(loop.Trainer):
    """Eval that counts the distinct masked tokens: tf.unique's output size depends on data."""

    def _replica_eval(self, features):
        sums = super()._replica_eval(features)
        distinct = tf.unique(tf.reshape(features["masked_lm_ids"], [-1])).y
        return {**sums, "num_examples": sums["num_examples"]
                + 0.0 * tf.cast(tf.size(distinct), tf.float32)}


class StringOp(loop.Trainer):
    """Eval with a string op: XLA (hence a TPU) has no kernel for it."""

    def _replica_eval(self, features):
        sums = super()._replica_eval(features)
        digits = tf.strings.length(tf.strings.as_string(features["masked_lm_ids"]))
        return {**sums, "num_examples": sums["num_examples"]
                + 0.0 * tf.cast(tf.reduce_sum(digits), tf.float32)}


def test_the_xla_check_catches_dynamic_shapes_and_ops_xla_cannot_compile(data, tmp_path):
    """The checks above have teeth: both steps run as plain graphs, and neither passes XLA."""
    dynamic = make_trainer(data, tmp_path, jit_compile=True, cls=DataDependentShape)
    batch = next(iter(dynamic.eval_input(data)[0].dataset))
    assert dynamic_dims(dynamic.replica_eval.experimental_get_compiler_ir(batch)(stage="hlo"))
    plain = make_trainer(data, tmp_path, jit_compile=False, cls=StringOp)
    assert plain.evaluate(plain.eval_input(data))["examples"] == 8
    compiled = make_trainer(data, tmp_path, jit_compile=True, cls=StringOp)
    with pytest.raises(tf.errors.InvalidArgumentError, match="unsupported operations.*AsString"):
        compiled.evaluate(compiled.eval_input(data))
