"""Draw ffrun's layers from the code's own imports: docs/architecture.png.

    python scripts/architecture_diagram.py [--out docs/architecture.png]

One box per layer folder (bottom: util, top: apps), each listing its modules with their line counts; an arrow
for every pair of layers where one imports the other, labelled with the number of import statements. The
layer order is the one tests/test_architecture.py enforces, so an arrow pointing down is the only kind drawn
in a healthy tree (an upward one is drawn red).
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ffrun"
sys.path.insert(0, str(ROOT / "tests"))

from test_architecture import LAYERS, imports, layer_of, modules  # noqa: E402


def layer_contents() -> dict[str, list[tuple[str, int]]]:
    found = collections.defaultdict(list)
    for module, path in modules().items():
        layer = layer_of(module)
        if layer is not None:
            lines = len(path.read_text(encoding="utf-8").splitlines())
            found[layer].append((module.split(".", 2)[-1] if module.count(".") > 1 else "__init__", lines))
    return found


def layer_edges() -> collections.Counter:
    edges = collections.Counter()
    for module, path in modules().items():
        here = layer_of(module)
        for target, _, _ in imports(path):
            there = layer_of(target)
            if here and there and here != there:
                edges[(here, there)] += 1
    return edges


def draw(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    contents, edges = layer_contents(), layer_edges()
    ranks = sorted(set(LAYERS.values()))
    rows = {r: sorted((n for n, v in LAYERS.items() if v == r), key=lambda n: -sum(c for _, c in contents[n]))
            for r in ranks}
    fig, ax = plt.subplots(figsize=(13, 1.45 * len(ranks) + 0.8))
    boxes = {}
    for r in ranks:
        names = rows[r]
        width = 0.9 / len(names)
        for i, name in enumerate(names):
            x, y = 0.05 + i * width + 0.01, r * 1.0
            mods = sorted(contents[name], key=lambda m: -m[1])
            total = sum(c for _, c in mods)
            label = f"{name}/  ({total} lines)" if name != "config" else f"config.py  ({total} lines)"
            listing = ", ".join(f"{m} {c}" for m, c in mods if m != "__init__")
            ax.add_patch(FancyBboxPatch((x, y), width - 0.02, 0.62, boxstyle="round,pad=0.01",
                                        fc="#dbe8f6", ec="#2c5d94", lw=1.2))
            ax.text(x + 0.01, y + 0.5, label, fontsize=9, weight="bold", va="center")
            wrapped, line = [], ""
            for part in listing.split(", "):
                limit = int(150 * (width - 0.02))
                if len(line) + len(part) > limit and line:
                    wrapped.append(line.rstrip(", "))
                    line = ""
                line += part + ", "
            wrapped.append(line.rstrip(", "))
            ax.text(x + 0.01, y + 0.33, "\n".join(wrapped[:3]), fontsize=6.5, va="top", color="#333")
            boxes[name] = (x + (width - 0.02) / 2, y)
    for (a, b), n in sorted(edges.items()):
        (xa, ya), (xb, yb) = boxes[a], boxes[b]
        up = LAYERS[b] > LAYERS[a]
        ax.annotate("", xy=(xb, yb + 0.62), xytext=(xa, ya), arrowprops=dict(
            arrowstyle="->", color="red" if up else "#999", lw=0.6 + 0.15 * min(n, 10), alpha=0.7))
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.2, max(ranks) + 0.8)
    ax.axis("off")
    ax.set_title("ffrun's layers: each imports only the layers below it (arrow width: import statements; "
                 "red: upward)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}; {sum(edges.values())} cross-layer imports, "
          f"{sum(n for (a, b), n in edges.items() if LAYERS[b] > LAYERS[a])} upward")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "architecture.png")
    draw(ap.parse_args(argv).out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
