"""The smoothed classifier g(x) = argmax_c P(f(x + ε) = c), after Cohen et al.'s `Smooth`.

Noise is drawn in place into one preallocated batch buffer on the model's device, the base
classifier's votes are counted there too (`torch.bincount`), and only the class counts cross to
the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from l1cert import certificates
from l1cert.forward import BaseClassifier, check_precision
from l1cert.noise import Noise, make_noise
from l1cert.stats import lower_confidence_bound, top_two_pvalue, upper_confidence_bound

ABSTAIN = -1


@dataclass
class Certificate:
    """What CERTIFY found for one input.

    `prediction` is ABSTAIN (-1) when p̲A ≤ 1/2 under the noise's primary bound; all radii are
    then 0. `count`/`pa_lower`: the votes for ĉA among the n estimation draws and their
    Clopper–Pearson lower bound at level 1 − α (used by every single-class bound). `count_b`:
    the votes for the runner-up; `pb_upper`: the upper bound used by `teng_multiclass` (see
    `Smooth.certify`).
    """

    prediction: int
    count: int
    pa_lower: float
    radii: dict[str, float] = field(default_factory=dict)
    count_b: int = 0
    pb_upper: float = 1.0

    @property
    def radius(self) -> float:
        """The radius of the primary bound (the first one in `radii`)."""
        return next(iter(self.radii.values()))


class Smooth:
    """A base classifier `model` smoothed by `noise`, with CERTIFY and PREDICT of Cohen et al.

    `model` maps a batch of inputs (N, *x.shape) to logits over `num_classes` classes. With
    `channels_last` (the default), image models run in channels-last memory format: the model's
    4-D parameters are converted in place, outputs are unchanged. `compile` and `precision` are
    those of `l1cert.forward.BaseClassifier`; `model` may also be a prebuilt one.
    """

    def __init__(
        self,
        model: torch.nn.Module | BaseClassifier,
        num_classes: int,
        noise: str | Noise,
        sigma: float | None = None,
        channels_last: bool = True,
        compile: bool = False,
        precision: str = "fp32",
    ):
        self.noise = noise if isinstance(noise, Noise) else make_noise(noise, sigma)
        check_precision(precision)
        self.classifier = self._prebuilt = model if isinstance(model, BaseClassifier) else None
        self._options = dict(compile=compile, precision=precision, channels_last=channels_last)
        if self.classifier is not None:  # used as given, whatever the batch size asked for
            model, channels_last = self.classifier.model, self.classifier.channels_last
        self.model = model.eval()
        self.num_classes = int(num_classes)
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    def certify(
        self,
        x: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> Certificate:
        """Pick ĉA from n0 draws, bound P(f(x+ε) = ĉA) from n fresh draws, turn it into radii.

        Single-class bounds (teng, lecuyer, cohen, uniform) use p̲A at level 1 − α. For
        `teng_multiclass`, p̲A and p̄B must hold together, so α is split (Bonferroni): p̲A at
        level 1 − α/2, and p̄B bounds the largest of the other K − 1 class probabilities at
        level 1 − α/2 by bounding each at α/(2(K − 1)), which for the runner-up count is the
        largest of these bounds; since p_B ≤ 1 − p_A ≤ 1 − p̲A on the same event, p̄B is also
        capped at 1 − p̲A.
        """
        counts0 = self._count(x, n0, batch_size, generator)
        c_hat = int(counts0.argmax())
        counts = self._count(x, n, batch_size, generator)
        count = int(counts[c_hat])
        count_b = int(np.delete(counts, c_hat).max()) if self.num_classes > 1 else 0
        pa_lower = float(lower_confidence_bound(count, n, alpha))

        pa_joint = float(lower_confidence_bound(count, n, alpha / 2))
        alpha_b = alpha / (2 * max(self.num_classes - 1, 1))
        pb_upper = min(float(upper_confidence_bound(count_b, n, alpha_b)), 1.0 - pa_joint)

        noise = self.noise
        radii = {}
        for bound in noise.bounds:
            uses_pb = certificates.BOUNDS[bound].uses_pb
            pa = pa_joint if uses_pb else pa_lower
            pb = pb_upper if uses_pb else None
            radii[bound] = float(certificates.radius(bound, noise.name, noise.scale, pa, pb))
        prediction = c_hat
        if not pa_lower > 0.5:
            prediction = ABSTAIN
            radii = dict.fromkeys(radii, 0.0)
        return Certificate(prediction, count, pa_lower, radii, count_b, pb_upper)

    def predict(
        self,
        x: torch.Tensor,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> int:
        """The top class among n draws, or ABSTAIN if the binomial test of the top two at
        level alpha cannot tell it from the runner-up."""
        counts = self._count(x, n, batch_size, generator)
        top2 = np.argsort(counts)[::-1][:2]
        count_a = int(counts[top2[0]])
        count_b = int(counts[top2[1]]) if len(top2) > 1 else 0
        if top_two_pvalue(count_a, count_b) > alpha:
            return ABSTAIN
        return int(top2[0])

    def _count(
        self, x: torch.Tensor, num: int, batch_size: int, generator: torch.Generator | None
    ) -> np.ndarray:
        """How often the base classifier picks each class among `num` noisy copies of x."""
        f = self._classifier(batch_size)
        device = f.device
        with torch.inference_mode():
            memory_format = self._memory_format(x)
            # x as a batch of one in the buffer's layout, so adding it broadcasts cheaply
            x = x.to(device).unsqueeze(0).contiguous(memory_format=memory_format)
            shape = (min(batch_size, f.batch_size, num), *x.shape[1:])
            buffer = torch.empty(shape, dtype=x.dtype, device=device, memory_format=memory_format)
            scratch = torch.empty_like(buffer)
            counts = torch.zeros(self.num_classes, dtype=torch.long, device=device)
            remaining = num
            while remaining > 0:
                size = min(remaining, len(buffer))
                batch = self.noise.perturb_(buffer[:size], x, generator, scratch[:size])
                predictions = f(batch)
                counts += torch.bincount(predictions, minlength=self.num_classes)
                remaining -= len(batch)
        return counts.cpu().numpy()

    def _classifier(self, batch_size: int) -> BaseClassifier:
        """The prebuilt classifier, else one built (and kept) for this batch size."""
        f = self.classifier
        if f is None or (f.batch_size != batch_size and f is not self._prebuilt):
            self.classifier = f = BaseClassifier(self.model, batch_size=batch_size, **self._options)
        return f

    def _memory_format(self, x: torch.Tensor) -> torch.memory_format:
        if self.channels_last and x.dim() == 3:
            return torch.channels_last
        return torch.contiguous_format
