"""Equal budgets: `model.params=N` sizes any method to N trainable parameters, within 5 %.

Each method names the one size it turns (ffrun.models.registry.Budget: the network's width for the MLPs,
SIREN and WIRE; the table size of a hash grid; the per-axis resolution of a dense grid): the encoding's
knob if it has one, else the network's. The count of a candidate is that of the field actually built (on
the meta device: shapes without memory; ffrun.models.registry.count_parameters), so no formula per method
can drift from its code. Integer knobs are searched by doubling, then bisection (the count grows with them;
no candidate is built far above the budget); list-valued ones come from the method's candidates.
"""

from __future__ import annotations

from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf, open_dict

from ffrun.models.registry import FieldSpec, count_parameters, encoding_entry, network_entry
from ffrun.util.errors import FfrunError

TOLERANCE = 0.05


def _with(encoding_cfg: DictConfig, model_cfg: DictConfig, key: str, value: Any) -> tuple[DictConfig, DictConfig]:
    enc, model = encoding_cfg.copy(), model_cfg.copy()
    group, name = key.split(".", 1)
    target = enc if group == "encoding" else model
    with open_dict(target):
        target[name] = value
    return enc, model


def _count(encoding_cfg, model_cfg, spec: FieldSpec, assemble: Callable) -> int:
    import torch

    with torch.device("meta"):  # shapes only: no memory, no initialisation
        return count_parameters(assemble(encoding_cfg, model_cfg, spec))


def meet_budget(encoding_cfg: DictConfig, model_cfg: DictConfig, spec: FieldSpec, assemble: Callable
                ) -> tuple[DictConfig, DictConfig, dict[str, Any]]:
    """(encoding, model) configs with the knob set to meet model.params, and {"key": value, "params": count};
    `assemble(encoding_cfg, model_cfg, spec)` builds a candidate field (ffrun.models.field.assemble)."""
    if getattr(model_cfg, "budget_rule", "ffrun") == "grids":
        return grids_budget(encoding_cfg, model_cfg, spec, assemble)
    budget = int(model_cfg.params)
    knob = encoding_entry(encoding_cfg.name).budget or network_entry(getattr(model_cfg, "name", "mlp")).budget
    what = f"{encoding_cfg.name} + {getattr(model_cfg, 'name', 'mlp')}"
    if knob is None:
        raise FfrunError(f"model.params={budget}: {what} has no size to turn (its parameter count is fixed); "
                         "drop model.params or choose another method")

    seen: dict[str, int] = {}

    def count(value: Any) -> int:
        if repr(value) not in seen:
            seen[repr(value)] = _count(*_with(encoding_cfg, model_cfg, knob.key, value), spec, assemble)
        return seen[repr(value)]

    if knob.candidates is not None:
        values = knob.candidates(budget, spec, encoding_cfg if knob.key.startswith("encoding.") else model_cfg)
        counts = [(abs(count(v) - budget), v) for v in values]
        best = min(counts, key=lambda c: c[0])[1]
    else:
        lo, hi = knob.low, knob.high
        if count(lo) > budget:
            raise FfrunError(f"model.params={budget} is below the smallest {what} ({count(lo)} parameters at "
                             f"{knob.key}={lo}); raise the budget or shrink the fixed parts (model.depth, "
                             "encoding.levels, ...)")
        hi = lo + 1
        while hi < knob.high and count(hi) <= budget:  # gallop: never build a field far above the budget
            lo, hi = hi, min(2 * hi, knob.high)
        if count(hi) <= budget and abs(count(hi) - budget) > TOLERANCE * budget:
            raise FfrunError(f"model.params={budget} is unreachable: {what} has at most {count(hi)} parameters "
                             f"however large {knob.key} is (a hash grid's levels are all dense in "
                             f"{spec.in_dim}D); lower the budget or raise the fixed sizes")
        while hi - lo > 1:  # largest value whose count is <= budget
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if count(mid) <= budget else (lo, mid)
        best = min((lo, hi), key=lambda v: abs(count(v) - budget))
    got = count(best)
    if abs(got - budget) > TOLERANCE * budget:
        raise FfrunError(f"model.params={budget}: the nearest {what} has {got} parameters ({knob.key}={best}), "
                         f"more than {TOLERANCE:.0%} away; change the budget or the method's fixed sizes")
    enc, model = _with(encoding_cfg, model_cfg, knob.key, best)
    value = OmegaConf.to_container(OmegaConf.create({"v": best}))["v"]
    return enc, model, {knob.key: value, "params": got}


def grids_budget(encoding_cfg: DictConfig, model_cfg: DictConfig, spec: FieldSpec, assemble: Callable
                 ) -> tuple[DictConfig, DictConfig, dict[str, Any]]:
    """`model.budget_rule=grids`: the Grids benchmark's sizes for model.params (ffrun.models.grids_budget), as
    meet_budget returns them, with `benchmark_params`, the benchmark's own count, beside ffrun's `params`."""
    from ffrun.models.grids_budget import benchmark_count, grids_sizes

    try:
        chosen = grids_sizes(encoding_cfg, model_cfg, spec.in_dim, spec.out_dim)
    except ValueError as e:
        raise FfrunError(f"config: {e}") from None
    for key, value in chosen.items():
        encoding_cfg, model_cfg = _with(encoding_cfg, model_cfg, key, value)
    import torch

    with torch.device("meta"):  # shapes only, as _count
        field = assemble(encoding_cfg, model_cfg, spec)
    sizes = {**OmegaConf.to_container(OmegaConf.create(chosen)), "params": count_parameters(field),
             "benchmark_params": benchmark_count(field)}
    return encoding_cfg, model_cfg, sizes
