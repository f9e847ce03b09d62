"""Where encodings and networks are found by name: a field is `network(encoding(v))`, and each side is a
small module that registers its builder, its config schema and the size it turns to meet a parameter
budget. Adding a method is one module and one config file: no trainer, task or runner code changes.

    @register_encoding("hashgrid", HashGridConfig, budget=("table_size", 1, 1 << 30))
    def build_hashgrid(cfg, spec: FieldSpec) -> nn.Module: ...

An encoding maps (..., in_dim) to (..., out_dim); a network maps (..., in_dim) to (..., out_dim) and ends in
the task's output activation. Both expose `in_dim` and `out_dim`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn


@dataclass(frozen=True)
class FieldSpec:
    """What a builder needs to know about the task: coordinate and output sizes, the output activation,
    the box the coordinates live in (hash and dense grids normalise by it, SIREN centres by it) and the
    seed (Fourier matrices are drawn from a CPU generator seeded by it)."""

    in_dim: int
    out_dim: int
    out_activation: str = "none"
    bounds: tuple[float, float] = (0.0, 1.0)
    seed: int = 0

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)


@dataclass(frozen=True)
class Budget:
    """The size a method turns to meet `model.params`: the config key (`encoding.table_size`), its range,
    and optionally `candidates(budget, spec, cfg)`, a list of settings to choose from where one integer
    cannot land within 5 % (a dense grid's per-axis resolutions)."""

    key: str
    low: int = 1
    high: int = 1 << 20
    candidates: Callable[..., list[Any]] | None = None


@dataclass(frozen=True)
class Entry:
    name: str
    build: Callable[..., nn.Module]
    schema: type
    budget: Budget | None = None
    check: Callable[[Any], str | None] | None = None  # cfg -> why it is out of range, or None
    # encodings: the Fourier family, gamma(v) = [sin, cos](2 pi v B^T) or v itself (ffrun-export writes it
    # as that formula), and static: no trainable parameters (a vectorized sweep can batch its features)
    fourier: bool = False
    static: bool = False


ENCODINGS: dict[str, Entry] = {}
NETWORKS: dict[str, Entry] = {}

# Modules whose import registers the encodings and networks ffrun ships; each registers itself.
BUILTIN_MODULES = ("ffrun.models.encodings", "ffrun.models.hashgrid", "ffrun.models.densegrid",
                   "ffrun.models.mlp", "ffrun.models.siren", "ffrun.models.wire")


def _register(table: dict[str, Entry], name: str, schema: type, budget: Budget | None, check, **traits):
    def decorate(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        table[name] = Entry(name, build, schema, budget, check, **traits)
        return build

    return decorate


def register_encoding(name: str, schema: type, budget: Budget | None = None, check=None, fourier: bool = False,
                      static: bool = False):
    """Decorator: `build(cfg, spec) -> nn.Module` is the encoding called `name` (config group `encoding`);
    `check(cfg)` returns why a setting is out of range (one line), or None; `fourier` and `static` as Entry."""
    return _register(ENCODINGS, name, schema, budget, check, fourier=fourier, static=static)


def register_network(name: str, schema: type, budget: Budget | None = None, check=None):
    """Decorator: `build(cfg, in_dim, spec) -> nn.Module` is the network called `name` (group `model`)."""
    return _register(NETWORKS, name, schema, budget, check)


def load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def encoding_entry(name: str) -> Entry:
    load_builtins()
    if name not in ENCODINGS:
        from ffrun.util.errors import FfrunError

        raise FfrunError(f"encoding.name={name!r} is not an encoding; choose one of {', '.join(sorted(ENCODINGS))}")
    return ENCODINGS[name]


def network_entry(name: str) -> Entry:
    load_builtins()
    if name not in NETWORKS:
        from ffrun.util.errors import FfrunError

        raise FfrunError(f"model.name={name!r} is not a network; choose one of {', '.join(sorted(NETWORKS))}")
    return NETWORKS[name]


def count_parameters(module: nn.Module) -> int:
    """Trainable real numbers: a complex parameter (WIRE) counts twice."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in module.parameters() if p.requires_grad)


def method_name(encoding: str, network: str) -> str:
    """How tables name a field: the encoding under the paper's MLP (or alone), the network over raw
    coordinates (siren, wire), else both."""
    if network in ("mlp", "direct"):
        return encoding
    return network if encoding == "none" else f"{encoding}+{network}"
