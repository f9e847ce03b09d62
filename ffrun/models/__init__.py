"""Coordinate networks: Fourier-feature encodings, the ReLU MLP, and the field that joins them."""

from ffrun.models.encodings import (
    FourierEncoding,
    IdentityEncoding,
    basic_matrix,
    build_encoding,
    fourier_features,
    gaussian_matrix,
    posenc_matrix,
)
from ffrun.models.field import Field, build_field
from ffrun.models.mlp import MLP

__all__ = [
    "FourierEncoding",
    "IdentityEncoding",
    "MLP",
    "Field",
    "basic_matrix",
    "build_encoding",
    "build_field",
    "fourier_features",
    "gaussian_matrix",
    "posenc_matrix",
]
