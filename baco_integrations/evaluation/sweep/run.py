"""Running a sweep: lock the output directory, generate what is missing, score, report.

:func:`run_sweep` chains the phases, each a function of its own: :func:`plan_sweep` (which
batches the config asks for), :func:`open_store` (what is already generated, checked against
the config), :func:`generate_batches`, :func:`score_sweep` and
:func:`~.report.write_report`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..semantic import Embedder
from .config import OperatingPoint, SweepConfig
from .errors import SweepConfigError
from .files import ensure_output_dir, lock_output_dir, write_text_atomic
from .prompts import PromptItem, load_prompts
from .report import Scores, write_report
from .scoring import (
    QualityScorer,
    build_embedder,
    build_scorers,
    embed_responses,
    flatten_responses,
    free_memory,
    metric_rows,
    recorded_quality,
    reusable_judge,
    score_quality,
)
from .store import GENERATIONS_FILE, GenerationStore, batch_settings, check_resumed, make_record

__all__ = [
    "CONFIG_COPY_FILE",
    "SweepPlan",
    "SweepResult",
    "generate_batches",
    "load_engine",
    "open_store",
    "plan_sweep",
    "run_sweep",
    "score_sweep",
    "write_config_copy",
]

logger = logging.getLogger(__name__)

#: Resolved copy of the configuration, written next to the results for the record.
CONFIG_COPY_FILE = "sweep_config.json"

#: Called after each stored batch.
OnBatch = Callable[[OperatingPoint, PromptItem], None]


@dataclass
class SweepResult:
    """What a sweep produced. ``complete`` is False when it stopped at ``max_batches``;
    then only the generations exist and the other fields are empty."""

    output_dir: Path
    complete: bool
    generated: int
    skipped: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    planes: Scores = field(default_factory=dict)
    groups: Scores = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepPlan:
    """The batches a config asks for: every operating point for every prompt."""

    points: list[OperatingPoint]
    prompts: list[PromptItem]

    @property
    def work(self) -> list[tuple[OperatingPoint, PromptItem]]:
        """(point, prompt) pairs in generation order: point-major."""
        return [(point, prompt) for point in self.points for prompt in self.prompts]

    def missing(self, store: GenerationStore) -> list[tuple[OperatingPoint, PromptItem]]:
        return [(pt, pr) for pt, pr in self.work if (pt.method, pt.label, pr.id) not in store]

    def records(self, store: GenerationStore) -> list[list[dict[str, Any]]]:
        """``records[i][j]``: the stored batch of point i for prompt j (all must exist)."""
        return [
            [store.records[(pt.method, pt.label, pr.id)] for pr in self.prompts]
            for pt in self.points
        ]


def write_config_copy(config: SweepConfig, out: Path) -> Path:
    """``sweep_config.json``: the validated configuration, for the record."""
    text = json.dumps(config.model_dump(mode="json"), indent=2) + "\n"
    return write_text_atomic(out / CONFIG_COPY_FILE, text)


def plan_sweep(config: SweepConfig) -> SweepPlan:
    """Read the prompts (the first ``max_prompts``) and expand the methods into points."""
    prompts = load_prompts(config.prompts)
    if config.max_prompts is not None:
        prompts = prompts[: config.max_prompts]
    return SweepPlan(config.operating_points(), prompts)


def open_store(config: SweepConfig, plan: SweepPlan, out: Path, *, resume: bool) -> GenerationStore:
    """The generation store of ``out``; a stored batch made with other settings is an error."""
    store = GenerationStore(out / GENERATIONS_FILE, resume=resume)
    check_resumed(store, config, plan.work)
    done = len(plan.work) - len(plan.missing(store))
    if done:
        logger.info("resuming: %d of %d batches already generated", done, len(plan.work))
    return store


def load_engine(config: SweepConfig) -> Any:
    """The generation engine the config names."""
    from ...engine import BacoEngine

    logger.info("loading models %s + %s", config.base, config.aligned)
    return BacoEngine.from_pretrained(
        config.base,
        config.aligned,
        device=config.device,
        dtype=config.dtype,
        device_map=config.device_map,
        base_gguf_file=config.base_gguf_file,
        aligned_gguf_file=config.aligned_gguf_file,
    )


def generate_batches(
    config: SweepConfig,
    store: GenerationStore,
    todo: Sequence[tuple[OperatingPoint, PromptItem]],
    engine: Any,
    *,
    max_batches: int | None = None,
    progress: bool = False,
    on_batch: OnBatch | None = None,
    total: int | None = None,
) -> int:
    """Generate and store each batch of ``todo`` in order, at most ``max_batches`` of them;
    the number generated. ``total`` sizes the progress bar (the sweep's whole work)."""
    total = len(todo) if total is None else total
    limit = len(todo) if max_batches is None else min(max_batches, len(todo))
    # Recorded from the forwards the engine runs anyway; only when a metric reads it.
    records_logprobs = "recorded_logprob" in config.metrics.quality_metrics
    with tqdm(
        total=total,
        initial=total - len(todo),
        desc="generating",
        unit="batch",
        disable=not progress,
    ) as bar:
        for point, prompt in todo[:limit]:
            bar.set_postfix_str(f"{point.method} {point.label}", refresh=False)
            settings = batch_settings(config, point, prompt)
            (outputs,) = engine.generate(
                [prompt.prompt],
                n=config.n,
                max_new_tokens=config.max_new_tokens,
                seed=settings["seed"],
                logprobs=records_logprobs,
                **point.settings,
            )
            store.append(make_record(point, prompt, settings, outputs))
            bar.update(1)
            if on_batch is not None:
                on_batch(point, prompt)
    return limit


def check_points_fit(
    config: SweepConfig, todo: Sequence[tuple[OperatingPoint, PromptItem]], engine: Any
) -> None:
    """Every point still to generate is one the engine accepts for this pair (its limits, a
    tokenizer the guard or a constraint can read, ...): prepared once each before anything
    is generated, so a sweep does not stop halfway on a setting the pair refuses."""
    if not hasattr(engine, "prepare"):  # an engine that only generates (a test's stand-in)
        return
    seen: set[str] = set()
    for point, prompt in todo:
        if point.label + point.method in seen:
            continue
        seen.add(point.label + point.method)
        try:
            engine.prepare(
                [prompt.prompt],
                engine.resolve_settings(
                    None, n=config.n, max_new_tokens=config.max_new_tokens, **point.settings
                ),
            )
        except ValueError as exc:
            raise SweepConfigError(f"method {point.method!r}, point {point.label}: {exc}") from None


def score_sweep(
    config: SweepConfig,
    plan: SweepPlan,
    store: GenerationStore,
    *,
    judge: tuple[Any, Any] | None = None,
    embedder: Embedder | None = None,
    quality_scorers: Mapping[str, QualityScorer] | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """The metric rows (one per operating point) of a fully generated sweep. Metric models
    not given are loaded from the config; ``judge`` is an already-loaded default judge."""
    metrics = config.metrics
    records = plan.records(store)
    pairs = flatten_responses(records)
    if quality_scorers is None:
        quality_scorers = build_scorers(config, judge)
    scored = {
        **score_quality(pairs, quality_scorers, metrics, progress=progress),
        **recorded_quality(records, metrics),
    }
    quality = {name: scored[name] for name in metrics.quality_metrics}
    embeddings = None
    if metrics.semantic:
        embedder = embedder if embedder is not None else build_embedder(config)
        embeddings = embed_responses([t for _, t in pairs], embedder, progress=progress)
    return metric_rows(plan.points, records, metrics, quality, embeddings)


def run_sweep(
    config: SweepConfig,
    *,
    resume: bool = True,
    engine: Any | None = None,
    embedder: Embedder | None = None,
    quality_scorers: Mapping[str, QualityScorer] | None = None,
    max_batches: int | None = None,
    progress: bool = True,
    on_batch: OnBatch | None = None,
    wait_for_lock: bool = False,
) -> SweepResult:
    """Run (or resume) a sweep and write its outputs under ``config.output_dir``.

    ``resume=False`` starts over, replacing ``generations.jsonl``; by default stored batches
    are skipped. ``engine``, ``embedder``, ``quality_scorers``: already-loaded models to use
    instead of loading them from the config (the engine is only loaded when some batch is
    missing). ``max_batches``: generate at most this many new batches, then stop with
    ``complete=False`` (a rerun resumes). ``on_batch`` is called after each stored batch.

    Another sweep running in the same output directory makes this raise
    :class:`~.errors.SweepLockedError` at once, or wait for it with ``wait_for_lock=True``.
    Nothing is written through a symbolic link (:class:`~.errors.UnsafeOutputError`).
    """
    out = ensure_output_dir(Path(config.output_dir))
    with lock_output_dir(out, wait=wait_for_lock):
        write_config_copy(config, out)
        plan = plan_sweep(config)
        store = open_store(config, plan, out, resume=resume)
        todo = plan.missing(store)
        skipped = len(plan.work) - len(todo)
        own_engine = engine is None and bool(todo)
        if own_engine:
            engine = load_engine(config)
        if todo:
            check_points_fit(config, todo, engine)
        generated = generate_batches(
            config,
            store,
            todo,
            engine,
            max_batches=max_batches,
            progress=progress,
            on_batch=on_batch,
            total=len(plan.work),
        )
        if generated < len(todo):
            logger.info("stopped after %d batches (max_batches); rerun to resume", generated)
            return SweepResult(out, False, generated, skipped)
        judge = reusable_judge(config, engine) if quality_scorers is None else None
        if own_engine:
            # The generation models are no longer needed: free them before the metric models
            # load (a judge reusing the aligned model keeps its own reference).
            engine = None
            free_memory()
        rows = score_sweep(
            config,
            plan,
            store,
            judge=judge,
            embedder=embedder,
            quality_scorers=quality_scorers,
            progress=progress,
        )
        planes, groups, files = write_report(
            rows, config.metrics, [m.name for m in config.methods], out
        )
        return SweepResult(out, True, generated, skipped, rows, planes, groups, files)
