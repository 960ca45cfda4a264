"""The training objectives, one entry each of `OBJECTIVES`: Type 1 (noise augmentation), Type 2
(SmoothAdv, Salman et al. 2019), consistency regularization (Jeong & Shin 2020) and stability
training (Li et al. 2019). A new objective is a loss function here, an entry of the table, and
its settings' section in `l1cert.config`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from l1cert.attacks import smoothadv_pgd
from l1cert.config import TrainConfig


def train_step(model, optimizer, x, y, noise, noise_rng, config: TrainConfig, epoch: int = 0):
    """One SGD step of the config's training objective on noisy copies of the batch (x, y);
    returns the loss, the logits and the labels of the copies the model saw."""
    objective = OBJECTIVES[config.training]
    loss, logits, y = objective.loss(model, x, y, noise, noise_rng, config, epoch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach(), y


# --- the training objectives ------------------------------------------------------------------
# Each takes (model, x, y, noise, generator, config, epoch) and returns (loss, logits, labels) of
# the noisy copies it fed the model; its settings are the config's section of its name.


def _copies(noise, x, m: int, rng) -> torch.Tensor:
    """m noisy copies of every example, (m, *x.shape): splits for the splitting noises."""
    return noise.apply(x.unsqueeze(0), noise.draw((m, *x.shape), x, rng))


def _noise_augmentation(model, x, y, noise, rng, config, epoch):
    logits = model(noise.augment(x, rng))
    return F.cross_entropy(logits, y, label_smoothing=config.label_smoothing), logits, y


def _smoothadv(model, x, y, noise, rng, config, epoch):
    """PGD against the softmax averaged over m draws, then train on the attacked copies."""
    t2 = config.objective()
    draws = noise.draw((t2.samples, *x.shape), x, rng)
    x = smoothadv_pgd(
        model, x, y, draws, t2.norm, t2.epsilon_at(epoch), t2.steps, apply=noise.apply
    )
    inputs, y = noise.apply(x.unsqueeze(0), draws).flatten(0, 1), y.repeat(t2.samples)
    logits = model(inputs)
    return F.cross_entropy(logits, y, label_smoothing=config.label_smoothing), logits, y


def _consistency(model, x, y, noise, rng, config, epoch):
    """Jeong & Shin (2020): mean cross-entropy of m copies + λ·mean KL(p̄ ‖ p_i) + η·H(p̄),
    p̄ the copies' mean prediction."""
    c = config.objective()
    logits = model(_copies(noise, x, c.copies, rng).flatten(0, 1))
    labels = y.repeat(c.copies)
    xent = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
    log_p = F.log_softmax(logits, dim=1).view(c.copies, len(y), -1)
    mean = log_p.exp().mean(dim=0)
    log_mean = mean.clamp_min(1e-20).log()
    kl = (mean * (log_mean - log_p)).sum(dim=-1).mean()
    entropy = -(mean * log_mean).sum(dim=-1).mean()
    return xent + c.weight * kl + c.entropy * entropy, logits, labels


def _stability(model, x, y, noise, rng, config, epoch):
    """Stability training (Li et al. 2019, as Levine & Feizi train DSSN): cross-entropy of two
    copies + γ·KL(p_1 ‖ p_2)."""
    s = config.objective()
    logits = model(_copies(noise, x, 2, rng).flatten(0, 1))
    labels = y.repeat(2)
    xent = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
    log_p = F.log_softmax(logits, dim=1).view(2, len(y), -1)
    kl = (log_p[0].exp() * (log_p[0] - log_p[1])).sum(dim=-1).mean()
    return xent + s.weight * kl, logits, labels


@dataclass(frozen=True)
class Objective:
    """A training objective: its loss, and how many noisy copies of an example a step feeds
    the model (to size the batch's memory)."""

    name: str
    loss: Callable
    copies: Callable[[TrainConfig], int]


OBJECTIVES = {
    o.name: o
    for o in (
        Objective("type1", _noise_augmentation, lambda config: 1),
        Objective("type2", _smoothadv, lambda config: config.objective().samples),
        Objective("consistency", _consistency, lambda config: config.objective().copies),
        Objective("stability", _stability, lambda config: 2),
    )
}
