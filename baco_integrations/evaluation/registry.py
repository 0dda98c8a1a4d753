"""Metric registry: what a sweep runner iterates over, and how planes group into lexical /
semantic / overall."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from . import lexical, semantic
from .quality import LogProbScorer, RewardModelScorer, recorded_aligned_logprobs

MetricGroup = Literal["lexical", "semantic", "quality"]
#: What ``fn`` consumes: ``"responses"`` -> ``fn(responses: Sequence[str]) -> float``;
#: ``"embeddings"`` -> ``fn(embeddings: np.ndarray) -> float``; ``"pairs"`` -> ``fn`` is a
#: scorer class, ``fn(model, ...).score(prompts, responses) -> np.ndarray``.
MetricInput = Literal["responses", "embeddings", "pairs", "records"]

#: Group names reported by the protocol (docs/algorithm.md, Evaluation protocol).
PLANE_GROUPS: tuple[str, ...] = ("lexical", "semantic", "overall")


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its name, group, input kind and implementation. Higher is always better
    (more diverse, or higher quality)."""

    name: str
    group: MetricGroup
    input: MetricInput
    fn: Callable[..., Any]
    description: str


def _lex(name: str, fn: Callable[..., float], description: str) -> MetricSpec:
    return MetricSpec(name, "lexical", "responses", fn, description)


def _sem(name: str, fn: Callable[..., float], description: str) -> MetricSpec:
    return MetricSpec(name, "semantic", "embeddings", fn, description)


#: The 11 diversity metrics (6 lexical, 5 semantic), in reporting order.
DIVERSITY_METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        _lex("distinct_1", lexical.distinct_1, "unique / total unigrams (Li et al. 2016)"),
        _lex("distinct_2", lexical.distinct_2, "unique / total bigrams (Li et al. 2016)"),
        _lex("distinct_3", lexical.distinct_3, "unique / total trigrams (Li et al. 2016)"),
        _lex("self_bleu", lexical.self_bleu, "1 - mean self-BLEU-4 (Zhu et al. 2018)"),
        _lex("self_rouge_l", lexical.self_rouge_l, "1 - mean pairwise ROUGE-L F1"),
        _lex(
            "compression_ratio",
            lexical.compression_ratio,
            "gzip size / raw size of the joined responses (1 / CR of Shaib et al. 2024)",
        ),
        _sem(
            "cosine_distance",
            semantic.mean_pairwise_cosine_distance,
            "mean pairwise cosine distance (remote-clique)",
        ),
        _sem("vendi", semantic.vendi_score, "Vendi score (Friedman & Dieng 2023)"),
        _sem(
            "semantic_clusters",
            semantic.semantic_clusters,
            "complete-linkage clusters at cosine >= 0.75, per response",
        ),
        _sem(
            "nn_diversity",
            semantic.nn_diversity,
            "1 - mean nearest-neighbour cosine similarity (Chamfer)",
        ),
        _sem(
            "remote_tree",
            semantic.remote_tree,
            "mean MST edge cosine distance (remote-tree, Halldórsson et al. 1999)",
        ),
    )
}

#: The per-response quality metrics; ``fn`` is the scorer class (for ``recorded_logprob``,
#: the function reading the value each sample recorded while it was decoded).
QUALITY_METRICS: dict[str, MetricSpec] = {
    "reward": MetricSpec(
        "reward", "quality", "pairs", RewardModelScorer, "reward-model score (scalar logit)"
    ),
    "logprob": MetricSpec(
        "logprob", "quality", "pairs", LogProbScorer, "judge LM mean response-token log-prob"
    ),
    "recorded_logprob": MetricSpec(
        "recorded_logprob",
        "quality",
        "records",
        recorded_aligned_logprobs,
        "the aligned model's mean response-token log-prob, recorded while decoding "
        "(logprobs=True; no second pass)",
    ),
}


def plane_groups(plane_diversity_metric: Mapping[str, str]) -> dict[str, list[str]]:
    """``{plane: diversity metric name}`` -> ``{"lexical": [...], "semantic": [...],
    "overall": [...]}`` for :func:`~baco_integrations.evaluation.pareto.aggregate_planes`.

    A plane's group is the group of its diversity metric in :data:`DIVERSITY_METRICS`;
    "overall" holds every plane. Groups with no plane are left out.
    """
    groups: dict[str, list[str]] = {name: [] for name in PLANE_GROUPS}
    for plane, metric in plane_diversity_metric.items():
        if metric not in DIVERSITY_METRICS:
            raise ValueError(f"plane {plane!r}: unknown diversity metric {metric!r}")
        groups[DIVERSITY_METRICS[metric].group].append(plane)
        groups["overall"].append(plane)
    return {name: planes for name, planes in groups.items() if planes}
