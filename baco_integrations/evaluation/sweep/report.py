"""A sweep's report: the metric tables, coverage / dominance, and one plot per chosen plane.

:func:`compare_methods` turns the metric rows into coverage / dominance per plane and per group;
the ``*_text`` functions render the files' contents; :func:`write_report` writes them all into
the output directory, each through :func:`~.files.write_bytes_atomic` (never through a link).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..pareto import aggregate_planes, coverage_dominance
from ..registry import PLANE_GROUPS, plane_groups
from .config import MetricsConfig
from .files import write_bytes_atomic, write_text_atomic

__all__ = [
    "COVERAGE_FILE",
    "COVERAGE_JSON_FILE",
    "METRICS_FILE",
    "METRICS_JSON_FILE",
    "compare_methods",
    "coverage_json_text",
    "coverage_markdown",
    "metrics_csv_text",
    "metrics_json_text",
    "plane_name",
    "plot_file_name",
    "write_report",
]

METRICS_FILE = "metrics.csv"
METRICS_JSON_FILE = "metrics.json"
COVERAGE_FILE = "coverage_dominance.md"
COVERAGE_JSON_FILE = "coverage_dominance.json"

#: ``{plane or group: {method: (coverage, dominance)}}``
Scores = dict[str, dict[str, tuple[float, float]]]


def plane_name(diversity: str, quality: str) -> str:
    return f"{diversity}/{quality}"


def plot_file_name(diversity: str, quality: str) -> str:
    return f"plot_{diversity}__{quality}.png"


def compare_methods(
    rows: Sequence[Mapping[str, Any]], metrics: MetricsConfig, methods: Sequence[str]
) -> tuple[Scores, Scores, dict[str, list[str]]]:
    """Coverage / dominance per plane and per group from the metric rows.

    A point with a non-finite value on a plane (e.g. every response empty, so no log-prob)
    is left out of that plane and reported, rather than failing the whole comparison.
    """
    planes: Scores = {}
    dropped: dict[str, list[str]] = {}
    plane_metric: dict[str, str] = {}
    for diversity, quality in metrics.planes():
        name = plane_name(diversity, quality)
        plane_metric[name] = diversity
        points: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
        dropped[name] = []
        for row in rows:
            x, y = row[diversity], row[quality]
            if math.isfinite(x) and math.isfinite(y):
                points[row["method"]].append((float(x), float(y)))
            else:
                dropped[name].append(f"{row['method']} {row['point']}")
        planes[name] = coverage_dominance(points)
    groups = aggregate_planes(planes, plane_groups(plane_metric))
    return planes, groups, dropped


# --------------------------------------------------------------------------- file contents


def _json_value(value: Any) -> Any:
    """NaN is not JSON: write null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def metrics_csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """``metrics.csv``: one row per operating point, NaN as an empty cell."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if _json_value(v) is None else v for k, v in row.items()})
    return buffer.getvalue()


def metrics_json_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """``metrics.json``: the same rows, NaN as null."""
    return json.dumps([{k: _json_value(v) for k, v in r.items()} for r in rows], indent=2) + "\n"


def coverage_markdown(
    groups: Mapping[str, Mapping[str, tuple[float, float]]],
    planes: Mapping[str, Mapping[str, tuple[float, float]]],
    methods: Sequence[str],
    dropped: Mapping[str, list[str]],
) -> str:
    """``coverage_dominance.md``: per group, per plane, and the points left out."""
    lines = [
        "# Coverage / Dominance",
        "",
        "Coverage: area dominated by a method's operating points on min-max normalised axes "
        "(hypervolume, reference point at the origin). Dominance: the method's share of the "
        "pooled Pareto frontier. Both in [0, 1], higher is better; averaged over the planes of "
        "each group (docs/algorithm.md, Evaluation protocol).",
        "",
    ]
    names = [g for g in PLANE_GROUPS if g in groups]
    header = "| method | " + " | ".join(f"{g} coverage | {g} dominance" for g in names) + " |"
    lines += [header, "|---|" + "---:|---:|" * len(names)]
    for method in methods:
        cells = [f"{groups[g][method][0]:.3f} | {groups[g][method][1]:.3f}" for g in names]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "## Per plane (coverage / dominance)", ""]
    lines += ["| plane | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for plane, result in planes.items():
        cells = [f"{result[m][0]:.3f} / {result[m][1]:.3f}" for m in methods]
        lines.append(f"| {plane} | " + " | ".join(cells) + " |")
    if any(dropped.values()):
        lines += ["", "Points left out (no finite value on the plane):", ""]
        for plane, labels in dropped.items():
            if labels:
                lines.append(f"- {plane}: {', '.join(labels)}")
    return "\n".join(lines) + "\n"


def coverage_json_text(groups: Scores, planes: Scores, dropped: Mapping[str, list[str]]) -> str:
    """``coverage_dominance.json``: the markdown's numbers, as named fields."""

    def as_dict(result: Mapping[str, tuple[float, float]]) -> dict[str, dict[str, float]]:
        return {m: {"coverage": c, "dominance": d} for m, (c, d) in result.items()}

    data = {
        "groups": {g: as_dict(r) for g, r in groups.items()},
        "planes": {p: as_dict(r) for p, r in planes.items()},
        "dropped_points": dict(dropped),
    }
    return json.dumps(data, indent=2) + "\n"


# --------------------------------------------------------------------------- writing


def _draw_plots(
    rows: Sequence[Mapping[str, Any]],
    metrics: MetricsConfig,
    planes: Scores,
    methods: Sequence[str],
    out: Path,
) -> dict[str, Path]:
    """One PNG per chosen plane, rendered in memory and written like every other file."""
    from ..plotting import plane_png

    files: dict[str, Path] = {}
    for diversity, quality in metrics.planes_to_plot():
        name = plane_name(diversity, quality)
        png = plane_png(rows, diversity, quality, planes[name], methods=methods)
        files[f"plot:{name}"] = write_bytes_atomic(out / plot_file_name(diversity, quality), png)
    return files


def write_report(
    rows: Sequence[Mapping[str, Any]], metrics: MetricsConfig, methods: Sequence[str], out: Path
) -> tuple[Scores, Scores, dict[str, Path]]:
    """Compare the methods and write every report file into ``out``.

    Returns the per-plane and per-group scores and ``{role: path}`` of the files written.
    """
    planes, groups, dropped = compare_methods(rows, metrics, methods)
    files = {
        "metrics_csv": write_text_atomic(out / METRICS_FILE, metrics_csv_text(rows)),
        "metrics_json": write_text_atomic(out / METRICS_JSON_FILE, metrics_json_text(rows)),
        "coverage_md": write_text_atomic(
            out / COVERAGE_FILE, coverage_markdown(groups, planes, methods, dropped)
        ),
        "coverage_json": write_text_atomic(
            out / COVERAGE_JSON_FILE, coverage_json_text(groups, planes, dropped)
        ),
    }
    files.update(_draw_plots(rows, metrics, planes, methods, out))
    return planes, groups, files
