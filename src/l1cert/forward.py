"""The base classifier f as certification calls it: a noisy batch in, predicted labels out.

Two optional speed-ups, neither of which changes what is certified (the certificate holds for
whatever fixed function f maps a noisy input to a label):

- `compile`: the model goes through `torch.compile` once, for one fixed batch shape. A short last
  batch is padded up to `batch_size` instead of triggering a recompile; the padded rows' labels
  are sliced off, so they never vote. If compiling fails for any reason, f falls back to the
  eager model with one warning line on stderr.
- `precision="bf16"`: the forward runs under bf16 autocast, on GPUs and on CPUs alike (on a
  2-core AVX512-BF16 CPU it sped ResNet-20 up 2.3x); f is then the bf16 network, whose
  votes differ from the fp32 one's on a few draws near its decision boundary.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from l1cert.utils import L1CertError

if TYPE_CHECKING:
    import torch

COMPILE_MODES = ("auto", "on", "off")
PRECISIONS = ("fp32", "bf16")

# `auto` compiles a job of at least this many forward draws (points x draws per point): compiling
# costs seconds to tens of seconds and pays back only over millions of draws of a ResNet; the
# default digits job stays eager, a CIFAR shard compiles (README, "A faster forward pass").
COMPILE_MIN_DRAWS = {"cpu": 2_000_000, "cuda": 2_000_000}


def check_compile_mode(mode: str) -> None:
    if mode not in COMPILE_MODES:
        raise L1CertError(f"unknown compile mode {mode!r} (use {', '.join(COMPILE_MODES)})")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise L1CertError(f"unknown precision {precision!r} (use {', '.join(PRECISIONS)})")


def should_compile(mode: str, points: int, draws_per_point: int, device) -> tuple[bool, str]:
    """Whether to compile the base classifier for a job, and why (one line for the log)."""
    check_compile_mode(mode)
    if mode != "auto":
        return mode == "on", f"--compile {mode}"
    draws = int(points) * int(draws_per_point)
    kind = getattr(device, "type", str(device).split(":")[0])
    threshold = COMPILE_MIN_DRAWS.get(kind)
    if threshold is None:
        return False, f"auto: not compiling on {kind}"
    if draws >= threshold:
        return True, f"auto: {draws:,} draws >= {threshold:,}, compiling pays"
    return False, f"auto: {draws:,} draws < {threshold:,}, compiling would not pay"


class BaseClassifier:
    """`model` (logits over classes) as f: `f(batch)` gives the LongTensor of N labels.

    `batch` (N <= batch_size rows) must be on `self.device`; image batches in
    `self.memory_format`, which `channels_last` sets (the model's 4-D weights are converted in
    place to match).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        batch_size: int,
        compile: bool = False,
        precision: str = "fp32",
        channels_last: bool = True,
    ):
        import torch

        check_precision(precision)
        if not int(batch_size) > 0:
            raise L1CertError(f"batch size must be a positive integer, got {batch_size}")
        self.model = model.eval()
        self.batch_size = int(batch_size)
        self.precision = precision
        self.channels_last = channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.device = next(
            (t.device for t in [*model.parameters(), *model.buffers()]), torch.device("cpu")
        )
        self._autocast = precision == "bf16"
        self._forward = self.model
        self.compiled = False
        if compile:
            # one fixed shape: never recompile for the short last batch, which gets padded
            self._forward = torch.compile(self.model, dynamic=False)
            self.compiled = True
        self._padded: torch.Tensor | None = None
        self._checked = not compile  # the first compiled call is where compiling happens

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        size = len(batch)
        if size > self.batch_size:
            raise ValueError(f"batch of {size} exceeds batch_size {self.batch_size}")
        if self.compiled and size < self.batch_size:
            batch = self._pad(batch)
        if self._checked:
            return self._labels(batch)[:size]
        self._checked = True
        try:
            return self._labels(batch)[:size]
        except Exception as err:  # a missing compiler, an unsupported op: slower, but still right
            # the root cause, not dynamo's wrapper around it
            while (inner := err.__cause__ or getattr(err, "inner_exception", None)) is not None:
                err = inner
            first = (str(err).strip().splitlines() or [""])[0][:200]
            print(
                f"l1cert: warning: torch.compile failed, running the model eagerly "
                f"({type(err).__name__}: {first})",
                file=sys.stderr,
                flush=True,
            )
            self._forward, self.compiled = self.model, False
            return self._labels(batch)[:size]

    def _labels(self, batch: torch.Tensor) -> torch.Tensor:
        import torch

        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, torch.bfloat16, enabled=self._autocast),
        ):
            return self._forward(batch).argmax(dim=1)

    def _pad(self, batch: torch.Tensor) -> torch.Tensor:
        """`batch` copied into the head of a full-size buffer (the tail's labels are dropped)."""
        import torch

        # the strides a full batch of this layout has: dynamo guards on them, so a padded batch
        # must match the caller's full batches or it would compile a second graph
        strides = torch.empty_like(batch[:1]).stride()
        padded = self._padded
        if padded is None or (padded.shape[1:], padded.stride(), padded.dtype) != (
            batch.shape[1:],
            strides,
            batch.dtype,
        ):
            shape = (self.batch_size, *batch.shape[1:])
            padded = torch.empty_strided(shape, strides, dtype=batch.dtype, device=batch.device)
            self._padded = padded = padded.zero_()
        padded[: len(batch)].copy_(batch)
        return padded
