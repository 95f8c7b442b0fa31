"""Two replicas (MirroredStrategy over 2 logical CPUs) train exactly like one replica holding
the same global batch: same per-step losses, same weights (loss sums are all-reduced before
dividing, gradients summed then clipped by their global norm; see trainer/tf2/loop.py).

Logical devices must be configured before TensorFlow initialises its devices, hence the
subprocess. Dropout is off so both runs compute the same function. The same holds on binned
data (length bins: every chunk of steps_per_execution steps from one bin, on both replicas).
"""
import json

import pytest

pytest.importorskip("tensorflow")

from tests.trainer import tf_fixtures as fx  # noqa: E402

SCRIPT = r'''
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from trainer import config as cfg, data_contract, metrics
from trainer.run_setup import Run
from trainer.tf2 import loop
data_dir, out, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
vocab = data_contract.read_manifest(data_dir)["vocab_size"]
model = cfg.ModelConfig(vocab_size=vocab, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, **%(tiny)r)
data = data_contract.load_data_dir(data_dir, model)

def run(strategy, batch_size, output_dir):
    train = cfg.TrainConfig(**{**dict(batch_size=batch_size, num_train_steps=6, warmup_steps=2,
                                      learning_rate=1e-3, log_every=1, checkpoint_every=100,
                                      shuffle_buffer=64, mixed_precision="fp32",
                                      max_grad_norm=0.5), **overrides})
    result = loop.fit(Run(model_config=model, train_config=train, data=data,
                          output_dir=output_dir), strategy)
    lines = metrics.read(output_dir + "/metrics.jsonl")
    return result, {k: [line[k] for line in lines] for k in ("loss", "padding_fraction")}

one, one_lines = run(tf.distribute.get_strategy(), 8, out + "/one")
two, two_lines = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), 4, out + "/two")
diff = max(float(np.abs(a.numpy() - b.numpy()).max()) for a, b in
           zip(one.trainer.model.trainable_variables, two.trainer.model.trainable_variables))
print(json.dumps({"replicas": two.trainer.replicas, "one": one_lines["loss"],
                  "two": two_lines["loss"], "padding": [one_lines["padding_fraction"],
                                                        two_lines["padding_fraction"]],
                  "bins": [[int(v.numpy()) for v in r.trainer.bin_examples] for r in (one, two)],
                  "max_weight_diff": diff}))
'''


def two_replicas(data_dir, out, **overrides) -> dict:
    code = "import sys; sys.argv[1:] = %r\n" % [data_dir, str(out), json.dumps(overrides)]
    result = json.loads(fx.run_python(code + SCRIPT % {"tiny": fx.TINY},
                                      timeout=400).strip().splitlines()[-1])
    assert result["padding"][0] == pytest.approx(result["padding"][1], rel=1e-6)
    return result


@pytest.mark.slow
def test_two_replicas_match_one_replica_on_the_same_global_batch(tmp_path):
    data_dir = fx.make_data_dir(str(tmp_path / "data"), num_instances=96, num_shards=4, seed=5)
    result = two_replicas(data_dir, tmp_path)
    assert result["replicas"] == 2
    assert len(result["two"]) == len(result["one"]) == 6
    assert result["two"] == pytest.approx(result["one"], rel=1e-5)
    assert result["two"][-1] < result["two"][0]  # and it learns
    assert result["max_weight_diff"] < 1e-5


@pytest.mark.slow
def test_two_replicas_match_one_replica_on_binned_data(tmp_path):
    """Length bins (16, 40 and the rest up to 64), chunks of 2 steps: each global batch from
    one bin, padded to its bound on both replicas; the same losses, weights and per-bin
    positions as one replica."""
    data_dir = fx.make_binned_dir(str(tmp_path / "data"), sentences=800, length_bins="16,40")
    result = two_replicas(data_dir, tmp_path, steps_per_execution=2, seed=3)
    assert result["replicas"] == 2 and len(result["two"]) == 6
    assert result["two"] == pytest.approx(result["one"], rel=1e-5)
    assert result["bins"][0] == result["bins"][1] and sum(result["bins"][0]) == 6 * 8
    assert len([n for n in result["bins"][0] if n]) > 1  # seed 3 draws two bins in 3 chunks
    assert result["max_weight_diff"] < 1e-5
