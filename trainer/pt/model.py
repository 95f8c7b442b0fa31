"""BertForPreTraining, its losses and metrics as Google defines them, and the optimizer.

The MLM head runs only on the masked positions ([B, P] gathered from [B, S]), as Google's
run_pretraining does: the vocab projection is the largest matmul of a small BERT, and P = 20 of
S = 128 positions is 6x less work than transformers' full-sequence ``labels=`` path. The loss is
the same number (``tests/trainer/test_torch_model.py`` checks it against ``labels=``).

Sentence tasks (the manifest's ``next_sentence``): SOP data trains ``cls.seq_relationship``
exactly as NSP data does (the same feature; label 1 = swapped). Single-segment data ("none")
trains masked-LM only: the loss has no sentence term, and the pooler and ``seq_relationship``
are frozen (no gradient, no optimizer state, no weight decay), so the export carries them as
they started, as the TF trainer does.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertForPreTraining

from trainer.config import ModelConfig, TrainConfig, learning_rate
from trainer.hf_export import hf_bert_config
from trainer.metrics import has_pair_head, mlm_denominator


def build_model(model_config: ModelConfig, *, init_checkpoint: str | None = None,
                generator_seed: int | None = None) -> BertForPreTraining:
    """A BertForPreTraining of ``model_config``: fresh, or with the weights of an HF directory
    (``--init_checkpoint``, whose shape ``run_setup`` has checked; its config.json does not
    replace ours, so dropout and the like are the run's).

    Fresh init draws from torch's process RNG (transformers offers no generator); with
    generator_seed it runs under ``torch.random.fork_rng`` so the caller's RNG is untouched and
    every rank builds identical weights.
    """
    config = hf_bert_config(model_config)
    if init_checkpoint:
        return BertForPreTraining.from_pretrained(init_checkpoint, config=config)
    if generator_seed is None:
        return BertForPreTraining(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator_seed)
        return BertForPreTraining(config)


class Pretrainer(nn.Module):
    """Wraps BertForPreTraining so DDP sees one forward that returns loss and head outputs.

    forward(batch) -> {"loss": [], "mlm_logits": [B, P, V], "nsp_logits": [B, 2],
    "sums": ``metric_sums``}; without "nsp_logits" (and the head's sums) for next_sentence
    "none", whose pooler and head this constructor freezes.
    """

    def __init__(self, model: BertForPreTraining, next_sentence: str = "nsp"):
        super().__init__()
        self.model = model
        self.next_sentence = next_sentence
        self.pair_head = has_pair_head(next_sentence)
        if not self.pair_head:  # they would get no gradient: DDP and the optimizer skip them
            for module in (model.bert.pooler, model.cls.seq_relationship):
                module.requires_grad_(False)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        outputs = self.model.bert(input_ids=batch["input_ids"],
                                  attention_mask=batch["attention_mask"],
                                  token_type_ids=batch["token_type_ids"])
        sequence, pooled = outputs[0], outputs[1]            # [B, S, H], [B, H]
        positions = batch["masked_lm_positions"]             # [B, P]
        index = positions.unsqueeze(-1).expand(-1, -1, sequence.size(-1))
        gathered = torch.gather(sequence, 1, index)           # [B, P, H]
        out = {"mlm_logits": self.model.cls.predictions(gathered)}  # [B, P, V]
        if self.pair_head:
            out["nsp_logits"] = self.model.cls.seq_relationship(pooled)  # [B, 2]
        sums = metric_sums(out["mlm_logits"], out.get("nsp_logits"), batch)
        loss = sums["mlm_loss_sum"] / mlm_denominator(sums["mlm_weight_sum"])
        if self.pair_head:
            loss = loss + sums["nsp_loss_sum"] / sums["num_examples"]
        return {"loss": loss, **out, "sums": sums}


def metric_sums(mlm_logits: torch.Tensor, nsp_logits: torch.Tensor | None,
                batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``trainer.metrics.sum_keys`` of one batch (float32 scalars); the sentence head's terms
    only with ``nsp_logits`` (NSP or SOP data).

    MLM terms are weighted by masked_lm_weights (padding predictions weigh 0); sentence-head
    terms count every example once.
    """
    weights = batch["masked_lm_weights"].float().reshape(-1)                # [B*P]
    ids = batch["masked_lm_ids"].reshape(-1)
    logits = mlm_logits.float().reshape(ids.numel(), -1)                    # [B*P, V]
    nll = F.cross_entropy(logits, ids, reduction="none")  # rows contiguous: fast log_softmax
    hits = (logits.argmax(-1) == ids).float()
    sums = {"mlm_loss_sum": (nll * weights).sum(), "mlm_weight_sum": weights.sum(),
            "mlm_correct_sum": (hits * weights).sum()}
    if nsp_logits is not None:
        nsp = nsp_logits.float()
        labels = batch["next_sentence_label"]
        sums["nsp_loss_sum"] = F.cross_entropy(nsp, labels, reduction="sum")
        sums["nsp_correct_sum"] = (nsp.argmax(-1) == labels).float().sum()
    num_examples = batch["masked_lm_ids"].shape[0]
    sums["num_examples"] = torch.tensor(float(num_examples), device=mlm_logits.device)
    return sums


def param_groups(model: nn.Module, weight_decay: float) -> list:
    """Decay every weight matrix; not biases or LayerNorm parameters (as BERT does)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2019) with the update rule of ``keras.optimizers.Lamb``, so that
    "lamb" is one optimizer in both trainers (tests/trainer/test_lamb.py runs steps of both
    on the same weights and gradients). Per tensor, at update t = 1, 2, ...::

        w <- w - lr * wd * w                        decoupled decay first (wd 0 in no-decay groups)
        m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
        u  = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)      bias-corrected Adam direction
        w <- w - lr * (||w|| / ||u||) * u           trust ratio 1 when either norm is 0

    The decay stays outside the trust ratio, as Keras applies it (the paper puts it inside).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                if wd:
                    p.sub_(p * (wd * lr))
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                update = (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + eps)
                w_norm, u_norm = p.norm(), update.norm()
                ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm,
                                    torch.ones_like(w_norm))
                p.sub_(update * (lr * ratio))  # stays on device: no host sync
        return None


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, config.weight_decay)
    betas = (config.adam_beta1, config.adam_beta2)
    if config.optimizer == "lamb":
        return Lamb(groups, lr=config.learning_rate, betas=betas, eps=config.adam_epsilon)
    # On CUDA, the fused kernel: one launch for all parameters instead of several per tensor
    # (the same update; CPU runs keep the default implementation, which the tests pin).
    fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=betas,
                             eps=config.adam_epsilon, **({"fused": True} if fused else {}))


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    """LambdaLR whose factor at update k is ``learning_rate(k) / base_lr`` (trainer.config)."""
    def factor(step: int) -> float:
        return learning_rate(step, base_lr=1.0, warmup_steps=config.warmup_steps,
                             total_steps=config.num_train_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
