"""How `l1cert certify` spends its forward passes: one entry per sampling mode.

A mode checks the settings it needs (`check`: the certify settings in, the mode's own sidecar
settings out) and certifies a shard's points (`run`: yields (idx, certificate, seconds) in the
order points finish). `estimates` says whether its rows come from n0 selection and n estimation
draws at level α; a mode without them (exact counting) takes no n0, n or alpha, records them as
null in the sidecar, and writes 0 in the n0 and alpha columns (`n` is then the number of noise
copies counted). Which modes apply to a noise is the noise's to say (`Noise.samplings`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from l1cert import sequential
from l1cert.points import point_generator
from l1cert.utils import L1CertError

if TYPE_CHECKING:
    from l1cert.smoothing import Certificate, Smooth

Certified = Iterator[tuple[int, "Certificate", float]]


@dataclass(frozen=True)
class SamplingMode:
    name: str
    check: Callable[[dict], dict]
    run: Callable[[Smooth, object, list[int], dict], Certified]
    estimates: bool
    help: str

    def draws_per_point(self, settings: dict) -> int:
        """The most forward passes one point may take (to size the job)."""
        return (settings["n0"] or 0) + settings["n"]


def _check_fixed(settings: dict) -> dict:
    return {"radii": None, "looks": None}


def _check_exact(settings: dict) -> dict:
    if settings.get("radii") is not None and not settings.get("from_params"):
        raise L1CertError("--radii is for sequential sampling; exact certification takes none")
    return {"radii": None, "looks": None}


def _run_exact(smooth: Smooth, test_set, todo: list[int], settings: dict) -> Certified:
    """Points in groups whose noise copies fill about one forward batch each: every copy of
    every point counted (`Smooth.certify_exact`); a point's time is its share of its group's."""
    group = max(1, settings["batch"] // settings["n"])
    for start in range(0, len(todo), group):
        chunk = todo[start : start + group]
        begin = time.perf_counter()
        certificates = smooth.certify_exact(
            [test_set[idx][0] for idx in chunk],
            settings["batch"],
            [f"test point idx {i}" for i in chunk],
        )
        seconds = (time.perf_counter() - begin) / len(chunk)
        for idx, cert in zip(chunk, certificates, strict=True):
            yield idx, cert, seconds


def _run_fixed(smooth: Smooth, test_set, todo: list[int], settings: dict) -> Certified:
    n0, n, alpha, batch = (settings[k] for k in ("n0", "n", "alpha", "batch"))
    for idx in todo:
        start = time.perf_counter()
        generator = point_generator(settings["seed"], idx, smooth.device)
        cert = smooth.certify(test_set[idx][0], n0, n, alpha, batch, generator)
        yield idx, cert, time.perf_counter() - start


def _check_sequential(settings: dict) -> dict:
    radii = settings.get("radii")
    if radii is None or len(radii) == 0:
        raise L1CertError("--sampling sequential needs --radii R1,R2,... (the table's radii)")
    radii = [float(r) for r in radii]
    if any(not (math.isfinite(r) and r >= 0) for r in radii) or radii != sorted(set(radii)):
        raise L1CertError(f"--radii must be increasing non-negative numbers, got {radii}")
    if settings["n"] < sequential.FIRST_LOOK:
        raise L1CertError(
            f"--n {settings['n']} (the cap of sequential sampling) is below its first round of "
            f"{sequential.FIRST_LOOK} draws"
        )
    return {"radii": radii, "looks": sequential.looks(settings["n"])}


def _run_sequential(smooth: Smooth, test_set, todo: list[int], settings: dict) -> Certified:
    started = {}

    def points():  # a point's time runs from when it joins the batches to when it stops
        for idx in todo:
            started[idx] = time.perf_counter()
            yield idx, test_set[idx][0], point_generator(settings["seed"], idx, smooth.device)

    n0, n, alpha, batch = (settings[k] for k in ("n0", "n", "alpha", "batch"))
    for idx, cert in smooth.certify_sequential(points(), n0, n, alpha, batch, settings["radii"]):
        yield idx, cert, time.perf_counter() - started.pop(idx)


MODES: dict[str, SamplingMode] = {
    mode.name: mode
    for mode in (
        SamplingMode(
            "fixed", _check_fixed, _run_fixed, True,
            "n draws per point (Cohen et al.)",
        ),
        SamplingMode(
            "sequential", _check_sequential, _run_sequential, True,
            "stop once the point's bucket among --radii is decided, n being the cap",
        ),
        SamplingMode(
            "exact", _check_exact, _run_exact, False,
            "every noise copy counted once (DSSN): no sampling, no α, no abstention",
        ),
    )
}  # fmt: skip


def sampling_mode(name: str | None, noise) -> SamplingMode:
    """The mode called `name` (None: the noise's first), if it applies to `noise`; else one
    line."""
    name = name or noise.samplings[0]
    if name not in MODES:
        raise L1CertError(f"unknown sampling {name!r} (choose from {', '.join(MODES)})")
    if name not in noise.samplings:
        raise L1CertError(
            f"--sampling {name} does not apply to {noise.name} noise "
            f"(use {' or '.join(noise.samplings)})"
        )
    return MODES[name]


def resolve(config, noise, from_params: bool) -> tuple[SamplingMode, dict]:
    """The mode and the n0, n, alpha a run of `config` (a CertifyConfig) takes under `noise`.

    A sampled noise fills in what is not given (`CertifyConfig.SAMPLED`). An exact noise counts
    its L copies: n0, n, alpha and another sampling mean nothing there and are refused, unless
    they come from a params file's certify section (`from_params`: that section serves every
    noise of the grid), where they are set aside with a note."""
    import sys

    given = {k: getattr(config, k) for k in ("n0", "n", "alpha", "sampling")}
    exact = "exact" in noise.samplings
    if not exact:
        values = {k: v if v is not None else config.SAMPLED[k] for k, v in given.items()}
        return sampling_mode(values.pop("sampling"), noise), values
    unused = [k for k, v in given.items() if v is not None and (k, v) != ("sampling", "exact")]
    if unused and not from_params:
        raise L1CertError(
            f"--{unused[0]} does not apply to {noise.name} noise: it counts every one of its "
            f"{noise.offsets} noise copies exactly (no sampling, no alpha)"
        )
    if unused:
        print(f"l1cert certify: {noise.name} is certified exactly; certify.{', '.join(unused)} "
              "of the params apply to sampled noises only", file=sys.stderr)  # fmt: skip
    return MODES["exact"], {"n0": None, "n": noise.offsets, "alpha": None}
