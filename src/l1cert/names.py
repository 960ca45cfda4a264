"""The names every layer shares (library, CLI, report, the schema's enums): one list each.

Torch-free, so the report and the workflow read them quickly. The noises are `l1cert.noise`'s
table; the architectures' builders live in `l1cert.models` under these names.
"""

DATASETS = ("digits", "cifar10", "imagenet", "imagefolder")
TRAININGS = ("type1", "type2")  # noise augmentation; SmoothAdv
ARCHITECTURES = ("digits_mlp", "cifar_resnet20", "cifar_resnet110", "resnet50")
NORMS = ("linf", "l2", "l1")  # SmoothAdv's PGD threat models


def check_choice(what: str, value: str, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`, else a one-line L1CertError listing them."""
    from l1cert.utils import L1CertError

    if value not in choices:
        raise L1CertError(f"unknown {what} {value!r} (choose from {', '.join(choices)})")
    return value


# The l1 radii of the report's tables and metrics when none are given.
DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
