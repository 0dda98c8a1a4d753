"""Coverage and dominance of methods' operating points in one (diversity, quality) plane.

docs/algorithm.md, Evaluation protocol: each method contributes a set of operating points
``(x, y)`` = (diversity, quality), both oriented so that HIGHER IS BETTER (negate a
lower-is-better score first). Within a plane:

* both axes are min-max normalised to [0, 1] over ALL points of ALL methods,
  ``x' = (x - min) / (max - min)``; a degenerate axis (``max == min``, every point equal on it)
  maps to ``1.0`` everywhere: no point is worse than another on it, so it neither helps nor
  hurts, and coverage reduces to the best value on the other axis;
* **coverage** of a method = area of the union of the rectangles ``[0, x'] x [0, y']`` over its
  points (2-D hypervolume, reference point at the origin), in [0, 1];
* **dominance** of a method = its share of the points on the pooled Pareto frontier. A point is
  on the frontier when no point of any method is ``>=`` on both axes and ``>`` on one.
  Points are counted per method after removing a method's own duplicates: two methods with
  the same point each get one frontier point (both are credited; identical points do not
  dominate each other), a method repeating a point gets it once. Shares sum to 1 over methods.

A method with no points gets ``(0.0, 0.0)``; non-finite coordinates raise ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Point = tuple[float, float]


def _as_array(points: Sequence[Point], method: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64).reshape(-1, 2) if len(points) else np.zeros((0, 2))
    if arr.shape[0] != len(points):
        raise ValueError(f"method {method!r}: points must be (x, y) pairs")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"method {method!r}: points contain NaN or inf")
    return arr


def normalise_points(points: Mapping[str, Sequence[Point]]) -> dict[str, np.ndarray]:
    """Min-max normalise both axes over the pooled points (degenerate axis -> 1.0)."""
    arrays = {m: _as_array(p, m) for m, p in points.items()}
    pooled = np.concatenate([*arrays.values(), np.zeros((0, 2))])
    if pooled.shape[0] == 0:
        return arrays
    lo, hi = pooled.min(axis=0), pooled.max(axis=0)
    span = hi - lo
    out: dict[str, np.ndarray] = {}
    for method, arr in arrays.items():
        norm = np.ones_like(arr)
        for axis in range(2):
            if span[axis] > 0:
                norm[:, axis] = (arr[:, axis] - lo[axis]) / span[axis]
        out[method] = norm
    return out


def hypervolume_2d(points: np.ndarray | Sequence[Point]) -> float:
    """Area of the union of ``[0, x] x [0, y]`` over non-negative points.

    Sweep over x from largest to smallest: a point adds the strip ``x * (y - y_best)`` above
    the highest y seen so far (points below it are covered already).
    """
    arr = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if np.any(arr < 0):
        raise ValueError("hypervolume with the origin as reference needs non-negative points")
    area, y_best = 0.0, 0.0
    for x, y in sorted(map(tuple, arr), key=lambda p: (-p[0], -p[1])):
        if y > y_best:
            area += x * (y - y_best)
            y_best = y
    return area


def pareto_mask(xy: np.ndarray) -> np.ndarray:
    """Boolean mask of rows not strictly dominated (``>=`` both, ``>`` one) by another row."""
    ge = (xy[None, :, 0] >= xy[:, None, 0]) & (xy[None, :, 1] >= xy[:, None, 1])
    gt = (xy[None, :, 0] > xy[:, None, 0]) | (xy[None, :, 1] > xy[:, None, 1])
    # dominated[i] = some row j is >= row i on both axes and > on one.
    return ~np.any(ge & gt, axis=1)


def coverage_dominance(points: Mapping[str, Sequence[Point]]) -> dict[str, tuple[float, float]]:
    """``{method: (coverage, dominance)}`` for one plane (see the module docstring)."""
    normalised = normalise_points(points)
    result: dict[str, tuple[float, float]] = {}
    owners: list[str] = []
    rows: list[np.ndarray] = []
    for method, raw in points.items():
        # The frontier is found on the raw values: normalisation is increasing on every
        # axis, so it is the same set, without rounding turning a strict > into a tie.
        unique = np.unique(_as_array(raw, method), axis=0)
        owners.extend([method] * len(unique))
        rows.append(unique)
    if owners:
        on_front = pareto_mask(np.concatenate(rows))
        n_front = int(on_front.sum())
    for method in points:
        coverage = hypervolume_2d(normalised[method])
        dominance = 0.0
        if owners:
            mine = sum(
                1
                for owner, front in zip(owners, on_front, strict=True)
                if front and owner == method
            )
            dominance = mine / n_front
        result[method] = (coverage, dominance)
    return result


def aggregate_planes(
    results_per_plane: Mapping[str, Mapping[str, tuple[float, float]]],
    groups: Mapping[str, Sequence[str]],
) -> dict[str, dict[str, tuple[float, float]]]:
    """Average coverage and dominance over the planes of each group.

    Parameters
    ----------
    results_per_plane
        ``{plane: {method: (coverage, dominance)}}``, e.g. from :func:`coverage_dominance`.
    groups
        ``{group: [plane, ...]}``, e.g. ``{"lexical": [...], "semantic": [...],
        "overall": [...]}`` (see :func:`baco_integrations.evaluation.plane_groups`).

    Returns
    -------
    ``{group: {method: (mean coverage, mean dominance)}}``, an unweighted mean over the group's
    planes. Every plane must hold the same methods; an empty group or an unknown plane raises
    ``ValueError``.
    """
    methods: set[str] | None = None
    for plane, res in results_per_plane.items():
        if methods is None:
            methods = set(res)
        elif set(res) != methods:
            raise ValueError(
                f"plane {plane!r} has methods {sorted(res)}, expected {sorted(methods)}"
            )
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for group, planes in groups.items():
        if isinstance(planes, str):
            raise TypeError(f"group {group!r}: planes must be a sequence of names, not a string")
        if not planes:
            raise ValueError(f"group {group!r} has no planes")
        missing = [p for p in planes if p not in results_per_plane]
        if missing:
            raise ValueError(f"group {group!r} names unknown planes {missing}")
        first = results_per_plane[planes[0]]
        out[group] = {
            method: (
                float(np.mean([results_per_plane[p][method][0] for p in planes])),
                float(np.mean([results_per_plane[p][method][1] for p in planes])),
            )
            for method in first
        }
    return out
