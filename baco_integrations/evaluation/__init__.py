"""Evaluation protocol metrics (docs/algorithm.md, Evaluation protocol).

Diversity over the n responses to one prompt (:mod:`.lexical`, :mod:`.semantic`), quality per
response (:mod:`.quality`), and coverage / dominance of methods' operating points per
(diversity, quality) plane (:mod:`.pareto`). :data:`DIVERSITY_METRICS` and
:data:`QUALITY_METRICS` list them for a sweep runner.
"""

from .lexical import (
    compression_ratio,
    distinct_1,
    distinct_2,
    distinct_3,
    distinct_n,
    lexical_diversity,
    self_bleu,
    self_rouge_l,
    tokenize,
)
from .pareto import (
    aggregate_planes,
    coverage_dominance,
    hypervolume_2d,
    normalise_points,
    pareto_mask,
)
from .quality import LogProbScorer, RewardModelScorer
from .registry import (
    DIVERSITY_METRICS,
    PLANE_GROUPS,
    QUALITY_METRICS,
    MetricSpec,
    plane_groups,
)
from .semantic import (
    DEFAULT_CLUSTER_THRESHOLD,
    Embedder,
    SentenceTransformerEmbedder,
    cosine_similarity_matrix,
    default_minilm_path,
    mean_pairwise_cosine_distance,
    nn_diversity,
    remote_tree,
    semantic_clusters,
    semantic_diversity,
    vendi_score,
)
from .sweep import (
    SweepConfig,
    SweepConfigError,
    SweepResult,
    load_config,
    load_prompts,
    run_sweep,
)

__all__ = [
    "SweepConfig",
    "SweepConfigError",
    "SweepResult",
    "load_config",
    "load_prompts",
    "run_sweep",
    "DEFAULT_CLUSTER_THRESHOLD",
    "DIVERSITY_METRICS",
    "PLANE_GROUPS",
    "QUALITY_METRICS",
    "Embedder",
    "LogProbScorer",
    "MetricSpec",
    "RewardModelScorer",
    "SentenceTransformerEmbedder",
    "aggregate_planes",
    "compression_ratio",
    "cosine_similarity_matrix",
    "coverage_dominance",
    "default_minilm_path",
    "distinct_1",
    "distinct_2",
    "distinct_3",
    "distinct_n",
    "hypervolume_2d",
    "lexical_diversity",
    "mean_pairwise_cosine_distance",
    "nn_diversity",
    "normalise_points",
    "pareto_mask",
    "plane_groups",
    "remote_tree",
    "self_bleu",
    "self_rouge_l",
    "semantic_clusters",
    "semantic_diversity",
    "tokenize",
    "vendi_score",
]
