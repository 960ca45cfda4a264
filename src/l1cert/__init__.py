"""l1cert: tight l1 robustness certificates for randomized smoothing with Laplace noise."""

__version__ = "0.1.0"
