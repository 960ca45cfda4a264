"""Import released smoothing checkpoints as l1cert models, tensor for tensor.

Formats:
- `cohen`: the {'arch', 'state_dict', 'epoch', 'optimizer'} dict of Cohen et al.'s train.py
  (locuslab/smoothing). Its state_dict belongs to Sequential(NormalizeLayer, network); the
  NormalizeLayer keeps mean/std as plain attributes, so it contributes no keys and the network's
  keys read `1.conv1.weight`, ... (CIFAR ResNet) or `1.module.conv1.weight`, ... (ImageNet:
  torchvision's ResNet-50 inside DataParallel).
- `smoothadv`: Salman et al.'s checkpoints (Hadisalman/smoothing-adversarial), the same layout,
  but the code their released models come from centers the input (x - mean) without dividing by
  the std. Their later code went back to Cohen's NormalizeLayer: import such models as `cohen`.
- `torchvision`: a plain torchvision ResNet-50 state_dict (or a dict holding one under
  'state_dict'), keys optionally prefixed `module.`; ImageNet normalization.

Their CIFAR ResNet matches l1cert's CifarResNet layer for layer (3x3 convs without bias, a
1x1 conv + BN shortcut exactly where stride or width changes, AvgPool2d(8) on the final 8x8
map = our global average pool); only the names differ, mapped by `_their_key`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from l1cert import __version__
from l1cert.certify_format import file_sha256
from l1cert.data import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from l1cert.models import BasicBlock, build_model, check_arch, load_checkpoint, save_model
from l1cert.names import TRAININGS, check_choice
from l1cert.noise import NOISES, make_noise, noise_class
from l1cert.utils import L1CertError, same_file

FORMATS = ("cohen", "smoothadv", "torchvision")

# classes, input shape, mean, std: the values of Cohen et al.'s datasets.py.
DATASETS = {
    "cifar10": (10, [3, 32, 32], CIFAR10_MEAN, CIFAR10_STD),
    "imagenet": (1000, [3, 224, 224], IMAGENET_MEAN, IMAGENET_STD),
}
ARCHS = {"cohen": ("cifar_resnet20", "cifar_resnet110", "resnet50"), "torchvision": ("resnet50",)}
ARCHS["smoothadv"] = ARCHS["cohen"]


def import_checkpoint(
    src: str | os.PathLike,
    out: str | os.PathLike,
    fmt: str,
    dataset: str,
    noise: str,
    sigma: float,
    arch: str | None = None,
    training: str = "type1",
    name: str | None = None,
) -> dict:
    """Convert the foreign checkpoint `src` into an l1cert checkpoint `out`; return its meta.

    `arch` defaults to the one the checkpoint names (cohen, smoothadv) or resnet50.
    """
    src = Path(src)
    if same_file(src, out):
        raise L1CertError(f"--out {out} is the checkpoint to import; write the model elsewhere")
    check_choice("format", fmt, tuple(FORMATS))
    if dataset not in DATASETS:
        raise L1CertError(f"cannot import for dataset {dataset!r} (use {' or '.join(DATASETS)})")
    check_choice("training", training, TRAININGS)
    if noise_class(noise).exact:
        sampled = ", ".join(n for n, cls in NOISES.items() if not cls.exact)
        raise L1CertError(
            f"--noise {noise} is certified with the template a model is trained with, which a "
            f"released checkpoint has not: import it with a sampled noise ({sampled})"
        )
    smooth_noise = make_noise(noise, sigma)
    ckpt = load_checkpoint(src)  # weights_only: a file carrying code is refused here
    state, arch, prefix = _unwrap(ckpt, fmt, arch, src)

    num_classes, input_shape, mean, std = DATASETS[dataset]
    if fmt == "smoothadv":
        std = [1.0] * len(mean)  # (x - mean) / 1 is exactly their centering layer
    model = build_model(arch, num_classes, input_shape, mean, std)
    try:
        model.load_state_dict(_mapped(state, model, arch, prefix, f"{src}: {fmt} {arch}"))
    except (RuntimeError, TypeError, ValueError) as err:  # _mapped checked keys and shapes
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise L1CertError(f"{src}: its tensors do not load into a {arch} ({first})") from None

    meta = {
        # imported models are named as such, and apart by the noise they are certified with
        "name": name or f"{fmt}-{src.name.split('.')[0]}-{smooth_noise.name}-s{smooth_noise.sigma}",
        "arch": arch,
        "dataset": dataset,
        "num_classes": num_classes,
        "input_shape": input_shape,
        "mean": mean,
        "std": std,
        "noise": smooth_noise.name,
        "sigma": smooth_noise.sigma,
        "scale": smooth_noise.scale,
        "training": training,
        "source": {
            "file": src.name,
            "sha256": file_sha256(src),
            "format": fmt,
            "arch": ckpt.get("arch") if fmt != "torchvision" else None,
            "epoch": ckpt.get("epoch") if fmt != "torchvision" else None,
        },
        "l1cert_version": __version__,
    }
    save_model(out, model, meta)
    return meta


def _unwrap(ckpt, fmt: str, arch: str | None, src: Path) -> tuple[dict, str, str]:
    """The network's state_dict, its arch, and the prefix its keys carry."""
    if fmt == "torchvision":
        state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
        arch = arch or "resnet50"
    else:
        if not isinstance(ckpt, dict) or not {"arch", "state_dict"} <= ckpt.keys():
            raise L1CertError(f"{src} is not a {fmt} checkpoint (no 'arch' and 'state_dict')")
        if arch is not None and arch != ckpt["arch"]:
            raise L1CertError(f"{src} holds a {ckpt['arch']}, not a {arch}")
        arch = arch or ckpt["arch"]
        state = ckpt["state_dict"]
    check_arch(arch)
    if arch not in ARCHS[fmt]:
        raise L1CertError(f"cannot import arch {arch!r} from {fmt} ({', '.join(ARCHS[fmt])})")
    if not isinstance(state, dict) or not state:
        raise L1CertError(f"{src} holds no state_dict")
    if fmt == "torchvision":
        prefix = "module." if all(str(k).startswith("module.") for k in state) else ""
    else:  # index 1 of Sequential(NormalizeLayer, network); their ImageNet net is in DataParallel
        prefix = "1.module." if arch == "resnet50" else "1."
    return state, arch, prefix


def _their_key(key: str, arch: str, blocks: int) -> str:
    """The foreign name of l1cert's network key `key` (Normalize excluded)."""
    if arch == "resnet50" or key.startswith("fc."):
        return key  # l1cert's resnet50 is torchvision's
    # features: 0 conv, 1 bn, 2 relu, then `blocks` BasicBlocks per stage (layer1..layer3)
    index, rest = key.removeprefix("features.").split(".", 1)
    i = int(index)
    if i < 2:
        return ("conv1.", "bn1.")[i] + rest
    if rest.startswith("shortcut."):
        rest = "downsample." + rest.removeprefix("shortcut.")
    stage, block = divmod(i - 3, blocks)
    return f"layer{stage + 1}.{block}.{rest}"


def _mapped(state: dict, model: torch.nn.Module, arch: str, prefix: str, what: str) -> dict:
    """l1cert's state_dict filled from `state`; one-line error on the first key that fails."""
    net = model[1]
    blocks = sum(isinstance(m, BasicBlock) for m in net.modules()) // 3
    out, used = {}, set()
    for key, ours in model.state_dict().items():
        if not key.startswith("1."):
            out[key] = ours  # Normalize's mean and std: from the dataset, not the file
            continue
        theirs = prefix + _their_key(key[2:], arch, blocks)
        if theirs not in state:
            if key.endswith("num_batches_tracked"):
                out[key] = ours  # older torch saved none; unused in eval mode
                continue
            raise L1CertError(f"{what}: key {theirs!r} is missing")
        tensor = state[theirs]
        if not isinstance(tensor, torch.Tensor) or tensor.shape != ours.shape:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor)
            raise L1CertError(f"{what}: key {theirs!r} is {shape}, expected {tuple(ours.shape)}")
        if ours.is_floating_point() and not tensor.is_floating_point():
            raise L1CertError(f"{what}: key {theirs!r} holds {tensor.dtype}, not real numbers")
        out[key] = tensor
        used.add(theirs)
    extra = [k for k in state if k not in used]
    if extra:
        raise L1CertError(f"{what}: unexpected key {extra[0]!r}")
    return out
