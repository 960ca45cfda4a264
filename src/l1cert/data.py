"""Datasets behind one interface: pixels in [0, 1], normalization left to the model.

- `digits`: scikit-learn's bundled 8x8 digit scans, a fixed seeded stratified split (offline).
- `cifar10`: torchvision's CIFAR-10, downloaded and MD5-checked into `<root>/cifar10`.
- `imagenet`: a local directory (argument or `IMAGENET_DIR`) with `train/` and `val/` class folders.
- `imagefolder`: any `<root>/imagefolder/{train,test}/<class>/<image>` tree, resized to a square.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
import urllib.error
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from l1cert.names import DATASETS, INPUT_GRID, check_choice
from l1cert.utils import L1CertError, atomic_path, atomic_write_text

# Per-channel statistics of the training sets (CIFAR-10 values as in Cohen et al.).
CIFAR10_MEAN, CIFAR10_STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED = 0.2, 0


class DatasetInfo(NamedTuple):
    num_classes: int
    input_shape: list[int]
    mean: list[float]
    std: list[float]
    grid: int


def check_name(name: str) -> None:
    check_choice("dataset", name, DATASETS)


def _split_name(name: str, split: str) -> str:
    if split not in ("train", "test", "val"):
        raise L1CertError(f"unknown split {split!r} (use train or test)")
    if name == "imagenet":
        return "train" if split == "train" else "val"
    if split == "val":
        raise L1CertError(f"dataset {name} has no 'val' split (use train or test)")
    return split


# --- digits --------------------------------------------------------------------------------


class ImageTensors(Dataset):
    """In-memory images (N x C x H x W in [0, 1]) with integer labels, never augmented."""

    augments = False

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list[str]):
        self.images, self.labels, self.classes = images, labels, classes
        self.targets = labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


def _digits_cache(root: str | os.PathLike) -> Path:
    """The split, saved by `l1cert data`: later jobs load it without importing scikit-learn,
    which takes seconds, many times over in a pipeline of short jobs."""
    return Path(root) / "digits" / "split.npz"


@functools.lru_cache(maxsize=4)
def _digits_arrays(split: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, ...]:
    if root is not None and _digits_cache(root).is_file():
        with np.load(_digits_cache(root)) as saved:
            return saved[f"x_{split}"], saved[f"y_{split}"]
    return _split_digits(split)


def _split_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    parts = train_test_split(
        images,
        digits.target,
        test_size=DIGITS_TEST_FRACTION,
        random_state=DIGITS_SPLIT_SEED,
        stratify=digits.target,
    )
    x_train, x_test, y_train, y_test = parts
    return (x_train, y_train) if split == "train" else (x_test, y_test)


def _digits(split: str, root: str | os.PathLike | None = None) -> ImageTensors:
    x, y = _digits_arrays(split, root)
    return ImageTensors(torch.from_numpy(x), torch.from_numpy(y), [str(c) for c in range(10)])


# --- cifar10 -------------------------------------------------------------------------------


def _cifar10(root: Path, split: str, augment: bool) -> Dataset:
    from torchvision import transforms
    from torchvision.datasets import CIFAR10

    folder = root / "cifar10"
    steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    transform = transforms.Compose([*(steps if augment else []), transforms.ToTensor()])
    try:  # torchvision reports its download on stdout; progress belongs on stderr
        with contextlib.redirect_stdout(sys.stderr):
            return CIFAR10(folder, train=split == "train", download=True, transform=transform)
    except (RuntimeError, urllib.error.URLError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise L1CertError(
            f"CIFAR-10 could not be downloaded or verified ({reason}); "
            f"put cifar-10-python.tar.gz into {folder}/ and run again"
        ) from err


# --- image folders: imagenet and imagefolder -----------------------------------------------


def find_imagenet_dir(path: str | os.PathLike | None) -> Path:
    """The ImageNet root: the argument, else $IMAGENET_DIR; its layout is checked."""
    path = path or os.environ.get("IMAGENET_DIR")
    if not path:
        raise L1CertError("imagenet needs --imagenet-dir DIR (or $IMAGENET_DIR) with train/, val/")
    return _check_tree(Path(path), ("train", "val"), "imagenet")


def _imagefolder_dir(root: Path) -> Path:
    return _check_tree(root / "imagefolder", ("train", "test"), "imagefolder")


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_tree(top: Path, splits: tuple[str, str], name: str) -> Path:
    """A class-folder tree: both split folders exist, hold class folders, and agree on them."""
    layout = f"{top}/{{{','.join(splits)}}}/<class>/<image>"
    if not top.is_dir():
        raise L1CertError(f"{name} directory {top} not found (expected layout {layout})")
    found = {}
    for split in splits:
        if not (top / split).is_dir():
            raise L1CertError(f"{name}: {top / split} is missing (expected layout {layout})")
        found[split] = _class_dirs(top / split)
        if not found[split]:
            raise L1CertError(f"{name}: {top / split} has no class folders (layout {layout})")
    if found[splits[0]] != found[splits[1]]:
        diff = sorted(set(found[splits[0]]) ^ set(found[splits[1]]))
        raise L1CertError(f"{name}: {splits[0]}/ and {splits[1]}/ differ in classes {diff[:5]}")
    return top


# Pillow modes of 8 bits a channel or less: read as RGB. Deeper ones are read exactly where they
# are 16-bit grey (to k/65535, on three equal channels, as Pillow makes RGB of grey), else refused:
# Pillow would clip them to white or drop their low bits, silently.
_EIGHT_BIT = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
_GREY16 = {"I;16", "I;16L", "I;16B"}


def _load_image(path: str):
    """An RGB PIL image (8-bit images), a float tensor in [0, 1] (16-bit grey ones), or a
    one-line error naming the file that does not decode or whose depth cannot be read exactly."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            rawmode = image.tile[0][3] if image.tile and len(image.tile[0]) > 3 else ""
            sixteen = ";16" in str(rawmode)
            if image.mode in _EIGHT_BIT and not sixteen:
                return image.convert("RGB")
            if image.mode in _GREY16:
                import numpy as np

                grey = np.asarray(image, dtype=np.float64) / 65535.0
                return torch.from_numpy(grey).float().expand(3, *grey.shape).contiguous()
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise L1CertError(f"cannot decode image {path}: {err}") from None
    depth = f"{image.mode} ({rawmode})" if rawmode else image.mode
    raise L1CertError(
        f"image {path} has pixels l1cert cannot read exactly (mode {depth}): save it as "
        "8-bit RGB or grey, or as 16-bit grey"
    )


def _as_tensor():
    """ToTensor for the PIL images; the tensors 16-bit images are read as pass as they are."""
    from torchvision import transforms

    to_tensor = transforms.ToTensor()
    return transforms.Lambda(lambda image: image if torch.is_tensor(image) else to_tensor(image))


def _image_folder(folder: Path, transform) -> Dataset:
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(folder, transform=transform, loader=_load_image)
    except (FileNotFoundError, OSError) as err:
        raise L1CertError(f"cannot read images in {folder}: {err}") from err


def _imagenet(path, split: str, augment: bool) -> Dataset:
    from torchvision import transforms

    if augment:
        steps = [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()]
    else:
        steps = [transforms.Resize(256), transforms.CenterCrop(224)]
    transform = transforms.Compose([*steps, _as_tensor()])
    return _image_folder(find_imagenet_dir(path) / split, transform)


def _imagefolder(root: Path, split: str, image_size: int, augment: bool) -> Dataset:
    """Users' own images, squashed to image_size; augmented like CIFAR-10 (crop + flip)."""
    from torchvision import transforms

    steps = [transforms.Resize((image_size, image_size))]
    if augment:
        pad = max(1, image_size // 8)
        steps += [transforms.RandomCrop(image_size, padding=pad), transforms.RandomHorizontalFlip()]
    transform = transforms.Compose([*steps, _as_tensor()])
    ds = _image_folder(_imagefolder_dir(root) / split, transform)
    for path, _ in ds.samples:  # an undecodable file fails now, not mid-way through a run
        _load_image(path)
    return ds


# --- the interface -------------------------------------------------------------------------


def load_split(
    name: str,
    split: str,
    root: str | os.PathLike = "data",
    image_size: int = 32,
    imagenet_dir: str | os.PathLike | None = None,
    augment: bool = False,
) -> Dataset:
    """A torch Dataset of (C x H x W float tensor in [0, 1], int label) pairs."""
    check_name(name)
    split = _split_name(name, split)
    root = Path(root)
    if name == "digits":
        return _digits(split, root)
    if name == "cifar10":
        return _cifar10(root, split, augment)
    if name == "imagenet":
        return _imagenet(imagenet_dir, split, augment)
    _check_image_size(image_size)
    return _imagefolder(root, split, image_size, augment)


def dataset_info(
    name: str,
    root: str | os.PathLike = "data",
    image_size: int = 32,
    imagenet_dir: str | os.PathLike | None = None,
) -> DatasetInfo:
    """What a model for this dataset needs: classes, input shape, normalization statistics."""
    check_name(name)
    if name == "digits":
        x, _ = _digits_arrays("train", root)
        return DatasetInfo(10, [1, 8, 8], [float(x.mean())], [float(x.std())], INPUT_GRID[name])
    if name == "cifar10":
        return DatasetInfo(10, [3, 32, 32], CIFAR10_MEAN, CIFAR10_STD, INPUT_GRID[name])
    if name == "imagenet":
        classes = _class_dirs(find_imagenet_dir(imagenet_dir) / "train")
        return DatasetInfo(
            len(classes), [3, 224, 224], IMAGENET_MEAN, IMAGENET_STD, INPUT_GRID[name]
        )
    _check_image_size(image_size)
    classes = _class_dirs(_imagefolder_dir(Path(root)) / "train")
    shape = [3, image_size, image_size]
    return DatasetInfo(len(classes), shape, [0.5] * 3, [0.5] * 3, INPUT_GRID[name])


def _check_image_size(image_size: int) -> None:
    if image_size < 1:
        raise L1CertError(f"--image-size must be a positive number of pixels, got {image_size}")


# --- prepare: fetch or verify, then describe ------------------------------------------------


def prepare(manifest: str | os.PathLike, data) -> dict:
    """Fetch (cifar10) or verify a dataset, and write a manifest the pipeline can track.

    The manifest lists images per class per split and a sha256 over the data's content
    (image files' bytes; for imagenet, too large to read each time, its file list and sizes).
    `data`: a `DataConfig`: the dataset, where it lives and how big its images are.
    """
    if data.dataset is None:
        raise L1CertError("--dataset is required")
    name, root, image_size, imagenet_dir = (
        data.dataset,
        data.root,
        data.image_size,
        data.imagenet_dir,
    )
    if Path(manifest).is_dir():
        raise L1CertError(f"--manifest {manifest} is a directory; give a file name")
    if name == "digits":  # computed afresh from scikit-learn's scans, then cached for the jobs
        arrays = {
            f"{k}_{split}": v
            for split in ("train", "test")
            for k, v in zip("xy", _split_digits(split), strict=True)
        }
        with atomic_path(_digits_cache(root)) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        _digits_arrays.cache_clear()
    info = dataset_info(name, root, image_size, imagenet_dir)
    digest = hashlib.sha256()
    splits = {}
    for split in ("train", "test"):
        ds = load_split(name, split, root, image_size, imagenet_dir)
        counts = np.bincount(np.asarray(ds.targets), minlength=info.num_classes)
        splits[split] = {
            "images": int(counts.sum()),
            "per_class": {c: int(k) for c, k in zip(ds.classes, counts, strict=True)},
        }
        _hash_content(name, ds, digest)
    content = "file list and sizes" if name == "imagenet" else "images and labels"
    doc = {
        "dataset": name,
        **info._asdict(),
        "splits": splits,
        "checksum": {"sha256": digest.hexdigest(), "of": content},
    }
    if name == "imagefolder":
        doc["image_size"] = image_size
    atomic_write_text(manifest, json.dumps(doc, indent=2) + "\n")
    return doc


def _hash_content(name: str, ds: Dataset, digest) -> None:
    if name == "digits":
        digest.update(ds.images.numpy().tobytes())
        digest.update(ds.labels.numpy().astype(np.int64).tobytes())
    elif name == "cifar10":
        digest.update(np.ascontiguousarray(ds.data).tobytes())
        digest.update(np.asarray(ds.targets, dtype=np.int64).tobytes())
    else:
        top = Path(ds.root).parent
        for path, label in ds.samples:
            rel = Path(path).relative_to(top).as_posix()
            digest.update(f"{rel}\t{label}\t{os.path.getsize(path)}\n".encode())
            if name == "imagefolder":
                digest.update(Path(path).read_bytes())
