"""ffrun: an experiment runner for Fourier-feature coordinate MLPs (Tancik et al., NeurIPS 2020)."""

__version__ = "0.1.0"
