"""PNG plots of a run with matplotlib's Agg backend (no display needed).

- hot_sku.png: orders/s against clients, beside pgbench's tps.
- order_latency.png: latency CDFs of orders (spread and hot SKU, with the naive
  endpoint's).
- propagation_latency.png: commit-to-client latency CDF, overall and per node.
"""

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def draw(results: dict[str, Any], folder: Path) -> list[Path]:
    made = []
    if "hot" in results:
        made.append(_hot(results["hot"], folder / "hot_sku.png"))
    if "hot" in results or "spread" in results:
        made.append(_orders(results, folder / "order_latency.png"))
    if "propagation" in results:
        made.append(_propagation(results["propagation"], folder / "propagation_latency.png"))
    return made


def _hot(hot: dict[str, Any], path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(6, 4))
    clients = [level["clients"] for level in hot["levels"]]
    axes.plot(clients, [level["rate"] for level in hot["levels"]], "o-", label="OrderFlow")
    tps = hot["anchor"]["tps"]
    axes.axhline(tps, color="grey", linestyle="--", label=f"pgbench place_order ({tps:,.0f} tps)")
    axes.set_xscale("log", base=2)
    axes.set_xticks(clients, [str(c) for c in clients])
    axes.set_xlabel(f"clients over {hot['nodes']} nodes")
    axes.set_ylabel("orders/s")
    axes.set_ylim(bottom=0)
    axes.set_title("One hot SKU")
    axes.legend()
    return _save(figure, path)


def _cdf(axes: Any, quantiles: list[list[float]], label: str, style: str = "-") -> None:
    if quantiles:
        axes.plot([v * 1000 for _, v in quantiles], [p for p, _ in quantiles], style, label=label)


def _orders(results: dict[str, Any], path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    if (spread := results.get("spread")) is not None:
        _cdf(axes, spread["orderflow"]["quantiles"], "spread, one node")
        _cdf(axes, spread["anchor"]["quantiles"], "spread, naive endpoint", "--")
    for level in results.get("hot", {}).get("levels", []):
        _cdf(axes, level["quantiles"], f"hot SKU, {level['clients']} clients")
    axes.set_xscale("log")
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("percent of orders at or below")
    axes.set_title("Order latency")
    axes.legend(fontsize="small")
    return _save(figure, path)


def _propagation(propagation: dict[str, Any], path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    _cdf(axes, propagation["quantiles"], "every client", "k-")
    for name, figures in propagation["by_node"].items():
        _cdf(axes, figures["quantiles"], f"clients of {name}", "--")
    axes.set_xscale("log")
    axes.set_xlabel("commit to client (ms)")
    axes.set_ylabel("percent of receipts at or below")
    rate = propagation["writer"]["achieved_rate"]
    axes.set_title(f"Propagation at {rate:,.0f} changes/s")
    axes.legend(fontsize="small")
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
