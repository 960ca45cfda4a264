"""What a reader of a paper sees instead of an id: display names of trainings, noises and bounds
for the report's LaTeX tables and its figures (the CSV and Markdown tables keep the ids, which
scripts read). Torch- and matplotlib-free.
"""

from __future__ import annotations

from l1cert import bounds

TRAINING_LABELS = {
    "type1": "Type 1",
    "type2": "Type 2",
    "consistency": "Consistency",
    "stability": "Stability",
}
NOISE_LABELS = {
    "laplace": "Laplace",
    "gaussian": "Gaussian",
    "uniform": "Uniform",
    "split": "Splitting (SSN)",
    "dssn": "DSSN",
}


def training_label(training: str) -> str:
    """'type1' -> 'Type 1'; a training the library does not know (a foreign file's label) as
    it is."""
    return TRAINING_LABELS.get(training, training)


def noise_label(noise: str) -> str:
    return NOISE_LABELS.get(noise, noise)


def bound_label(bound: str) -> str:
    """The bound's legend label (`Bound.label`) without the id it carries for the tables that
    show ids: 'Laplace, Thm 2 (teng)' -> 'Laplace, Thm 2'."""
    registry = bounds.BOUNDS  # looked up at each call: the registry is the one truth
    label = registry[bound].label if bound in registry else bound
    return label.removesuffix(f" ({bound})")


def bound_parts(bound: str) -> tuple[str, str]:
    """A bound's display label in two: (its noise, its certificate), for tables with a column
    each: 'Laplace, Lecuyer et al. (DP)' -> ('Laplace', 'Lecuyer et al. (DP)')."""
    noise, _, certificate = bound_label(bound).partition(", ")
    return (noise, certificate) if certificate else ("", noise)
