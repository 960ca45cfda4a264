"""The smoothed classifier g(x) = argmax_c P(f(x + ε) = c), after Cohen et al.'s `Smooth`.

Noise is drawn in place into one preallocated batch buffer on the model's device, the base
classifier's votes are counted there too (`torch.bincount`), and only the class counts cross to
the host.

One calling convention for the three ways to certify many points: each takes an iterable of
(idx, x) pairs and yields (idx, Certificate) as points finish — `certify_fixed` (Cohen et al.'s
CERTIFY: n0 selection and n estimation draws per point), `certify_sequential` (draws in rounds
until the point's bucket among the report radii is decided) and `certify_exact` (every noisy copy
of an exact noise counted once). A point's noise comes from (seed, idx) alone (`l1cert.points`),
so neither the batch size nor the points it shares batches with change its certificate.
`certify(x, ...)` is CERTIFY of one point.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from l1cert import sequential
from l1cert.bounds import BOUNDS
from l1cert.certificate import ABSTAIN, Certificate
from l1cert.forward import BaseClassifier, check_precision
from l1cert.noise import Noise, make_noise
from l1cert.points import ESTIMATION, SELECTION, Draws, point_seed
from l1cert.stats import top_two_pvalue
from l1cert.utils import L1CertError

Points = Iterable[tuple[int, torch.Tensor]]
Certified = Iterator[tuple[int, Certificate]]


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
        self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int, seed=None
    ) -> Certificate:
        """CERTIFY of one point (`certify_fixed`); `seed` fixes its noise (None: a random one,
        drawn from torch's global generator)."""
        if seed is None:
            seed = int(torch.randint(2**62, ()))
        return next(self.certify_fixed([(0, x)], n0, n, alpha, batch_size, seed))[1]

    def certify_fixed(
        self, points: Points, n0: int, n: int, alpha: float, batch_size: int, seed: int = 0
    ) -> Certified:
        """Pick ĉA from n0 draws, bound P(f(x+ε) = ĉA) from n fresh draws, turn it into radii.

        Single-class bounds (teng, lecuyer, cohen, uniform) use p̲A at level 1 − α. For
        `teng_multiclass`, p̲A and p̄B must hold together: with K > 2 classes α is split
        (Bonferroni), p̲A at level 1 − α/2 and each other class bounded at α/(2(K − 1)), p̄B
        capped at 1 − p̲A; with two classes p̄B = 1 − p̲A at the full level. Theorem 1
        certifies wherever p̲A > p̄B, also when the primary bound abstains (p̲A ≤ 1/2).
        """
        for idx, x in points:
            draws = Draws(point_seed(seed, idx), self.device)
            c_hat = int(self._count(x, n0, batch_size, draws, SELECTION).argmax())
            counts = self._count(x, n, batch_size, draws, ESTIMATION)
            ends = sequential.ends(
                counts[c_hat], _runner_up(counts, c_hat), 0, [n], alpha, self.num_classes,
                project=False,
            )  # fmt: skip
            yield idx, self._certificate(c_hat, counts, ends, n, n0, alpha, self._flat(x))

    def certify_sequential(
        self,
        points: Points,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int,
        radii,
        seed: int = 0,
        first: int = sequential.FIRST_LOOK,
    ) -> Certified:
        """Sequential CERTIFY of many points: yields (idx, certificate) as each one stops.

        After its n0 selection draws, each point draws its estimation samples in growing rounds
        (`sequential.looks(n, first)`: n is the cap) and stops as soon as its bucket among the
        report `radii` is decided for every bound of the noise (`sequential.step`), at the
        latest at n draws. Several points share each forward batch so small early rounds still
        fill it.
        """
        looks = sequential.looks(n, first)
        f = self._classifier(batch_size)
        in_flight = -(-batch_size // min(first, n0)) + 1
        queue, active = iter(points), []
        with torch.inference_mode():
            buffer = scratch = None
            while True:
                while len(active) < in_flight and (point := next(queue, None)) is not None:
                    idx, x = point
                    if buffer is None:
                        buffer = self._buffer(x, batch_size, f)
                        scratch = torch.empty_like(buffer)
                    draws = Draws(point_seed(seed, idx), f.device)
                    flight = _Flight(idx, self._as_batch(x, f), draws, self.num_classes)
                    flight.flat = self._flat(x)
                    flight.schedule(SELECTION, n0, batch_size)
                    active.append(flight)
                if not active:
                    return
                self._vote(f, active, buffer, scratch)
                finished = [a for a in active if not a.pieces]
                for flight, certificate in self._next_rounds(
                    finished, looks, n0, alpha, radii, batch_size
                ):
                    active.remove(flight)
                    yield flight.idx, certificate

    def certify_exact(self, points: Points, batch_size: int) -> Certified:
        """Exact certificates: every one of the noise's L copies of each point is counted
        (the noise's `copies`), the copies of many points packed into each forward batch (one
        point's may straddle two), so the device never sees a short batch per point. No
        sampling, no α, no abstention; a point the certificate does not hold for (DSSN: off
        the input grid) is refused, named by its idx."""
        noise, f = self.noise, self._classifier(batch_size)
        if not noise.exact:
            raise L1CertError(f"{noise.name} noise is sampled, not exact: use certify_fixed")
        group = max(1, batch_size // noise.copies)  # points whose copies fill about one batch
        queue = iter(points)
        while chunk := [p for _, p in zip(range(group), queue, strict=False)]:
            idxs = [idx for idx, _ in chunk]
            with torch.inference_mode():
                xs = torch.stack([x for _, x in chunk]).to(f.device)
                noise.check_exact(xs, [f"test point idx {i}" for i in idxs])
                counts = self._count_exact(f, xs, batch_size)
            found, copies = noise.exact_certificate(counts), noise.copies
            for i, idx in enumerate(idxs):
                n_a, n_b = int(found.count[i]), int(found.count_b[i])
                yield idx, Certificate(
                    prediction=int(found.predict[i]), count=n_a, pa_lower=n_a / copies,
                    bound_radii={noise.primary_bound: float(found.radius[i])}, count_b=n_b,
                    pb_upper=n_b / copies, top_class=int(found.predict[i]), n=copies, n0=0,
                    alpha=None, runner_up=int(found.runner_up[i]),
                )  # fmt: skip

    def _count_exact(self, f, xs: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Vote counts (points, classes) over every copy of every point in xs."""
        copies, classes, points = self.noise.copies, self.num_classes, len(xs)
        bins = points * classes
        # One extra bin collects labels outside [0, classes): checked once at the end, no sync.
        votes = torch.zeros(bins + 1, dtype=torch.long, device=xs.device)
        rows = torch.arange(points * copies, device=xs.device)
        buffer = torch.empty(
            (min(batch_size, len(rows)), *xs.shape[1:]), dtype=xs.dtype, device=xs.device
        )
        for start in range(0, len(rows), batch_size):
            row = rows[start : start + batch_size]
            owner = row // copies
            batch = self.noise.exact_copies_(buffer[: len(row)], xs[owner], row % copies)
            labels = f(batch.contiguous(memory_format=self._memory_format(xs[0]))).long()
            valid = (labels >= 0) & (labels < classes)
            votes += torch.bincount(
                torch.where(valid, owner * classes + labels, bins), minlength=bins + 1
            )
        if votes[bins] != 0:
            raise L1CertError(f"the classifier returned labels outside 0…{classes - 1}")
        return votes[:bins].view(points, classes)

    def _vote(self, f, active: list[_Flight], buffer, scratch) -> None:
        """One forward batch of whole pieces from the points in flight; count their votes."""
        plan, used = [], 0
        for flight in active:
            while flight.pieces and used + flight.pieces[0] <= len(buffer):
                size = flight.pieces.popleft()
                rows = slice(used, used + size)
                noisy = flight.draws.perturb_(
                    self.noise, buffer[rows], flight.x, flight.stream, flight.position,
                    scratch[rows],
                )  # fmt: skip
                flight.position += size
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

    def _next_rounds(self, flights: list[_Flight], looks, n0, alpha, radii, batch_size):
        """After their rounds: pick ĉA, or stop with a certificate, or plan the next look.

        The points that finished an estimation round are decided together (one vectorised
        `sequential.step`); yields (flight, certificate) for those that stop.
        """
        estimating = [flight for flight in flights if flight.c_hat is not None]
        for flight in flights:
            if flight.c_hat is None:  # the selection round: its draws never enter the estimate
                flight.c_hat = int(flight.counts.argmax())
                flight.counts[:] = 0
                flight.schedule(ESTIMATION, looks[0], batch_size)
        if not estimating:
            return
        count_a = np.array([f.counts[f.c_hat] for f in estimating])
        count_b = np.array([_runner_up(f.counts, f.c_hat) for f in estimating])
        look = np.array([f.look for f in estimating])
        name, scale = self.noise.name, self.noise.scale
        points = None if estimating[0].flat is None else np.concatenate(
            [f.flat for f in estimating])  # fmt: skip
        b, stop = sequential.step(
            count_a, count_b, look, looks, alpha, self.num_classes, name, scale, radii, points
        )
        for i, flight in enumerate(estimating):
            if stop[i]:
                point = sequential.Ends(*(np.broadcast_to(v, stop.shape)[i] for v in b))
                n = looks[look[i]]
                yield flight, self._certificate(flight.c_hat, flight.counts, point, n, n0, alpha,
                                                flight.flat)  # fmt: skip
            else:
                flight.look += 1
                more = looks[flight.look] - looks[flight.look - 1]
                flight.schedule(ESTIMATION, more, batch_size)

    def _certificate(self, c_hat: int, counts: np.ndarray, b, n, n0, alpha, flat) -> Certificate:
        """`flat`: the point as (1, d), for the bounds that need it (None: none do)."""
        found = sequential.bound_radii(b, self.noise.name, self.noise.scale, flat)
        radii = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in found.items()}
        return Certificate(
            prediction=c_hat if float(b.pa_lower) > 0.5 else ABSTAIN,
            count=int(counts[c_hat]),
            pa_lower=float(b.pa_lower),
            bound_radii=radii,
            count_b=_runner_up(counts, c_hat),
            pb_upper=float(b.pb_upper),
            top_class=c_hat,
            n=n,
            n0=n0,
            alpha=alpha,
        )

    def _flat(self, x: torch.Tensor) -> np.ndarray | None:
        """x as a (1, d) float64 array where a bound of the noise needs the point, else None."""
        if not any(BOUNDS[b].needs_point for b in self.noise.bounds):
            return None
        return x.detach().to("cpu", torch.float64).reshape(1, -1).numpy()

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

    def _buffer(self, x: torch.Tensor, rows: int, f) -> torch.Tensor:
        return torch.empty(
            (rows, *x.shape), dtype=x.dtype, device=f.device, memory_format=self._memory_format(x)
        )

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int, seed=None) -> int:
        """The top class among n draws, or ABSTAIN if the binomial test of the top two at
        level alpha cannot tell it from the runner-up (`seed` as in `certify`)."""
        if seed is None:
            seed = int(torch.randint(2**62, ()))
        counts = self._count(x, n, batch_size, Draws(point_seed(seed, 0), self.device), SELECTION)
        top2 = np.argsort(counts)[::-1][:2]
        count_a = int(counts[top2[0]])
        count_b = int(counts[top2[1]]) if len(top2) > 1 else 0
        if top_two_pvalue(count_a, count_b) > alpha:
            return ABSTAIN
        return int(top2[0])

    def _count(
        self, x: torch.Tensor, num: int, batch_size: int, draws: Draws, stream: int
    ) -> np.ndarray:
        """How often the base classifier picks each class among the first `num` draws of a
        point's `stream`."""
        f = self._classifier(batch_size)
        with torch.inference_mode():
            buffer = self._buffer(x, min(batch_size, f.batch_size, num), f)
            scratch = torch.empty_like(buffer)
            x = self._as_batch(x, f)
            counts = torch.zeros(self.num_classes, dtype=torch.long, device=f.device)
            for start in range(0, num, len(buffer)):
                size = min(num - start, len(buffer))
                batch = draws.perturb_(self.noise, buffer[:size], x, stream, start, scratch[:size])
                counts += torch.bincount(f(batch), minlength=self.num_classes)
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
    """A point in sequential certification: its draws still to make (pieces of at most one
    batch, from its current stream and position), and its votes so far."""

    def __init__(self, idx: int, x, draws: Draws, num_classes: int):
        self.idx, self.x, self.draws = idx, x, draws
        self.flat = None  # the point as (1, d), where a bound needs it
        self.counts = np.zeros(num_classes, dtype=np.int64)
        self.c_hat: int | None = None
        self.look = 0
        self.stream, self.position = SELECTION, 0
        self.pieces: collections.deque[int] = collections.deque()

    def schedule(self, stream: int, draws: int, batch_size: int) -> None:
        if stream != self.stream:
            self.stream, self.position = stream, 0
        full, rest = divmod(draws, batch_size)
        self.pieces.extend([batch_size] * full + ([rest] if rest else []))
