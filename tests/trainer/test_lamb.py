""""lamb" is one optimizer: the TF trainer's (Keras's Lamb, through trainer/tf2/optim.py) and
the PyTorch trainer's (trainer/pt/model.py) make the same updates from the same weights and
gradients, weight decay, its exclusions, the schedule and a zero-norm tensor included."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

import keras  # noqa: E402

from trainer.config import TrainConfig  # noqa: E402
from trainer.pt.model import build_optimizer, build_scheduler  # noqa: E402
from trainer.tf2 import optim  # noqa: E402

CONFIG = TrainConfig(optimizer="lamb", learning_rate=0.05, warmup_steps=2, num_train_steps=6,
                     weight_decay=0.1, adam_beta1=0.8, adam_beta2=0.9, adam_epsilon=1e-6)
# name: shape, initial scale. A matrix decays; the 1-D tensors do not (biases, LayerNorms);
# "fresh" starts at zero, where the trust ratio falls back to 1.
TENSORS = {"kernel": ((4, 3), 1.0), "bias": ((3,), 0.5), "fresh": ((5,), 0.0)}


class Params(torch.nn.Module):
    def __init__(self, values):
        super().__init__()
        for name, value in values.items():
            self.register_parameter(name, torch.nn.Parameter(torch.tensor(value)))


def test_keras_and_torch_lamb_make_the_same_updates():
    rng = np.random.default_rng(0)
    initial = {n: (s * rng.normal(size=shape)).astype(np.float32)
               for n, (shape, s) in TENSORS.items()}
    steps = [{n: rng.normal(size=shape).astype(np.float32) for n, (shape, _) in TENSORS.items()}
             for _ in range(5)]  # warmup and decay of the schedule, bias correction's early steps

    variables = {n: keras.Variable(v, name=n) for n, v in initial.items()}
    keras_opt = optim.make_optimizer(CONFIG, no_decay=[variables["bias"], variables["fresh"]])
    module = Params(initial)
    torch_opt = build_optimizer(module, CONFIG)
    scheduler = build_scheduler(torch_opt, CONFIG)
    assert [g["weight_decay"] for g in torch_opt.param_groups] == [0.1, 0.0]

    for grads in steps:
        keras_opt.apply_gradients([(tf.constant(grads[n]), variables[n]) for n in TENSORS])
        for name, p in module.named_parameters():
            p.grad = torch.tensor(grads[name])
        torch_opt.step()
        scheduler.step()
        for name, p in module.named_parameters():
            np.testing.assert_allclose(p.detach().numpy(), variables[name].numpy(),
                                       rtol=2e-5, atol=1e-6, err_msg=name)
    moved = {n: float(np.abs(variables[n].numpy() - initial[n]).max()) for n in TENSORS}
    assert min(moved.values()) > 1e-3, moved  # every tensor was updated, "fresh" too
