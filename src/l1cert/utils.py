"""Small shared helpers: the user-facing error type, devices, atomic file writes."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: `l1cert --help` and the workflow stay quick
    import torch


class L1CertError(Exception):
    """A problem with the user's input; the CLI prints it on one line and exits with 2."""


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else the CPU; anything else is passed to torch."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise L1CertError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise L1CertError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def check_memory(input_shape, inputs: int, device: torch.device, option: str = "--batch") -> None:
    """Fail fast when `inputs` float32 inputs of this shape would take more than half the
    memory the device has free (activations come on top)."""
    import math

    import torch

    need = inputs * math.prod(input_shape) * 4
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > free / 2:
        raise L1CertError(
            f"{option} asks for about {need / 2**30:.1f} GiB of input buffers on {device}, more "
            f"than half of the {free / 2**30:.1f} GiB free; lower it"
        )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    Readers never see a half-written file, and a crash leaves the old file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with writing(path):
            yield Path(tmp)
            os.chmod(tmp, 0o666 & ~umask())  # mkstemp's 0600 would hide results from a team
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """An OSError that names no file (a full disk: ENOSPC) names `path`, the file being
    written, so the one-line error says where."""
    try:
        yield
    except OSError as err:
        if err.filename is None:
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def progress(iterable=None, **options):
    """A progress bar on stderr: redrawn ten times a second on a terminal; elsewhere (a job's
    log, DVC's captured output) at most every 30 seconds, so logs stay small and still show
    that long work goes on."""
    import sys

    from tqdm import tqdm

    interval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(iterable, file=sys.stderr, mininterval=interval, **options)


class LoggedStream:
    """A text stream (stderr) that also keeps what is written to it in a log file, as a job's
    log: whole lines, and of a line a progress bar redraws (carriage returns), its last state."""

    def __init__(self, stream, log):
        self.stream, self.log, self._line = stream, log, ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        *lines, self._line = (self._line + text).split("\n")
        for line in lines:
            self.log.write(line.rsplit("\r", 1)[-1] + "\n")
        self.log.flush()
        return len(text)

    def close_log(self) -> None:
        last = self._line.rsplit("\r", 1)[-1]  # an unfinished line's last state
        if last:
            self.log.write(last + "\n")
        self.log.close()

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:  # a progress bar on a terminal stays one for the reader
        return self.stream.isatty()

    def __getattr__(self, name):  # fileno, encoding, ...: the stream's
        return getattr(self.stream, name)


def json_text(doc) -> str:
    """`doc` as indented JSON text. JSON has no Infinity or NaN: a float that is not finite
    (an ACR overflowing on absurd radii, a loss that diverged) is written as null."""

    def finite(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: finite(v) for key, v in value.items()}
        if isinstance(value, list | tuple):
            return [finite(v) for v in value]
        return value

    return json.dumps(finite(doc), indent=2, allow_nan=False) + "\n"


def parse_radii(radii, option: str = "--radii") -> list[float]:
    """The l1 radii of a table, from text (`0,0.25,0.5`) or numbers: increasing, finite and
    non-negative, or one line saying what is wrong. The one check of radii, wherever they
    come from (command line, params file, library call)."""
    import math

    parts = str(radii).split(",") if isinstance(radii, str) else list(radii)
    try:
        values = [float(part) for part in parts if str(part).strip()]
    except (TypeError, ValueError):
        raise L1CertError(f"{option} must be comma-separated numbers, got {radii!r}") from None
    if not values:
        raise L1CertError(f"{option} is empty")
    if any(not (math.isfinite(r) and r >= 0) for r in values) or values != sorted(set(values)):
        raise L1CertError(f"{option} must be increasing non-negative numbers, got {radii!r}")
    return values


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file (links resolved; a missing file is no other's)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
