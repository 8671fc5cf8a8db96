"""Trade-off figures as PNG files: GELO bars, specialisation gain vs generalisation loss, per-dataset deltas.

matplotlib is imported only when a figure is drawn, through its object API with the Agg canvas (no pyplot state,
no display needed).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from overspec.files import atomic_write_bytes

logger = logging.getLogger(__name__)

__all__ = ["GainPoint", "GeloBar", "delta_heatmap", "gain_vs_loss", "gelo_bars", "matplotlib_available"]

_SPEC_COLOURS = {"fr": "#c0392b", "mad": "#2471a3", "pad": "#229954", "": "#7f8c8d"}


@dataclass(frozen=True)
class GeloBar:
    """One bar: a fine-tune's GELO under one protocol, with its interval when known."""

    model: str
    protocol: str
    specialisation: str
    gelo: float
    interval: tuple[float, float] | None = None


@dataclass(frozen=True)
class GainPoint:
    """One fine-tune: gain on its own task (percentage points, higher = better) and general loss (% of base)."""

    model: str
    specialisation: str
    gain_pp: float
    loss_pct: float
    protocol: str


def matplotlib_available() -> bool:
    """True when matplotlib can be imported (figures are skipped otherwise)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def gelo_bars(bars: Sequence[GeloBar], path: Path) -> Path:
    """Draw GELO per fine-tune, grouped by protocol, with interval whiskers and the no-loss line at 1."""
    protocols = list(dict.fromkeys(b.protocol for b in bars))
    models = list(dict.fromkeys(b.model for b in bars))
    figure = _figure(max(5.0, 1.0 + 0.6 * len(bars)), 3.6)
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(protocols))
    for k, protocol in enumerate(protocols):
        chosen = [b for b in bars if b.protocol == protocol]
        x = np.array([models.index(b.model) for b in chosen]) + (k - (len(protocols) - 1) / 2) * width
        heights = np.array([b.gelo for b in chosen])
        errors = np.array([[b.gelo - b.interval[0], b.interval[1] - b.gelo] if b.interval else [0.0, 0.0]
                           for b in chosen]).T
        axes.bar(x, heights, width, yerr=errors, capsize=3, label=protocol.replace("_", " "),
                 color=[_SPEC_COLOURS.get(b.specialisation, "#7f8c8d") for b in chosen], alpha=0.55 + 0.4 * k / max(
                     1, len(protocols)), edgecolor="black", linewidth=0.5)
    axes.axhline(1.0, color="black", linestyle="--", linewidth=1)
    axes.set_xticks(range(len(models)), models, rotation=20, ha="right")
    low = min([b.interval[0] if b.interval else b.gelo for b in bars] + [1.0])
    axes.set_ylim(max(0.0, low - 0.05), max(1.05, max(b.gelo for b in bars) + 0.05))
    axes.set_ylabel("GELO (fine-tuned avg ÷ base avg)")
    axes.set_title("Generalisation kept by each fine-tune (95% bootstrap interval)")
    axes.legend(fontsize=8)
    return _save(figure, path)


def gain_vs_loss(points: Sequence[GainPoint], path: Path) -> Path:
    """Scatter each fine-tune's gain on its own task (x) against its general-vision loss (y)."""
    figure = _figure(5.5, 4.0)
    axes = figure.add_subplot()
    markers = {"zero_shot": "o", "linear_probe": "s"}
    labelled: set[str] = set()
    legend: set[str] = set()
    for point in points:
        first = point.protocol not in legend
        legend.add(point.protocol)
        axes.scatter(point.gain_pp, point.loss_pct, s=50, marker=markers.get(point.protocol, "^"),
                     color=_SPEC_COLOURS.get(point.specialisation, "#7f8c8d"), edgecolor="black", linewidth=0.5,
                     label=point.protocol.replace("_", " ") if first else None)
        if point.model not in labelled:
            axes.annotate(point.model, (point.gain_pp, point.loss_pct), fontsize=7, xytext=(4, 4),
                          textcoords="offset points")
            labelled.add(point.model)
    axes.axhline(0, color="grey", linewidth=0.8)
    axes.axvline(0, color="grey", linewidth=0.8)
    axes.set_xlabel("specialisation gain on own task (pp vs base)")
    axes.set_ylabel("generalisation loss (1 − GELO, %)")
    axes.set_title("What the specialisation bought and what it cost")
    axes.legend(fontsize=8, title="protocol (colour = specialisation)", title_fontsize=7)
    return _save(figure, path)


def delta_heatmap(models: Sequence[str], datasets: Sequence[str], deltas_pp: np.ndarray, path: Path,
                  title: str) -> Path:
    """Heatmap of variant − base accuracy (pp), models × datasets, diverging colours centred on 0."""
    deltas = np.asarray(deltas_pp, dtype=float)
    figure = _figure(max(5.0, 1.5 + 0.55 * len(datasets)), max(2.2, 1.2 + 0.45 * len(models)))
    axes = figure.add_subplot()
    limit = float(np.nanmax(np.abs(deltas))) if deltas.size and np.isfinite(deltas).any() else 1.0
    image = axes.imshow(deltas, cmap="RdBu", vmin=-max(limit, 1e-9), vmax=max(limit, 1e-9), aspect="auto")
    axes.set_xticks(range(len(datasets)), datasets, rotation=40, ha="right", fontsize=8)
    axes.set_yticks(range(len(models)), models, fontsize=8)
    for (i, j), value in np.ndenumerate(deltas):
        if np.isfinite(value):
            axes.text(j, i, f"{value:+.1f}", ha="center", va="center", fontsize=7)
    figure.colorbar(image, ax=axes, label="Δ accuracy (pp)")
    axes.set_title(title)
    return _save(figure, path)


def frontier(series: Mapping[str, Sequence[tuple[float, float | None, Mapping[str, float], bool]]],
             protocols: Sequence[str], path: Path,
             regularised: Mapping[str, Sequence[tuple[str, float | None, Mapping[str, float]]]] | None = None) -> Path:
    """Draw each fine-tune's λ path: own-task gain (y) against GELO (x), one panel per general protocol.

    ``series`` maps a fine-tune to its points ``(λ, gain pp, {protocol: GELO}, on the frontier)``; frontier points
    are filled, the others hollow, and the path's ends are labelled with their λ. ``regularised`` maps a fine-tune
    to points ``(label, gain pp, {protocol: GELO})`` drawn as labelled diamonds in its line's colour.
    """
    shown = [p for p in protocols if any(p in point[2] for points in series.values() for point in points)]
    figure = _figure(4.2 * max(len(shown), 1), 3.8)
    for index, protocol in enumerate(shown, 1):
        axes = figure.add_subplot(1, len(shown), index)
        for variant, points in series.items():
            drawn = [(lam, gain, gelo[protocol], pareto) for lam, gain, gelo, pareto in points
                     if gain is not None and protocol in gelo]
            if not drawn:
                continue
            line = axes.plot([d[2] for d in drawn], [d[1] for d in drawn], linewidth=1, label=variant)[0]
            for lam, gain, x, pareto in drawn:
                axes.scatter(x, gain, s=28, color=line.get_color() if pareto else "white",
                             edgecolor=line.get_color(), linewidth=1, zorder=3)
            for lam, gain, x, _ in (drawn[0], drawn[-1]):
                axes.annotate(f"λ={lam:g}", (x, gain), fontsize=6, xytext=(3, 3), textcoords="offset points")
            for label, gain, gelo in (regularised or {}).get(variant, ()):
                if gain is not None and protocol in gelo:
                    axes.scatter(gelo[protocol], gain, s=36, marker="D", color=line.get_color(), edgecolor="black",
                                 linewidth=0.6, zorder=4)
                    axes.annotate(label, (gelo[protocol], gain), fontsize=5, xytext=(3, -7), textcoords="offset points")
        axes.axhline(0, color="grey", linewidth=0.8)
        axes.axvline(1, color="grey", linewidth=0.8, linestyle=":")
        axes.set_xlabel(f"GELO, {protocol.replace('_', ' ')}")
        axes.set_ylabel("own-task gain over the base (pp)")
        axes.legend(fontsize=6)
    figure.suptitle("Moving along the trade-off (filled: Pareto frontier; diamonds: regularised fine-tunes)",
                    fontsize=9)
    return _save(figure, path)


def cka_profile(variant: str, profiles: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Draw linear CKA (fine-tune vs base) against the visual block index, one line per dataset."""
    figure = _figure(5.0, 3.4)
    axes = figure.add_subplot()
    for dataset, values in profiles.items():
        axes.plot(range(len(values)), values, marker="o", markersize=3, linewidth=1, label=dataset)
    axes.set_ylim(min(0.0, *(min(v) for v in profiles.values())), 1.02)
    axes.set_xlabel("visual block (0 = nearest the patches)")
    axes.set_ylabel("linear CKA with the base")
    axes.set_title(f"Where {variant} moved", fontsize=9)
    axes.legend(fontsize=6)
    return _save(figure, path)
