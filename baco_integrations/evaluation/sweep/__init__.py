"""Sweep runner: generate with every method at every operating point, score, compare.

The protocol is docs/algorithm.md's Evaluation protocol section. A sweep

1. reads a :class:`SweepConfig` (TOML or JSON, :func:`load_config`) and a prompt file
   (:func:`load_prompts`; ``"builtin"`` is the package's own brainstorming / creative-writing
   set);
2. expands every method into operating points (a γ list for BACO routers, a temperature or
   min-p list for the single-model baselines, or one fixed point) and generates ``n`` samples
   per (operating point, prompt). Each such batch is appended to ``generations.jsonl`` and
   flushed as soon as it is made, so an interrupted sweep resumes where it stopped and loses
   nothing (:class:`GenerationStore`);
3. measures diversity across the ``n`` responses of each prompt and quality per response,
   averages both over prompts (one row per operating point in ``metrics.csv`` /
   ``metrics.json``);
4. for every (diversity metric, quality metric) plane computes each method's coverage and
   dominance (:func:`~baco_integrations.evaluation.pareto.coverage_dominance`) and averages
   them per group: lexical, semantic, overall (``coverage_dominance.md`` / ``.json``);
5. draws each method's curve on the chosen planes (``plot_<diversity>__<quality>.png``).

Metric models (embedder, judge LM, reward model) are loaded once, after generation, and
score all responses in batched calls. One sweep at a time holds an output directory (a lock),
and nothing is written through a symbolic link.

Modules, one concern each: :mod:`.prompts`, :mod:`.config` (and :mod:`.example`),
:mod:`.store`, :mod:`.scoring`, :mod:`.report`, :mod:`.files` (safe writes, the lock),
:mod:`.run` (the phases chained) and :mod:`.errors`.
"""

from .config import (
    MethodConfig,
    MetricsConfig,
    OperatingPoint,
    SweepConfig,
    load_config,
    parse_config,
)
from .errors import (
    StoreRecordError,
    SweepConfigError,
    SweepError,
    SweepLockedError,
    UnsafeOutputError,
)
from .example import EXAMPLE_CONFIG
from .files import LOCK_FILE, lock_output_dir
from .prompts import BUILTIN_PROMPTS, PromptItem, builtin_prompts_path, load_prompts
from .report import COVERAGE_FILE, METRICS_FILE, compare_methods, plane_name
from .run import CONFIG_COPY_FILE, SweepResult, run_sweep
from .scoring import QualityScorer
from .store import GENERATIONS_FILE, GenerationRecord, GenerationStore, Key, batch_seed

__all__ = [
    "BUILTIN_PROMPTS",
    "CONFIG_COPY_FILE",
    "COVERAGE_FILE",
    "EXAMPLE_CONFIG",
    "GENERATIONS_FILE",
    "LOCK_FILE",
    "METRICS_FILE",
    "GenerationRecord",
    "GenerationStore",
    "Key",
    "MethodConfig",
    "MetricsConfig",
    "OperatingPoint",
    "PromptItem",
    "QualityScorer",
    "StoreRecordError",
    "SweepConfig",
    "SweepConfigError",
    "SweepError",
    "SweepLockedError",
    "SweepResult",
    "UnsafeOutputError",
    "batch_seed",
    "builtin_prompts_path",
    "compare_methods",
    "load_config",
    "load_prompts",
    "lock_output_dir",
    "parse_config",
    "plane_name",
    "run_sweep",
]
