"""Plots of a sweep: each method's curve on one (diversity, quality) plane.

One PNG per plane with two panels:

* **left, raw values**: each method's operating points joined in sweep order (γ, temperature
  or min-p, labelled next to each point), so the trade-off a knob buys is visible;
* **right, what coverage and dominance measure**: the same points on the min-max normalised
  axes used by :func:`~baco_integrations.evaluation.pareto.coverage_dominance`, each method's
  dominated region drawn as a shaded staircase (its area is the coverage) and the pooled
  Pareto frontier ringed in black (a method's share of the rings is its dominance).

Drawn with matplotlib's object API on an Agg canvas: no pyplot, no global backend change, so
it works headless and does not disturb a caller's interactive backend.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .pareto import normalise_points, pareto_mask


def _staircase(points: np.ndarray) -> np.ndarray:
    """Outline of the union of ``[0, x] x [0, y]`` over ``points`` (normalised, >= 0):
    ``(0, y1) -> (x1, y1) -> (x1, y2) -> ... -> (xk, 0)`` along the method's own front."""
    front = np.unique(points[pareto_mask(points)], axis=0)
    # On a front sorted by x ascending, y is descending.
    front = front[np.argsort(front[:, 0])]
    path = [(0.0, 0.0), (0.0, front[0, 1])]
    for i, (x, y) in enumerate(front):
        path.append((x, y))
        next_y = front[i + 1, 1] if i + 1 < len(front) else 0.0
        path.append((x, next_y))
    return np.asarray(path)


def _label(row: Mapping[str, Any]) -> str:
    value = row.get("value")
    return "" if value is None else f"{value:g}"


def _draw_raw(
    ax: Any,
    by_method: Mapping[str, Sequence[Mapping[str, Any]]],
    colors: Sequence[str],
    diversity: str,
    quality: str,
) -> None:
    """Left panel: each method's points in sweep order, labelled with their setting."""
    for (method, pts), color in zip(by_method.items(), colors, strict=True):
        if not pts:
            continue
        xs = [r[diversity] for r in pts]
        ys = [r[quality] for r in pts]
        ax.plot(xs, ys, "-o", color=color, markersize=5, linewidth=1.5, label=method)
        for r, x, y in zip(pts, xs, ys, strict=True):
            if _label(r):
                ax.annotate(
                    _label(r),
                    (x, y),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                    color=color,
                )
    ax.set_xlabel(f"{diversity}  (diversity, higher = more diverse)")
    ax.set_ylabel(f"{quality}  (quality, higher = better)")
    ax.set_title("operating points (labels: γ / temperature / min-p)", fontsize=10)
    ax.grid(alpha=0.3)
    if any(by_method.values()):
        ax.legend(fontsize=8, loc="best")


def _draw_normalised(
    ax: Any,
    normalised: Mapping[str, np.ndarray],
    colors: Sequence[str],
    result: Mapping[str, tuple[float, float]],
    diversity: str,
    quality: str,
) -> None:
    """Right panel: normalised points, each method's dominated staircase, the pooled front."""
    pooled = np.concatenate([*normalised.values(), np.zeros((0, 2))])
    front = pooled[pareto_mask(pooled)] if len(pooled) else pooled
    for (method, pts), color in zip(normalised.items(), colors, strict=True):
        coverage, dominance = result.get(method, (0.0, 0.0))
        label = f"{method}: coverage {coverage:.2f}, dominance {dominance:.2f}"
        if len(pts) == 0:
            ax.plot([], [], color=color, label=label)
            continue
        stairs = _staircase(pts)
        ax.fill(stairs[:, 0], stairs[:, 1], color=color, alpha=0.12, linewidth=0)
        ax.plot(stairs[1:, 0], stairs[1:, 1], color=color, linewidth=1.5, label=label)
        ax.plot(pts[:, 0], pts[:, 1], "o", color=color, markersize=5)
    if len(front):
        ax.plot(
            front[:, 0],
            front[:, 1],
            "o",
            markersize=11,
            markerfacecolor="none",
            markeredgecolor="black",
            markeredgewidth=1.2,
            label="pooled Pareto frontier",
        )
    ax.set_xlim(-0.03, 1.05)
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel(f"{diversity} (normalised)")
    ax.set_ylabel(f"{quality} (normalised)")
    ax.set_title("coverage = shaded area, dominance = share of ringed points", fontsize=10)
    ax.grid(alpha=0.3)
    # Outside the axes: every method's shading starts at the origin, so inside it would
    # always hide something.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)


def _figure(
    rows: Sequence[Mapping[str, Any]],
    diversity: str,
    quality: str,
    result: Mapping[str, tuple[float, float]],
    methods: Sequence[str] | None,
    dpi: int,
) -> Any:
    """The two-panel figure of one plane, on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if methods is None:
        methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    finite = [r for r in rows if math.isfinite(r[diversity]) and math.isfinite(r[quality])]
    by_method = {m: [r for r in finite if r["method"] == m] for m in methods}

    fig = Figure(figsize=(13, 4.6), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    raw_ax, norm_ax = fig.subplots(1, 2)
    colors = [f"C{i % 10}" for i in range(len(methods))]
    _draw_raw(raw_ax, by_method, colors, diversity, quality)
    normalised = normalise_points(
        {m: [(r[diversity], r[quality]) for r in by_method[m]] for m in methods}
    )
    _draw_normalised(norm_ax, normalised, colors, result, diversity, quality)
    fig.suptitle(f"{diversity} vs {quality}", fontsize=12)
    return fig


def plane_png(
    rows: Sequence[Mapping[str, Any]],
    diversity: str,
    quality: str,
    result: Mapping[str, tuple[float, float]],
    *,
    methods: Sequence[str] | None = None,
    dpi: int = 100,
) -> bytes:
    """The PNG of :func:`plot_plane`, in memory: the caller decides how to write it."""
    buffer = io.BytesIO()
    _figure(rows, diversity, quality, result, methods, dpi).savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def plot_plane(
    rows: Sequence[Mapping[str, Any]],
    diversity: str,
    quality: str,
    result: Mapping[str, tuple[float, float]],
    path: str | Path,
    *,
    methods: Sequence[str] | None = None,
    dpi: int = 100,
) -> Path:
    """Draw one plane and save it as a PNG at ``path``.

    ``rows`` are the sweep's metric rows (one per operating point, with ``method``, ``value``,
    ``parameter`` and the two metric columns), ``result`` the plane's ``{method: (coverage,
    dominance)}``. Points with a non-finite value are left out, as in the coverage numbers.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _figure(rows, diversity, quality, result, methods, dpi).savefig(path, dpi=dpi)
    return path
