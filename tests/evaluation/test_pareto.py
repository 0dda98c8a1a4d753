"""Coverage / dominance against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from baco_integrations.evaluation import (
    aggregate_planes,
    coverage_dominance,
    hypervolume_2d,
    normalise_points,
    pareto_mask,
    plane_groups,
)


def approx_result(expected: dict[str, tuple[float, float]]) -> dict:
    return {m: pytest.approx(v) for m, v in expected.items()}


def test_staircase_area_and_normalisation() -> None:
    # Normalised A = (0.25, 1), (0.5, 0.75), (1, 0.25); B = (0, 0) anchors the minimum.
    # Raw values are an affine increasing map x = 10 + 4 x', y = -2 + 2 y', which the
    # min-max normalisation must undo.
    def raw(x: float, y: float) -> tuple[float, float]:
        return (10 + 4 * x, -2 + 2 * y)

    points = {
        "A": [raw(0.25, 1.0), raw(0.5, 0.75), raw(1.0, 0.25)],
        "B": [raw(0.0, 0.0)],
    }
    # Union of rectangles, by inclusion-exclusion:
    #   areas 0.25*1 + 0.5*0.75 + 1*0.25 = 0.875
    #   pairwise overlaps: [0,.25]x[0,.75] = .1875, [0,.25]x[0,.25] = .0625,
    #                      [0,.5]x[0,.25] = .125 -> .375
    #   triple overlap [0,.25]x[0,.25] = .0625
    #   -> 0.875 - 0.375 + 0.0625 = 0.5625
    # Frontier: A's three points (a staircase, none dominated); B's origin is dominated.
    assert coverage_dominance(points) == approx_result({"A": (0.5625, 1.0), "B": (0.0, 0.0)})
    norm = normalise_points(points)
    np.testing.assert_allclose(norm["A"], [[0.25, 1.0], [0.5, 0.75], [1.0, 0.25]])


def test_hypervolume_2d_direct() -> None:
    assert hypervolume_2d([]) == 0.0
    # [0,1]x[0,.5] U [0,.5]x[0,1] = .5 + .5 - .25
    assert hypervolume_2d([(1.0, 0.5), (0.5, 1.0)]) == pytest.approx(0.75)
    # a dominated point adds nothing; a tie in x keeps the taller rectangle
    assert hypervolume_2d([(1.0, 0.5), (0.5, 0.25), (1.0, 0.75)]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        hypervolume_2d([(-0.1, 1.0)])


def test_one_method_dominates_everything() -> None:
    points = {"A": [(1.0, 1.0)], "B": [(0.5, 0.2), (0.2, 0.9), (0.0, 0.0)]}
    # axes already span [0, 1]. B: sweep x desc: (.5,.2) -> .5*.2 = .1; (.2,.9) -> .2*.7 = .14
    assert coverage_dominance(points) == approx_result({"A": (1.0, 1.0), "B": (0.24, 0.0)})


def test_identical_points_across_methods_share_credit() -> None:
    # A and B both sit at the top corner; identical points do not dominate each other,
    # so the frontier holds both -> 1/2 each. C at the origin is dominated.
    points = {"A": [(1.0, 1.0)], "B": [(1.0, 1.0)], "C": [(0.0, 0.0)]}
    expected = {"A": (1.0, 0.5), "B": (1.0, 0.5), "C": (0.0, 0.0)}
    assert coverage_dominance(points) == approx_result(expected)
    # A method repeating its own point still has one frontier point.
    points["A"] = [(1.0, 1.0), (1.0, 1.0), (1.0, 1.0)]
    assert coverage_dominance(points) == approx_result(expected)


def test_ties_on_one_axis() -> None:
    # B is >= A on both axes and > on y: A is dominated despite the tie in x.
    points = {"A": [(1.0, 0.5)], "B": [(1.0, 1.0)], "C": [(0.0, 0.0)]}
    expected = {"A": (0.5, 0.0), "B": (1.0, 1.0), "C": (0.0, 0.0)}
    assert coverage_dominance(points) == approx_result(expected)


def test_frontier_shares_and_coverage_differ() -> None:
    # A owns the two extreme corners (zero-area rectangles), B a middle point, C is
    # dominated by B. Frontier = {(1,0), (0,1), (.5,.5)} -> A 2/3, B 1/3.
    points = {"A": [(1.0, 0.0), (0.0, 1.0)], "B": [(0.5, 0.5)], "C": [(0.4, 0.4)]}
    expected = {"A": (0.0, 2 / 3), "B": (0.25, 1 / 3), "C": (0.16, 0.0)}
    assert coverage_dominance(points) == approx_result(expected)


def test_single_method() -> None:
    # One point: both axes degenerate -> normalised to (1, 1).
    assert coverage_dominance({"A": [(2.0, 3.0)]}) == approx_result({"A": (1.0, 1.0)})
    # (0,0) and (1,1): the corner covers the unit square and is the only frontier point.
    assert coverage_dominance({"A": [(0.0, 0.0), (1.0, 1.0)]}) == approx_result({"A": (1.0, 1.0)})


def test_degenerate_axis_maps_to_one() -> None:
    # x is 1 for every point -> 1.0; y: 5 -> 0, 6 -> .5, 7 -> 1.
    points = {"A": [(1.0, 5.0), (1.0, 7.0)], "B": [(1.0, 6.0)]}
    norm = normalise_points(points)
    np.testing.assert_allclose(norm["A"], [[1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(norm["B"], [[1.0, 0.5]])
    # Only (1, 7) is on the frontier.
    assert coverage_dominance(points) == approx_result({"A": (1.0, 1.0), "B": (0.5, 0.0)})


def test_methods_without_points() -> None:
    assert coverage_dominance({"A": [], "B": [(0.0, 0.0), (1.0, 1.0)]}) == approx_result(
        {"A": (0.0, 0.0), "B": (1.0, 1.0)}
    )
    assert coverage_dominance({"A": [], "B": []}) == {"A": (0.0, 0.0), "B": (0.0, 0.0)}


def test_non_finite_rejected() -> None:
    with pytest.raises(ValueError):
        coverage_dominance({"A": [(math.nan, 1.0)]})
    with pytest.raises(ValueError):
        coverage_dominance({"A": [(1.0, 2.0, 3.0)]})


def test_pareto_mask() -> None:
    xy = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.4, 0.4], [0.5, 0.5]])
    assert pareto_mask(xy).tolist() == [True, True, True, False, True]


RESULTS = {
    "p1": {"A": (1.0, 0.5), "B": (0.0, 0.5)},
    "p2": {"A": (0.5, 1.0), "B": (0.25, 0.0)},
    "p3": {"A": (0.0, 0.0), "B": (1.0, 1.0)},
}


def test_aggregate_planes() -> None:
    groups = {"lexical": ["p1", "p2"], "semantic": ["p3"], "overall": ["p1", "p2", "p3"]}
    out = aggregate_planes(RESULTS, groups)
    # lexical A: cov (1 + .5)/2, dom (.5 + 1)/2; B: (0 + .25)/2, (.5 + 0)/2
    assert out["lexical"] == approx_result({"A": (0.75, 0.75), "B": (0.125, 0.25)})
    assert out["semantic"] == approx_result({"A": (0.0, 0.0), "B": (1.0, 1.0)})
    # overall A: (1.5/3, 1.5/3); B: (1.25/3, 1.5/3)
    assert out["overall"] == approx_result({"A": (0.5, 0.5), "B": (1.25 / 3, 0.5)})


def test_aggregate_planes_errors() -> None:
    with pytest.raises(ValueError):
        aggregate_planes(RESULTS, {"lexical": []})
    with pytest.raises(ValueError):
        aggregate_planes(RESULTS, {"lexical": ["p9"]})
    with pytest.raises(ValueError):
        aggregate_planes({**RESULTS, "p4": {"A": (0.0, 0.0)}}, {"overall": ["p1"]})
    with pytest.raises(TypeError):
        aggregate_planes(RESULTS, {"lexical": "p1"})


def test_plane_groups_from_registry() -> None:
    groups = plane_groups(
        {"d1|reward": "distinct_1", "vendi|reward": "vendi", "bleu|logprob": "self_bleu"}
    )
    assert groups == {
        "lexical": ["d1|reward", "bleu|logprob"],
        "semantic": ["vendi|reward"],
        "overall": ["d1|reward", "vendi|reward", "bleu|logprob"],
    }
    assert plane_groups({"p": "vendi"}) == {"semantic": ["p"], "overall": ["p"]}
    with pytest.raises(ValueError):
        plane_groups({"p": "perplexity"})
