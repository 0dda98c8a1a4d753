"""Scoring a sweep's generations: quality per response, diversity per prompt, one row per point.

Metric models (judge LM, reward model, embedder) are loaded once (:func:`build_scorers`,
:func:`build_embedder`) and score every response of the sweep in batched calls
(:func:`score_quality`, :func:`embed_responses`); :func:`metric_rows` then averages the
metrics of each operating point over its prompts.
"""

from __future__ import annotations

import gc
import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from ..registry import DIVERSITY_METRICS, QUALITY_METRICS
from ..semantic import Embedder
from .config import MetricsConfig, OperatingPoint, SweepConfig

__all__ = [
    "QualityScorer",
    "build_embedder",
    "build_scorers",
    "embed_responses",
    "flatten_responses",
    "metric_rows",
    "point_metrics",
    "reusable_judge",
    "recorded_quality",
    "score_quality",
]

logger = logging.getLogger(__name__)

#: Quality is scored this many scorer batches at a time (progress bar granularity).
_SCORE_CHUNK_BATCHES = 32
#: Responses embedded per embedder call (the embedder batches inside).
_EMBED_CHUNK = 2048

#: ``records[i][j]``: the stored batch of operating point i for prompt j.
Records = Sequence[Sequence[Mapping[str, Any]]]


class QualityScorer(Protocol):
    """What a quality metric needs: one float per (prompt, response) pair, higher = better."""

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray: ...


# --------------------------------------------------------------------------- metric models


def reusable_judge(config: SweepConfig, engine: Any | None) -> tuple[Any, Any] | None:
    """The engine's aligned model and tokenizer when they can serve as the default judge.

    Only a float32 copy is reused: that is the dtype the judge is loaded in otherwise, so the
    scores do not depend on whether this run happened to generate anything."""
    if config.metrics.judge_model is not None or "logprob" not in config.metrics.quality_metrics:
        return None
    aligned = getattr(engine, "aligned_model", None)
    if aligned is None:
        return None
    import torch

    if aligned.dtype != torch.float32:
        return None
    return aligned, engine.aligned_tokenizer  # type: ignore[union-attr]


def free_memory() -> None:
    """Return freed model memory (host, and the CUDA cache) before other models load."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _aligned_judge(config: SweepConfig, device: str) -> tuple[Any, Any]:
    """The aligned model in float32, loaded as the sweep names it (directory, hub id, GGUF)."""
    from ...loading import load_causal_lm

    logger.info("loading judge model %s (the aligned model)", config.aligned)
    return load_causal_lm(
        config.aligned, gguf_file=config.aligned_gguf_file, device=device, dtype="float32"
    )


def build_scorers(
    config: SweepConfig, judge: tuple[Any, Any] | None = None
) -> dict[str, QualityScorer]:
    """Load each quality model once. The ``logprob`` judge defaults to the aligned model
    (``judge``, an already-loaded float32 copy, when given; loaded from ``config.aligned``
    otherwise)."""
    from ..quality import LogProbScorer, RewardModelScorer

    metrics = config.metrics
    device = metrics.device or config.device
    scorers: dict[str, QualityScorer] = {}
    for name in metrics.quality_metrics:
        if name == "reward":
            assert metrics.reward_model is not None
            logger.info("loading reward model %s", metrics.reward_model)
            scorers[name] = RewardModelScorer(
                metrics.reward_model,
                device=device,
                batch_size=metrics.batch_size,
                label_index=metrics.reward_label_index,
            )
        elif name == "logprob" and metrics.judge_model is not None:
            logger.info("loading judge model %s", metrics.judge_model)
            scorers[name] = LogProbScorer(
                metrics.judge_model, device=device, batch_size=metrics.batch_size
            )
        elif name == "logprob":
            model, tokenizer = judge if judge is not None else _aligned_judge(config, device)
            # device=None: score where the model already is. A reused engine model must not
            # be moved (the engine may belong to the caller).
            scorers[name] = LogProbScorer(
                model, tokenizer=tokenizer, device=None, batch_size=metrics.batch_size
            )
        elif QUALITY_METRICS[name].input == "records":
            continue  # read from the stored samples (recorded_quality)
        else:  # pragma: no cover - MetricsConfig validates the names
            raise ValueError(f"unknown quality metric {name!r}")
    return scorers


def build_embedder(config: SweepConfig) -> Embedder:
    """The sentence embedder of the semantic metrics, on the metric device."""
    from ..semantic import SentenceTransformerEmbedder

    path = None if config.metrics.embedder == "default" else config.metrics.embedder
    return SentenceTransformerEmbedder(
        path, device=config.metrics.device or config.device, batch_size=64
    )


# --------------------------------------------------------------------------- scoring


def flatten_responses(records: Records) -> list[tuple[str, str]]:
    """Every (prompt, response) pair of the sweep, point-major, then prompt, then sample."""
    return [
        (rec["prompt"], s["text"]) for batches in records for rec in batches for s in rec["samples"]
    ]


def _score_one(
    name: str, scorer: QualityScorer, pairs: Sequence[tuple[str, str]], chunk: int, progress: bool
) -> np.ndarray:
    parts: list[np.ndarray] = []
    with (
        tqdm(total=len(pairs), desc=f"quality: {name}", unit="resp", disable=not progress) as bar,
        warnings.catch_warnings(),
    ):
        # Empty responses have no log-prob (NaN); they are counted in empty_fraction.
        warnings.simplefilter("ignore", RuntimeWarning)
        for start in range(0, len(pairs), chunk):
            part = pairs[start : start + chunk]
            scores = scorer.score([p for p, _ in part], [t for _, t in part])
            parts.append(np.asarray(scores, dtype=np.float64).reshape(-1))
            bar.update(len(part))
    return np.concatenate(parts) if parts else np.zeros(0)


def score_quality(
    pairs: Sequence[tuple[str, str]],
    scorers: Mapping[str, QualityScorer],
    metrics: MetricsConfig,
    *,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Each chosen quality metric of every pair: ``{metric: float64 array, one per pair}``.

    Scored in chunks only to show progress; each chunk is batched inside the scorer, and the
    chunking is the same on every run, so the numbers are too.
    """
    scored = [q for q in metrics.quality_metrics if QUALITY_METRICS[q].input == "pairs"]
    missing = [q for q in scored if q not in scorers]
    if missing:
        raise ValueError(f"quality_scorers lacks the chosen quality metric(s) {missing}")
    chunk = _SCORE_CHUNK_BATCHES * metrics.batch_size
    return {name: _score_one(name, scorers[name], pairs, chunk, progress) for name in scored}


def recorded_quality(records: Records, metrics: MetricsConfig) -> dict[str, np.ndarray]:
    """The chosen quality metrics that samples recorded while decoding, one value per pair
    (in the order of :func:`flatten_responses`)."""
    samples = [s for batches in records for rec in batches for s in rec["samples"]]
    return {
        name: QUALITY_METRICS[name].fn(samples)
        for name in metrics.quality_metrics
        if QUALITY_METRICS[name].input == "records"
    }


def embed_responses(
    responses: Sequence[str], embedder: Embedder, *, progress: bool = False
) -> np.ndarray:
    """One embedding row per response, float64."""
    parts: list[np.ndarray] = []
    with tqdm(total=len(responses), desc="embedding", unit="resp", disable=not progress) as bar:
        for start in range(0, len(responses), _EMBED_CHUNK):
            part = list(responses[start : start + _EMBED_CHUNK])
            parts.append(np.asarray(embedder.embed(part), dtype=np.float64))
            bar.update(len(part))
    return np.concatenate(parts)


# --------------------------------------------------------------------------- per point


def _nanmean(values: Iterable[float]) -> float:
    arr = np.asarray(list(values), dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    return float(finite.mean()) if finite.size else math.nan


def _mean_over_prompts(per_prompt_values: Sequence[Sequence[float]]) -> float:
    """Mean over responses within a prompt, then over prompts (NaNs, i.e. empty responses
    without a log-prob, are left out)."""
    return _nanmean(_nanmean(values) for values in per_prompt_values)


def _point_columns(point: OperatingPoint, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The descriptive columns of a point's row: what it is and what its samples look like."""
    samples = [s for r in records for s in r["samples"]]
    return {
        "method": point.method,
        "router": point.settings["router"],
        "point": point.label,
        "parameter": point.parameter,
        "value": point.value,
        "gamma": point.gamma,
        "base_share": point.base_share,
        "temperature": float(point.settings.get("temperature", 1.0)),
        "min_p": float(point.settings.get("min_p", 0.0)),
        "prompts": len(records),
        "samples": len(samples),
        "mean_tokens": _nanmean(s["num_tokens"] for s in samples),
        "base_fraction": _nanmean(s["base_fraction"] for s in samples),
        "empty_fraction": _nanmean(float(not s["text"].strip()) for s in samples),
    }


def point_metrics(
    point: OperatingPoint,
    records: Sequence[Mapping[str, Any]],
    metrics: MetricsConfig,
    embeddings: Sequence[np.ndarray] | None,
    quality: Mapping[str, Sequence[np.ndarray]],
) -> dict[str, Any]:
    """One row of ``metrics.csv``: diversity across each prompt's samples averaged over
    prompts, quality per response averaged within then over prompts."""
    texts = [[s["text"] for s in r["samples"]] for r in records]
    row = _point_columns(point, records)
    for name in metrics.diversity:
        spec = DIVERSITY_METRICS[name]
        if spec.input == "responses":
            values = [spec.fn(t) for t in texts]
        else:
            assert embeddings is not None
            values = [spec.fn(e) for e in embeddings]
        row[name] = _nanmean(values)
    for name in metrics.quality_metrics:
        row[name] = _mean_over_prompts([list(v) for v in quality[name]])
    return row


def metric_rows(
    points: Sequence[OperatingPoint],
    records: Records,
    metrics: MetricsConfig,
    quality: Mapping[str, np.ndarray],
    embeddings: np.ndarray | None,
) -> list[dict[str, Any]]:
    """One row per operating point from the flat per-response arrays (in the order of
    :func:`flatten_responses`)."""
    rows: list[dict[str, Any]] = []
    offset = 0
    for point, batches in zip(points, records, strict=True):
        per_prompt_emb: list[np.ndarray] = []
        per_prompt_quality: dict[str, list[np.ndarray]] = {q: [] for q in quality}
        for rec in batches:
            count = len(rec["samples"])
            if embeddings is not None:
                per_prompt_emb.append(embeddings[offset : offset + count])
            for name, values in quality.items():
                per_prompt_quality[name].append(values[offset : offset + count])
            offset += count
        emb = per_prompt_emb if embeddings is not None else None
        rows.append(point_metrics(point, batches, metrics, emb, per_prompt_quality))
    return rows
