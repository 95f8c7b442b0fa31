"""Two replicas (MirroredStrategy over 2 logical CPUs) train exactly like one replica holding
the same global batch: same per-step losses, same weights (loss sums are all-reduced before
dividing, gradients summed then clipped by their global norm; see trainer/tf2/loop.py).

Logical devices must be configured before TensorFlow initialises its devices, hence the
subprocess. Dropout is off so both runs compute the same function.
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
data_dir, out = sys.argv[1], sys.argv[2]
model = cfg.ModelConfig(vocab_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        **%(tiny)r)
data = data_contract.load_data_dir(data_dir, model)

def run(strategy, batch_size, output_dir):
    train = cfg.TrainConfig(batch_size=batch_size, num_train_steps=6, warmup_steps=2,
                            learning_rate=1e-3, log_every=1, checkpoint_every=100,
                            shuffle_buffer=64, mixed_precision="fp32", max_grad_norm=0.5)
    result = loop.fit(Run(model_config=model, train_config=train, data=data,
                          output_dir=output_dir), strategy)
    losses = [line["loss"] for line in metrics.read(output_dir + "/metrics.jsonl")]
    return result, losses

one, one_losses = run(tf.distribute.get_strategy(), 8, out + "/one")
two, two_losses = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), 4, out + "/two")
diff = max(float(np.abs(a.numpy() - b.numpy()).max()) for a, b in
           zip(one.trainer.model.trainable_variables, two.trainer.model.trainable_variables))
print(json.dumps({"replicas": two.trainer.replicas, "one": one_losses, "two": two_losses,
                  "max_weight_diff": diff}))
'''


@pytest.mark.slow
def test_two_replicas_match_one_replica_on_the_same_global_batch(tmp_path):
    data_dir = fx.make_data_dir(str(tmp_path / "data"), num_instances=96, num_shards=4, seed=5)
    code = "import sys; sys.argv[1:] = %r\n" % [data_dir, str(tmp_path)] + SCRIPT % {
        "tiny": fx.TINY}
    result = json.loads(fx.run_python(code, timeout=400).strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert len(result["two"]) == len(result["one"]) == 6
    assert result["two"] == pytest.approx(result["one"], rel=1e-5)
    assert result["two"][-1] < result["two"][0]  # and it learns
    assert result["max_weight_diff"] < 1e-5
