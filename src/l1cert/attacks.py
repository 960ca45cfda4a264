"""SmoothAdv (Salman et al. 2019): PGD on the smoothed soft classifier.

For each example x the attack shares one perturbation δ over m noise draws n_1..n_m and
ascends the cross-entropy of the averaged softmax  -log( (1/m) Σ_i softmax(f(x+δ+n_i))_y ).
The perturbed image x+δ is clamped to [0, 1] (it stays an image; the noise on top is not
clamped, as in certification). Clamping only shrinks |δ_i|, so δ stays inside its ε-ball.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from l1cert.names import NORMS

L1_STEP_FRACTION = 0.05  # the l1 step moves the top 5% |gradient| coordinates of each example


def smoothed_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor, apply=None
):
    """Per-example CE of the softmax averaged over noise draws; noise is m x (x's shape).

    `apply(x, draws)` makes the noisy copies (default x + draws; splitting noise passes its
    straight-through split)."""
    m = noise.shape[0]
    noisy = x.unsqueeze(0) + noise if apply is None else apply(x.unsqueeze(0), noise)
    logits = model(noisy.flatten(0, 1))
    probs = logits.softmax(dim=1).view(m, x.shape[0], -1).mean(dim=0)
    return F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="none")


def smoothadv_pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    noise: torch.Tensor,
    norm: str,
    epsilon: float,
    steps: int,
    step_size: float | None = None,
    apply=None,
) -> torch.Tensor:
    """x + δ after `steps` PGD steps (step size 2ε/steps by default), with the model in eval mode.

    `noise` (m x batch x C x H x W) is held fixed during the attack, so the caller can train
    on the same noisy copies; `apply` as in `smoothed_loss`.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}")
    if epsilon <= 0 or steps < 1:
        return x.detach()
    step_size = 2 * epsilon / steps if step_size is None else step_size
    was_training = model.training
    model.eval()
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        loss = smoothed_loss(model, x + delta, y, noise, apply).sum()
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta += _ascent_step(grad, norm, step_size)
            delta.copy_(project(delta, norm, epsilon))
            delta.copy_((x + delta).clamp_(0, 1) - x)
    model.train(was_training)
    return (x + delta).detach()


def _ascent_step(grad: torch.Tensor, norm: str, size: float) -> torch.Tensor:
    """The steepest-ascent step of the given norm's length `size`."""
    if norm == "linf":
        return size * grad.sign()
    flat = grad.flatten(1)
    if norm == "l2":
        return (size * flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)).view_as(grad)
    # l1: the steepest direction is one coordinate; spreading it over the top k is steadier.
    k = max(1, math.ceil(L1_STEP_FRACTION * flat.shape[1]))
    top = flat.abs().topk(k, dim=1).indices
    step = torch.zeros_like(flat).scatter_(1, top, flat.gather(1, top).sign() * (size / k))
    return step.view_as(grad)


def project(delta: torch.Tensor, norm: str, epsilon: float) -> torch.Tensor:
    """The closest point to each example's δ within its ε-ball of the given norm."""
    if norm == "linf":
        return delta.clamp(-epsilon, epsilon)
    flat = delta.flatten(1)
    if norm == "l2":
        factor = (epsilon / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1)
        return (flat * factor).view_as(delta)
    return project_l1(flat, epsilon).view_as(delta)


def project_l1(flat: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Euclidean projection of each row onto the l1 ball (Duchi et al. 2008, by sorting)."""
    magnitude = flat.abs()
    inside = magnitude.sum(dim=1, keepdim=True) <= epsilon
    sorted_, _ = magnitude.sort(dim=1, descending=True)
    cumulative = sorted_.cumsum(dim=1) - epsilon
    ranks = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    count = (sorted_ - cumulative / ranks > 0).sum(dim=1, keepdim=True).clamp_min(1)
    threshold = cumulative.gather(1, count - 1) / count.to(flat.dtype)
    shrunk = flat.sign() * (magnitude - threshold).clamp_min(0)
    return torch.where(inside, flat, shrunk)
