"""Read published certificate directories: the numpy layout of tonyduan/rs4a, which
alevine0/smoothingSplittingNoise (Levine & Feizi's DSSN results) kept.

A directory holds one entry per test image in
- `labels.npy`: the true classes (rs4a writes them as floats with integer values);
- `radius_l1.npy`: the certified ℓ1 radius;
- exactly one of `predicted_labels.npy` (the predicted classes, −1 for an abstention) or
  `preds.npy` (class scores, shape (images, classes); the prediction is each row's argmax).

An abstention (prediction −1) is never correct. rs4a writes the uniform and Laplace radii as
2λ(p̲A − ½) and −λ·ln(2(1 − p̲A)) without clipping, so a radius is negative when p̲A < ½:
such a point is certified at no radius r ≥ 0, exactly as rs4a's own analysis counts it, and
the radius is kept as written. Files are read with pickles refused; anything unexpected is
an `L1CertError` naming the file.
"""

from __future__ import annotations

import os
import tokenize
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from l1cert.utils import L1CertError

LABELS, RADIUS, PREDICTED, SCORES = (
    "labels.npy",
    "radius_l1.npy",
    "predicted_labels.npy",
    "preds.npy",
)


@dataclass(frozen=True, eq=False)
class PublishedResults:
    """One published run: per test image its label, prediction (−1 abstains), ℓ1 radius and
    whether the prediction is correct. The arrays are read-only."""

    path: Path
    labels: np.ndarray
    predict: np.ndarray
    radius: np.ndarray
    correct: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def _load(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, SyntaxError, tokenize.TokenError) as err:  # a pickle, a bad header
        raise L1CertError(f"{path}: not a plain numpy array file ({_one_line(err)})") from err
    except (OSError, EOFError) as err:
        raise L1CertError(f"{path}: cannot be read as a .npy file ({_one_line(err)})") from err
    if not isinstance(array, np.ndarray):  # an .npz archive behind a .npy name
        array.close()
        raise L1CertError(f"{path}: an .npz archive, not a single .npy array")
    return array


def _vector(path: Path) -> np.ndarray:
    array = _load(path)
    if array.ndim != 1:
        raise L1CertError(f"{path}: expected one entry per image (1-D), got shape {array.shape}")
    return array


def _classes(path: Path, array: np.ndarray, lowest: int, num_classes: int | None) -> np.ndarray:
    """Integer classes in [lowest, num_classes) (no upper end where the class count is not
    known); floats are accepted when every value is an integer."""
    high = num_classes if num_classes is not None else 2**62
    kind = array.dtype.kind
    if not (
        kind in "iu" or (kind == "f" and np.all(np.isfinite(array) & (array == np.round(array))))
    ):
        raise L1CertError(f"{path}: classes must be integers, got dtype {array.dtype}")
    if array.size and array.max() >= high:
        raise L1CertError(f"{path}: a class of {high} or more ({array.max()})")
    if array.size and array.min() < lowest:
        raise L1CertError(f"{path}: a class below {lowest} ({array.min()})")
    classes = array.astype(np.int64)
    return classes


def read_published(
    directory: str | os.PathLike, num_classes: int | None = None
) -> PublishedResults:
    """Read and check one published result directory (see the module docstring); classes must
    lie in [0, num_classes) where it is given."""
    directory = Path(directory)
    if not directory.is_dir():
        raise L1CertError(f"{directory}: not a directory of published certificates")
    for name in (LABELS, RADIUS):
        if not (directory / name).is_file():
            raise L1CertError(f"{directory}: {name} is missing")
    has_predicted, has_scores = ((directory / n).is_file() for n in (PREDICTED, SCORES))
    if has_predicted == has_scores:
        which = "both" if has_predicted else "neither"
        raise L1CertError(f"{directory}: {which} of {PREDICTED} and {SCORES}; need exactly one")

    labels = _classes(directory / LABELS, _vector(directory / LABELS), 0, num_classes)
    if len(labels) == 0:
        raise L1CertError(f"{directory}: no entries ({LABELS} is empty)")
    radius_path = directory / RADIUS
    radius = _vector(radius_path)
    if radius.dtype.kind not in "iuf" or not np.all(np.isfinite(radius)):
        raise L1CertError(f"{radius_path}: radii must be finite numbers")
    radius = radius.astype(np.float64)

    if has_predicted:
        predict_path = directory / PREDICTED
        predict = _classes(predict_path, _vector(predict_path), -1, num_classes)
    else:
        predict_path = directory / SCORES
        scores = _load(predict_path)
        if (
            scores.ndim != 2
            or scores.shape[1] < 1
            or (num_classes is not None and scores.shape[1] != num_classes)
        ):
            raise L1CertError(
                f"{predict_path}: expected scores (images, classes), got {scores.shape}"
            )
        if scores.dtype.kind not in "iuf" or not np.all(np.isfinite(scores)):
            raise L1CertError(f"{predict_path}: scores must be finite numbers")
        predict = scores.argmax(axis=1).astype(np.int64)

    for path, array in ((radius_path, radius), (predict_path, predict)):
        if len(array) != len(labels):
            raise L1CertError(f"{path}: {len(array)} entries, but {LABELS} has {len(labels)}")

    correct = predict == labels  # labels are >= 0, so an abstention (-1) is never correct
    for array in (labels, predict, radius, correct):
        array.setflags(write=False)
    return PublishedResults(directory, labels, predict, radius, correct)
