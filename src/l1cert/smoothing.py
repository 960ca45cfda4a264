"""The smoothed classifier g(x) = argmax_c P(f(x + ε) = c), after Cohen et al.'s `Smooth`.

Noise is drawn in place into one preallocated batch buffer on the model's device, the base
classifier's votes are counted there too (`torch.bincount`), and only the class counts cross to
the host.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from l1cert import sequential
from l1cert.forward import BaseClassifier, check_precision
from l1cert.noise import Noise, make_noise
from l1cert.stats import top_two_pvalue

ABSTAIN = -1


@dataclass
class Certificate:
    """What CERTIFY found for one input, and how.

    `prediction` is ABSTAIN (-1) when p̲A ≤ 1/2, where the noise's primary bound abstains,
    and ĉA (`top_class`) otherwise. `count`/`pa_lower`: the votes for ĉA among the `n`
    estimation draws and their lower bound (used by every single-class bound, 0 where
    p̲A ≤ 1/2). `count_b`: the votes for the runner-up; `pb_upper`: the upper bound used by
    `teng_multiclass`, whose radius stands wherever p̲A > p̄B (Theorem 1). `alpha` is the
    failure probability of the Clopper–Pearson bounds after `n0` selection draws; None means the
    counts are exact (every noise copy enumerated, no selection draws), `pa_lower` = count/n.
    `bound_radii`: the radius under each bound of the noise, the primary one first.
    """

    prediction: int
    count: int
    pa_lower: float
    bound_radii: dict[str, float] = field(default_factory=dict)
    count_b: int = 0
    pb_upper: float = 1.0
    top_class: int = ABSTAIN
    n: int = 0
    n0: int = 0
    alpha: float | None = None
    runner_up: int = ABSTAIN  # exact certificates: the class that limits the radius

    @property
    def radius(self) -> float:
        """The radius of the primary bound (the first one in `bound_radii`)."""
        return next(iter(self.bound_radii.values()))

    @property
    def exact(self) -> bool:
        return self.alpha is None


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
        `teng_multiclass`, p̲A and p̄B must hold together: with K > 2 classes α is split
        (Bonferroni), p̲A at level 1 − α/2 and each other class bounded at α/(2(K − 1)), p̄B
        capped at 1 − p̲A; with two classes p̄B = 1 − p̲A at the full level. Theorem 1
        certifies wherever p̲A > p̄B, also when the primary bound abstains (p̲A ≤ 1/2).
        """
        counts0 = self._count(x, n0, batch_size, generator)
        c_hat = int(counts0.argmax())
        counts = self._count(x, n, batch_size, generator)
        ends = sequential.bounds(
            counts[c_hat], _runner_up(counts, c_hat), 0, [n], alpha, self.num_classes,
            project=False,
        )  # fmt: skip
        return self._certificate(c_hat, counts, ends, n, n0, alpha)

    def certify_sequential(
        self,
        points: Iterable[tuple[object, torch.Tensor, torch.Generator | None]],
        n0: int,
        cap: int,
        alpha: float,
        batch_size: int,
        grid: Sequence[float],
        first: int = sequential.FIRST_LOOK,
    ) -> Iterator[tuple[object, Certificate]]:
        """Sequential CERTIFY of many points: yields (key, certificate) as each one stops.

        After its n0 selection draws, each point draws its estimation samples in growing rounds
        (`sequential.looks(cap, first)`) and stops as soon as its bucket in `grid` is decided
        for every bound of the noise (`sequential.step`), at the latest at `cap` draws. Several
        points share each forward batch so small early rounds still fill it; every point draws
        from its own generator in pieces fixed by its own schedule, so a point's certificate
        does not depend on which points it shared batches with.
        """
        looks = sequential.looks(cap, first)
        f = self._classifier(batch_size)
        in_flight = -(-batch_size // min(first, n0)) + 1
        queue, active = iter(points), []
        with torch.inference_mode():
            buffer = scratch = None
            while True:
                while len(active) < in_flight and (point := next(queue, None)) is not None:
                    key, x, generator = point
                    if buffer is None:
                        buffer = torch.empty(
                            (batch_size, *x.shape),
                            device=f.device,
                            memory_format=self._memory_format(x),
                        )
                        scratch = torch.empty_like(buffer)
                    active.append(
                        _Flight(
                            key, self._as_batch(x, f), generator, n0, batch_size, self.num_classes
                        )
                    )
                if not active:
                    return
                self._vote(f, active, buffer, scratch)
                finished = [a for a in active if not a.pieces]
                for flight, certificate in self._next_rounds(finished, looks, n0, alpha, grid):
                    active.remove(flight)
                    yield flight.key, certificate

    def _vote(self, f, active: list[_Flight], buffer, scratch) -> None:
        """One forward batch of whole pieces from the points in flight; count their votes."""
        plan, used = [], 0
        for flight in active:
            while flight.pieces and used + flight.pieces[0] <= len(buffer):
                size = flight.pieces.popleft()
                noisy = self.noise.perturb_(
                    buffer[used : used + size],
                    flight.x,
                    flight.generator,
                    scratch[used : used + size],
                )
                plan.append((flight, noisy))
                used += size
        labels = f(buffer[:used])
        owner = torch.repeat_interleave(
            torch.arange(len(plan), device=labels.device),
            torch.tensor([len(noisy) for _, noisy in plan], device=labels.device),
        )
        votes = torch.bincount(
            owner * self.num_classes + labels, minlength=len(plan) * self.num_classes
        )
        for (flight, _), counts in zip(plan, votes.view(len(plan), -1).cpu().numpy(), strict=True):
            flight.counts += counts

    def _next_rounds(self, flights: list[_Flight], looks, n0, alpha, grid):
        """After their rounds: pick ĉA, or stop with a certificate, or plan the next look.

        The points that finished an estimation round are decided together (one vectorised
        `sequential.step`); yields (flight, certificate) for those that stop.
        """
        estimating = [flight for flight in flights if flight.c_hat is not None]
        for flight in flights:
            if flight.c_hat is None:  # the selection round: its draws never enter the estimate
                flight.c_hat = int(flight.counts.argmax())
                flight.counts[:] = 0
                flight.schedule(looks[0])
        if not estimating:
            return
        count_a = np.array([f.counts[f.c_hat] for f in estimating])
        count_b = np.array([_runner_up(f.counts, f.c_hat) for f in estimating])
        look = np.array([f.look for f in estimating])
        name, scale = self.noise.name, self.noise.scale
        b, stop = sequential.step(
            count_a, count_b, look, looks, alpha, self.num_classes, name, scale, grid
        )
        for i, flight in enumerate(estimating):
            if stop[i]:
                point = sequential.Ends(*(np.broadcast_to(v, stop.shape)[i] for v in b))
                n = looks[look[i]]
                yield flight, self._certificate(flight.c_hat, flight.counts, point, n, n0, alpha)
            else:
                flight.look += 1
                flight.schedule(looks[flight.look] - looks[flight.look - 1])

    def _certificate(self, c_hat: int, counts: np.ndarray, b, n, n0, alpha) -> Certificate:
        radii = {
            k: float(v) for k, v in sequential.radii(b, self.noise.name, self.noise.scale).items()
        }
        prediction = c_hat if float(b.pa_lower) > 0.5 else ABSTAIN
        return Certificate(
            prediction,
            int(counts[c_hat]),
            float(b.pa_lower),
            radii,
            _runner_up(counts, c_hat),
            float(b.pb_upper),
            c_hat,
            n,
            n0,
            alpha,
        )

    def certify_exact(
        self, xs: Sequence[torch.Tensor], batch_size: int, names: Sequence[str] | None = None
    ) -> list[Certificate]:
        """Exact certificates under DSSN: the votes of all L splits of each x are counted, many
        points to a forward batch (`l1cert.splitting`). Each x must lie on the noise's input
        grid (`names` say which point is not); no sampling, no α, no abstention."""
        from l1cert.splitting import count_votes, dssn_certify

        noise, f = self.noise, self._classifier(batch_size)
        with torch.inference_mode():
            counts = count_votes(f, torch.stack(list(xs)).to(f.device), noise.template,
                                 noise.scale, noise.grid, self.num_classes, batch_size,
                                 names)  # fmt: skip
        found, copies = dssn_certify(counts, noise.grid), noise.offsets
        certificates = []
        for i, (a, n_a, b, n_b) in enumerate(
            zip(found.predict, found.count, found.runner_up, found.count_b, strict=True)
        ):
            radii = {noise.primary_bound: float(found.radius[i])}
            certificates.append(
                Certificate(
                    int(a),
                    int(n_a),
                    n_a / copies,
                    radii,
                    int(n_b),
                    n_b / copies,
                    int(a),
                    copies,
                    n0=0,
                    alpha=None,
                    runner_up=int(b),
                )  # fmt: skip
            )
        return certificates

    @property
    def device(self) -> torch.device:
        """Where the model runs (and noise is drawn)."""
        return next(
            (t.device for t in [*self.model.parameters(), *self.model.buffers()]),
            torch.device("cpu"),
        )

    def forward_rate(self, x: torch.Tensor, batch_size: int, rows: int | None = None) -> float:
        """Forward passes per second of the base classifier (built for `batch_size`, as
        certification will use it) on a batch of `rows` copies of x (default: a full one)."""
        import time

        f = self._classifier(batch_size)
        rows = batch_size if rows is None else min(rows, batch_size)
        batch = (
            self._as_batch(x, f)
            .expand(rows, *x.shape)
            .contiguous(memory_format=self._memory_format(x))
        )
        start = time.perf_counter()
        f(batch)
        return rows / max(time.perf_counter() - start, 1e-9)

    def _as_batch(self, x: torch.Tensor, f) -> torch.Tensor:
        """x as a batch of one on the device in the buffer's layout (it broadcasts cheaply)."""
        return x.to(f.device).unsqueeze(0).contiguous(memory_format=self._memory_format(x))

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
            x = self._as_batch(x, f)
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


def _runner_up(counts: np.ndarray, c_hat: int) -> int:
    """The largest vote count among the classes other than ĉA (0 with one class)."""
    return int(np.delete(counts, c_hat).max()) if len(counts) > 1 else 0


class _Flight:
    """A point in sequential certification: its draws still to make, in pieces of at most one
    batch, and its votes so far."""

    def __init__(self, key, x, generator, n0: int, batch_size: int, num_classes: int):
        self.key, self.x, self.generator = key, x, generator
        self.batch_size = batch_size
        self.counts = np.zeros(num_classes, dtype=np.int64)
        self.c_hat: int | None = None
        self.look = 0
        self.pieces: collections.deque[int] = collections.deque()
        self.schedule(n0)

    def schedule(self, draws: int) -> None:
        full, rest = divmod(draws, self.batch_size)
        self.pieces.extend([self.batch_size] * full + ([rest] if rest else []))
