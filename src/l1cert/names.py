"""The names every layer shares (library, CLI, report, the schema's enums): one list each.

Torch-free, so the report and the workflow read them quickly. The noises are `l1cert.noise`'s
table; the architectures' builders live in `l1cert.models` under these names.
"""

import re

DATASETS = ("digits", "cifar10", "imagenet", "imagefolder")
# The input grid q of each dataset: its pixels are multiples of 1/q (digits' scans count 0..16,
# 8-bit images 0..255). DSSN certifies perturbations that stay on it.
INPUT_GRID = {"digits": 16, "cifar10": 255, "imagenet": 255, "imagefolder": 255}
# The training objectives (l1cert.objectives.OBJECTIVES): noise augmentation, SmoothAdv
# (Salman et al. 2019), consistency regularization (Jeong & Shin 2020), stability training
# (Li et al. 2019).
TRAININGS = ("type1", "type2", "consistency", "stability")
ARCHITECTURES = ("digits_mlp", "cifar_resnet20", "cifar_resnet110", "resnet50")
NORMS = ("linf", "l2", "l1")  # SmoothAdv's PGD threat models


def check_choice(what: str, value: str, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`, else a one-line L1CertError listing them."""
    from l1cert.utils import L1CertError

    if not isinstance(value, str) or value not in choices:
        raise L1CertError(f"unknown {what} {value!r} (choose from {', '.join(choices)})")
    return value


# What a name read from data (a dataset, a training label, a model name) may look like before
# it becomes part of a file name: letters, digits and _ . + -, starting with a letter or digit,
# no "..", at most PLAIN_NAME_MAX characters. No separator, so it names a file, never a path.
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
PLAIN_NAME_MAX = 100


def check_plain_name(what: str, value) -> str:
    """`value` if it is a plain name (see PLAIN_NAME), else a one-line L1CertError naming
    `what` (where the value came from: a file and key, or an option). Never rewritten."""
    from l1cert.utils import L1CertError

    if (
        not isinstance(value, str)
        or len(value) > PLAIN_NAME_MAX
        or ".." in value
        or not PLAIN_NAME.fullmatch(value)
    ):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise L1CertError(
            f"{what} {shown} is not a plain name (letters, digits and _.+- only, starting "
            f"with a letter or digit, no '..', at most {PLAIN_NAME_MAX} characters)"
        )
    return value


# The l1 radii of the report's tables and metrics when none are given.
DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
