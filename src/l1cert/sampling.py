"""How `l1cert certify` spends its forward passes: one entry per sampling mode.

A mode names the certify settings it takes (`takes`: what decides its rows besides the points,
the model and the forward pass; `l1cert.config` reads it), checks them and adds what it derives
(`check`: the settings in, the mode's own sidecar settings out), and certifies a shard's points
(`run`: yields (idx, certificate, seconds) in the order points finish). `estimates` says whether
its rows come from n0 selection and n estimation draws at level α; a mode without them (exact
counting) takes no n0, n or alpha, records them as null in the sidecar, and writes 0 in the n0
and alpha columns (`n` is then the number of noisy copies counted). Which modes apply to a noise
is the noise's to say (`Noise.samplings`). No other module compares mode names.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from l1cert import sequential
from l1cert.utils import L1CertError, parse_radii

if TYPE_CHECKING:
    from l1cert.certificate import Certificate
    from l1cert.smoothing import Smooth

Certified = Iterator[tuple[int, "Certificate", float]]
_SAMPLED = ("sampling", "n0", "n", "alpha", "seed")  # what every Monte Carlo mode takes


@dataclass(frozen=True)
class SamplingMode:
    name: str
    takes: tuple[str, ...]
    check: Callable[[dict], dict]
    run: Callable[[Smooth, object, list[int], dict], Certified]
    help: str
    # Rows from n0 selection and n estimation draws at level α (else exact counts).
    estimates: bool = True
    # The draws of one point are not known in advance: each row says how many it took.
    varies_n: bool = False

    def draws_per_point(self, settings: dict) -> int:
        """The most forward passes one point may take (to size the job)."""
        return (settings["n0"] or 0) + settings["n"]

    def looks(self, settings: dict) -> list[int]:
        """The numbers of estimation draws a row of this mode may have."""
        return settings.get("looks") or [settings["n"]]

    def describe(self, settings: dict) -> str:
        """How a point is certified, for the progress bar."""
        if not self.estimates:
            return f"{self.name}: {settings['n']} noisy copies/point"
        if self.varies_n:
            return f"{self.name}, at most {self.draws_per_point(settings)} draws/point"
        return f"{settings['n']} draws/point"


def _points(test_set, todo: list[int]):
    return ((idx, test_set[idx][0]) for idx in todo)


def _timed(certified, started: dict | None = None) -> Certified:
    """(idx, certificate, seconds): a point's time runs from when it was asked for (or, for
    points in flight together, from when it joined) to when it is done."""
    last = time.perf_counter()
    for idx, cert in certified:
        now = time.perf_counter()
        yield idx, cert, now - (started.pop(idx) if started is not None else last)
        last = now


def _check_fixed(settings: dict) -> dict:
    return {"radii": None, "looks": None}


def _run_fixed(smooth: Smooth, test_set, todo: list[int], settings: dict) -> Certified:
    n0, n, alpha, batch, seed = (settings[k] for k in ("n0", "n", "alpha", "batch", "seed"))
    return _timed(smooth.certify_fixed(_points(test_set, todo), n0, n, alpha, batch, seed))


def _check_sequential(settings: dict) -> dict:
    if settings.get("radii") is None:
        raise L1CertError("--sampling sequential needs --radii R1,R2,... (the table's radii)")
    radii = parse_radii(settings["radii"])
    if settings["n"] < sequential.FIRST_LOOK:
        raise L1CertError(
            f"--n {settings['n']} (the cap of sequential sampling) is below its first round of "
            f"{sequential.FIRST_LOOK} draws"
        )
    return {"radii": radii, "looks": sequential.looks(settings["n"])}


def _run_sequential(smooth: Smooth, test_set, todo: list[int], settings: dict) -> Certified:
    started = {}

    def points():  # a point's time runs from when it joins the batches to when it stops
        for idx, x in _points(test_set, todo):
            started[idx] = time.perf_counter()
            yield idx, x

    n0, n, alpha, batch, seed = (settings[k] for k in ("n0", "n", "alpha", "batch", "seed"))
    certified = smooth.certify_sequential(points(), n0, n, alpha, batch, settings["radii"], seed)
    return _timed(certified, started)


def _check_exact(settings: dict) -> dict:
    return {"radii": None, "looks": None}


def _run_exact(smooth: Smooth, test_set, todo: list[int], settings: dict) -> Certified:
    """A point's time is its share of its group's (the points whose copies share batches)."""
    group = max(1, settings["batch"] // settings["n"])
    for start in range(0, len(todo), group):
        chunk = todo[start : start + group]
        begin = time.perf_counter()
        done = list(smooth.certify_exact(_points(test_set, chunk), settings["batch"]))
        seconds = (time.perf_counter() - begin) / len(chunk)
        for idx, cert in done:
            yield idx, cert, seconds


MODES: dict[str, SamplingMode] = {
    mode.name: mode
    for mode in (
        SamplingMode(
            "fixed", _SAMPLED, _check_fixed, _run_fixed,
            "n draws per point (Cohen et al.)",
        ),
        SamplingMode(
            "sequential", (*_SAMPLED, "radii"), _check_sequential, _run_sequential,
            "stop once the point's bucket among --radii is decided, n being the cap",
            varies_n=True,
        ),
        SamplingMode(
            "exact", (), _check_exact, _run_exact,
            "every noisy copy counted once (DSSN): no sampling, no α, no abstention",
            estimates=False,
        ),
    )
}  # fmt: skip


def sampling_mode(name: str | None, noise) -> SamplingMode:
    """The mode called `name` (None: the noise's first), if it applies to `noise`; else one
    line."""
    from l1cert.names import check_choice

    name = name or noise.samplings[0]
    check_choice("sampling", name, tuple(MODES))
    if name not in noise.samplings:
        raise L1CertError(
            f"--sampling {name} does not apply to {noise.name} noise "
            f"(use {' or '.join(noise.samplings)})"
        )
    return MODES[name]


def takes_radii() -> list[str]:
    """The modes that certify against the report's radii (and need them)."""
    return [name for name, mode in MODES.items() if "radii" in mode.takes]


def mode_for(noise_cls, sampling: str | None) -> SamplingMode:
    """The mode a run of `noise_cls` with the params' `sampling` takes: that one where the noise
    offers it, else the noise's first (an exact noise's only one). What the pipeline uses to
    know what decides each job."""
    return MODES[sampling if sampling in noise_cls.samplings else noise_cls.samplings[0]]


def resolve(config, noise) -> tuple[SamplingMode, dict]:
    """The mode a run of `config` (a CertifyConfig) takes under `noise`, and every sampling
    setting (None where the mode does not take it; a setting it takes and was not given takes
    `CertifyConfig.SAMPLED`'s default). A setting given that the mode does not take would decide
    nothing: refused, but for the radii of a Monte Carlo mode without them (a fixed run in a
    pipeline written for sequential sampling), set aside with a note. An exact mode's `n` is
    the number of copies it counts."""
    mode = sampling_mode(config.sampling, noise)
    values = {}
    for key in (*_SAMPLED, "radii"):
        given = getattr(config, key)
        if key in mode.takes:
            values[key] = given if given is not None else config.SAMPLED.get(key)
            continue
        values[key] = None
        if given is None or (key == "sampling" and given == mode.name):
            continue
        if key == "radii" and mode.estimates:
            print(f"l1cert certify: {mode.name} sampling sets --radii aside", file=sys.stderr)
            continue
        raise L1CertError(
            f"--{key} does not apply to {noise.name} noise under {mode.name} certification "
            f"({mode.help})"
        )
    values["sampling"] = mode.name
    if not mode.estimates:
        values["n"] = noise.copies
    return mode, values
