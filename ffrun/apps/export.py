"""`ffrun-export RUN_DIR`: a portable copy of a trained field that loads without Hydra or ffrun's configs.

Writes `<out>/field.safetensors` (every weight, the Fourier matrix B as `encoding.B`) and `<out>/field.json`
(the encoding with B written out, the architecture, the task's coordinate convention and the run's
metrics). Reading it back needs torch and safetensors only: `ffrun.load_exported(out)`, or any framework
that reads safetensors and follows field.json:

    gamma(v) = [sin(c v B^T), cos(c v B^T)] (/ sqrt(m) if normalize), c = 2 pi if two_pi else 1
    h_0 = gamma(v); h_k = ReLU(W_k h_{k-1} + b_k) for k < depth; out = act(W_depth h + b_depth)

Other methods (SIREN, WIRE, hash and dense grids; field.json's `network`) are rebuilt from the run's config
in field.json by ffrun's own modules, then given the weights of field.safetensors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ffrun.models.registry import ENCODINGS, count_parameters, load_builtins, method_name
from ffrun.run.record import RECORD, NotARecord, RunRecord
from ffrun.util.atomic import write_bytes, write_json
from ffrun.util.errors import FfrunError

FORMAT = "ffrun-field"
VERSION = 1
# The keys of field.json that say how the field is built (the rest, notes and metrics, may be annotated): their
# digest is written into field.safetensors' metadata, so a field.json edited after the export is refused.
DEFINING = ("format", "in_dim", "out_dim", "encoding", "method", "grid", "network", "mlp", "config")


def definition_digest(meta: dict) -> str:
    """The SHA-256 of field.json's DEFINING keys, in a canonical JSON."""
    import hashlib

    defining = {k: meta[k] for k in DEFINING if k in meta}
    if isinstance(defining.get("encoding"), dict):  # B written out is checked against the weights themselves
        defining["encoding"] = {k: v for k, v in defining["encoding"].items() if k != "B"}
    return hashlib.sha256(json.dumps(defining, sort_keys=True, default=str).encode()).hexdigest()

def fourier_names() -> list[str]:
    """The Fourier-family encodings (registry entries marked `fourier`): field.json writes them as a formula."""
    load_builtins()
    return [entry.name for entry in ENCODINGS.values() if entry.fourier]


def export(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write field.safetensors and field.json for the run in `run_dir`; returns the output folder."""
    from safetensors.torch import save as save_safetensors

    from ffrun.run.load import load
    from ffrun.tasks import task_class  # here: load_exported reads a field with torch alone, no task code

    if out is not None and not str(out).strip():  # Path("") is the current folder
        raise FfrunError("--out '': an empty folder name would write into the current folder; give the folder to "
                         "write into, or leave --out out for RUN_DIR/export")
    field = load(run_dir)
    cfg = field.config
    out = Path(out) if out is not None else Path(run_dir) / "export"
    tensors = {k: v.detach().cpu().contiguous() for k, v in field.state_dict().items()}
    enc = cfg["encoding"]
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "task": cfg["task"]["name"],
        "coordinates": task_class(cfg["task"]["name"]).coordinates,  # the task's own note
        "in_dim": field.in_dim,
        "out_dim": field.out_dim,
        "encoding": {"name": enc["name"], "two_pi": enc["two_pi"], "normalize": enc["normalize"],
                     "center": enc["center"], "sigma": enc["sigma"] if enc["name"] == "gauss" else None,
                     "formula": "gamma(v) = [sin(2 pi v B^T), cos(2 pi v B^T)]" + (
                         "" if enc["two_pi"] else " without the 2 pi") + (" / sqrt(m)" if enc["normalize"] else "")},
        "step": field.step,
        "source_run": str(Path(run_dir).resolve()),
        "config": cfg,
    }
    if "encoding.B" in tensors:
        meta["encoding"]["B"] = tensors["encoding.B"].tolist()
    network = cfg["model"].get("name", "mlp")
    meta["method"] = method_name(enc["name"], network)
    if enc["name"] == "grid":
        meta["grid"] = {"shape": list(field.shape), "values": "values", "out_activation": field.out_activation}
    elif enc["name"] not in fourier_names() or network != "mlp":
        # SIREN, WIRE, hash and dense grids: the weights plus the config that builds their modules
        meta["network"] = {"name": network, "params": count_parameters(field), "sizes": field.sizes,
                           "bounds": list(field.encoding.bounds) if hasattr(field.encoding, "bounds") else [0.0, 1.0],
                           "out_activation": getattr(field.mlp, "out_activation", "none")}
    else:
        mlp = cfg["model"]
        width = field.sizes.get("model.width", mlp["width"])  # the width a model.params budget chose
        meta["mlp"] = {"depth": mlp["depth"], "width": width, "hidden_activation": "relu",
                       "out_activation": field.mlp.out_activation, "parametrization": mlp["parametrization"],
                       "w_std": mlp["w_std"], "b_std": mlp["b_std"],
                       "layers": [{"weight": f"mlp.net.{2 * i}.weight", "bias": f"mlp.net.{2 * i}.bias"}
                                  for i in range(mlp["depth"])]}
    metrics = Path(run_dir) / RECORD
    if metrics.is_file():
        try:
            meta["metrics"] = RunRecord.load(metrics).metrics
        except NotARecord:  # JSON, but not an object: there are no metrics to copy
            meta["metrics"] = {}
        except (OSError, ValueError) as e:
            raise FfrunError(f"{metrics}: unreadable ({e}); remove it to export the field without its metrics")
    meta = json.loads(json.dumps(meta, default=str))  # as field.json reads back, so the digest is of that
    write_bytes(out / "field.safetensors", save_safetensors(tensors, metadata={"format": FORMAT,
                                                                               "definition": definition_digest(meta)}))
    write_json(out / "field.json", meta)
    return out


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The field written by `export`, from its folder or its field.json, on `device` in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    try:
        meta = json.loads((folder / "field.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FfrunError(f"{folder / 'field.json'}: unreadable ({e}); give the folder ffrun-export wrote") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise FfrunError(f"{folder / 'field.json'}: not an ffrun-export file (format {found!r})")
    _check_definition(folder, meta)
    try:
        return _build_exported(meta, load_file(str(folder / "field.safetensors"))).to(device).eval()
    except FfrunError as e:
        raise FfrunError(f"{folder}: {e}") from None
    except Exception as e:  # field.json and field.safetensors that do not describe one field
        raise FfrunError(f"{folder}: not a loadable ffrun export ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:300]})") from None


def _check_definition(folder: Path, meta: dict) -> None:
    """field.json says how the field is built as ffrun-export wrote it (the digest in field.safetensors' metadata);
    an export written before the digest existed is taken as it is."""
    from safetensors import safe_open

    try:
        with safe_open(str(folder / "field.safetensors"), framework="pt") as f:
            written = (f.metadata() or {}).get("definition")
    except Exception:  # unreadable: the load below says so
        return
    if written is not None and written != definition_digest(meta):
        raise FfrunError(f"{folder / 'field.json'}: changed since ffrun-export wrote it (its method, encoding, "
                         "network, bounds or config differ from what field.safetensors was written with); export "
                         "the run again with ffrun-export")


def _build_exported(meta: dict, tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
    from ffrun.models.encodings import FourierEncoding, IdentityEncoding
    from ffrun.models.field import Field
    from ffrun.models.grid import GridField
    from ffrun.models.mlp import MLP

    enc = meta["encoding"]
    if "network" in meta:  # a method other than the paper's Fourier features + ReLU MLP: built from its config
        field = _build_from_config(meta)
    elif enc["name"] == "grid":
        field = GridField(tuple(meta["grid"]["shape"]), meta["out_dim"], meta["grid"].get("out_activation", "none"))
    elif enc["name"] not in fourier_names():
        raise FfrunError(f"field.json's encoding.name {str(enc['name'])[:40]!r} is not an encoding ffrun exports "
                         f"({', '.join(fourier_names())}, grid, or a `network` entry); export the run again")
    else:
        if enc["name"] == "none":
            encoding = IdentityEncoding(meta["in_dim"], enc["center"])
        else:
            B = tensors["encoding.B"]
            # field.json writes B out for readers without safetensors: the two must be the same matrix.
            if "B" in enc and not torch.equal(torch.as_tensor(enc["B"], dtype=B.dtype), B):
                raise FfrunError("field.json's encoding.B differs from field.safetensors' encoding.B; one of the "
                                 "two files was changed: export the run again with ffrun-export")
            encoding = FourierEncoding(B, two_pi=enc["two_pi"], normalize=enc["normalize"],
                                       trainable=enc["name"] == "learned")
        m = meta["mlp"]
        mlp = MLP(encoding.out_dim, meta["out_dim"], m["depth"], m["width"], m["out_activation"], "torch",
                  m["parametrization"], m["w_std"], m["b_std"])
        field = Field(encoding, mlp)
    field.load_state_dict(tensors)
    return field


def _build_from_config(meta: dict) -> torch.nn.Module:
    """The field of field.json's config (its schemas' dataclasses: no Hydra or OmegaConf), at the sizes the
    run's budget chose; its weights come from field.safetensors."""
    import dataclasses

    from ffrun.models.field import assemble
    from ffrun.models.registry import FieldSpec, encoding_entry, network_entry

    net = meta["network"]
    enc_cfg, model_cfg = dict(meta["config"]["encoding"]), dict(meta["config"]["model"])
    for key, value in (net.get("sizes") or {}).items():
        if "." in key:  # a config key; params and benchmark_params are counts
            group, name = key.split(".", 1)
            (enc_cfg if group == "encoding" else model_cfg)[name] = value
    model_cfg["params"] = None

    def make(schema: type, values: dict):
        known = {f.name for f in dataclasses.fields(schema)}
        return schema(**{k: v for k, v in values.items() if k in known})

    spec = FieldSpec(int(meta["in_dim"]), int(meta["out_dim"]), net.get("out_activation", "none"),
                     tuple(net.get("bounds", (0.0, 1.0))), int(meta["config"].get("seed", 0)))
    with torch.random.fork_rng(devices=[]):
        return assemble(make(encoding_entry(enc_cfg["name"]).schema, enc_cfg),
                        make(network_entry(model_cfg.get("name", "mlp")).schema, model_cfg), spec)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="ffrun-export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="an ffrun run directory (holding checkpoint.pt)")
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/export)")
    args = p.parse_args(argv)
    try:
        out = export(args.run_dir, args.out)
    except FfrunError as e:
        print(f"ffrun-export: error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # --out names a file, or a folder it may not write to
        print(f"ffrun-export: error: cannot write {e.filename or args.out}: {e.strerror or e}; "
              "give --out a folder you can write to", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {out / 'field.safetensors'} and {out / 'field.json'}")


if __name__ == "__main__":
    main()
