"""Sweep runner: prompt loading, configuration, resumable storage, end-to-end outputs.

The end-to-end runs use the session's tiny random pair (3 prompts, n=3, 6 new tokens, two
methods with two operating points each = 12 batches), a hashing stub embedder for the semantic
metrics, and the real judge log-prob with the tiny aligned model.
"""

from __future__ import annotations

import json
import math
import shutil
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from baco_integrations import BacoEngine
from baco_integrations.evaluation.plotting import plot_plane
from baco_integrations.evaluation.registry import DIVERSITY_METRICS
from baco_integrations.evaluation.sweep import (
    COVERAGE_FILE,
    EXAMPLE_CONFIG,
    GENERATIONS_FILE,
    METRICS_FILE,
    GenerationStore,
    MetricsConfig,
    SweepConfig,
    SweepConfigError,
    SweepError,
    SweepResult,
    batch_seed,
    builtin_prompts_path,
    compare_methods,
    load_config,
    load_prompts,
    parse_config,
    run_sweep,
)
from baco_integrations.testing import TinyPair

PROMPTS = [
    {"id": "q1", "prompt": "Suggest a name for a cat."},
    {"id": 2, "prompt": "Write a line about the sea.", "language": "en"},
    {"prompt": "Give me an idea for a party."},
]
DIVERSITY = ["distinct_2", "self_bleu", "vendi", "semantic_clusters"]
N_BATCHES = 2 * 2 * len(PROMPTS)


class HashEmbedder:
    """Fast deterministic stand-in for a sentence embedder: hashed bag of words plus a
    constant component (so that no row is zero, even for an empty response)."""

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), 16))
        out[:, 0] = 1.0
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, 1 + zlib.crc32(word.encode()) % 15] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class Crash(Exception):
    """Stands in for a kill / power cut in the middle of a sweep."""


class CountingEngine:
    """Wraps an engine: counts generate calls and can crash on the k-th one."""

    def __init__(self, engine: BacoEngine, crash_on: int | None = None) -> None:
        self.engine = engine
        self.calls = 0
        self.crash_on = crash_on

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.crash_on is not None and self.calls == self.crash_on:
            raise Crash
        return self.engine.generate(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def write_prompts(path: Path) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in PROMPTS) + "\n\n", encoding="utf-8")
    return path


def make_config(pair: TinyPair, root: Path, **overrides: Any) -> SweepConfig:
    data: dict[str, Any] = {
        "base": str(pair.base_dir),
        "aligned": str(pair.aligned_dir),
        "prompts": str(write_prompts(root / "prompts.jsonl")),
        "n": 3,
        "max_new_tokens": 6,
        "seed": 7,
        "output_dir": str(root / "out"),
        "methods": [
            {"name": "BACO", "router": "P-PUNC", "gammas": [0.3, 0.8]},
            {"name": "aligned T", "router": "aligned", "temperatures": [0.7, 1.3]},
        ],
        "metrics": {"diversity": DIVERSITY},
    }
    data.update(overrides)
    return parse_config(data)


def generations(path: Path) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {GenerationStore.key_of(r): r["samples"] for r in records}


@pytest.fixture(scope="module")
def full_run(
    tiny_pair: TinyPair, engine: BacoEngine, tmp_path_factory: pytest.TempPathFactory
) -> tuple[SweepResult, HashEmbedder]:
    """One uninterrupted sweep, the reference for the output and resume tests."""
    config = make_config(tiny_pair, tmp_path_factory.mktemp("full"))
    embedder = HashEmbedder()
    result = run_sweep(config, engine=engine, embedder=embedder, progress=False)
    return result, embedder


# --------------------------------------------------------------------------- end to end


def test_sweep_writes_all_outputs(full_run: tuple[SweepResult, HashEmbedder]) -> None:
    result, embedder = full_run
    out = result.output_dir
    assert result.complete and result.generated == N_BATCHES and result.skipped == 0
    # Metric models are called once over all responses (batched inside).
    assert embedder.calls == 1

    stored = generations(out / GENERATIONS_FILE)
    assert len(stored) == N_BATCHES
    assert all(len(samples) == 3 for samples in stored.values())
    assert {k[2] for k in stored} == {"q1", "2", "line-3"}
    sample = next(iter(stored.values()))[0]
    assert len(sample["sources"]) == len(sample["token_ids"]) == sample["num_tokens"]

    # metrics.csv / .json: one row per operating point, every metric present.
    lines = (out / METRICS_FILE).read_text().splitlines()
    header = lines[0].split(",")
    assert len(lines) == 1 + 4
    for column in [*DIVERSITY, "logprob", "base_fraction", "method", "point", "gamma"]:
        assert column in header
    rows = json.loads((out / "metrics.json").read_text())
    assert [(r["method"], r["point"]) for r in rows] == [
        ("BACO", "gamma=0.3"),
        ("BACO", "gamma=0.8"),
        ("aligned T", "temperature=0.7"),
        ("aligned T", "temperature=1.3"),
    ]
    for row in rows:
        assert row["prompts"] == 3 and row["samples"] == 9
        assert 0.0 <= row["distinct_2"] <= 1.0
        assert 1.0 <= row["vendi"] <= 3.0
        assert row["logprob"] is None or row["logprob"] < 0.0
    assert all(r["base_fraction"] == 0.0 for r in rows if r["method"] == "aligned T")
    assert rows[0]["gamma"] == 0.3 and rows[2]["gamma"] is None

    # coverage / dominance per group, and per plane.
    cov = json.loads((out / "coverage_dominance.json").read_text())
    assert set(cov["groups"]) == {"lexical", "semantic", "overall"}
    assert set(cov["planes"]) == {f"{d}/logprob" for d in DIVERSITY}
    for result_by_method in [*cov["groups"].values(), *cov["planes"].values()]:
        assert set(result_by_method) == {"BACO", "aligned T"}
        for value in result_by_method.values():
            assert 0.0 <= value["coverage"] <= 1.0 and 0.0 <= value["dominance"] <= 1.0
    for plane in cov["planes"].values():
        assert sum(v["dominance"] for v in plane.values()) == pytest.approx(1.0)
    md = (out / COVERAGE_FILE).read_text()
    assert "| method | lexical coverage | lexical dominance | semantic coverage" in md
    assert "| BACO |" in md and "| aligned T |" in md

    # Default plot planes: the first lexical and first semantic metric against logprob.
    plots = sorted(out.glob("plot_*.png"))
    assert [p.name for p in plots] == [
        "plot_distinct_2__logprob.png",
        "plot_vendi__logprob.png",
    ]
    for plot in plots:
        data = plot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000


def test_resume_after_max_batches_matches_uninterrupted(
    tiny_pair: TinyPair,
    engine: BacoEngine,
    full_run: tuple[SweepResult, HashEmbedder],
    tmp_path: Path,
) -> None:
    config = make_config(tiny_pair, tmp_path)
    first = CountingEngine(engine)
    partial = run_sweep(
        config, engine=first, embedder=HashEmbedder(), max_batches=5, progress=False
    )
    assert not partial.complete and partial.generated == 5 and first.calls == 5
    assert len(generations(tmp_path / "out" / GENERATIONS_FILE)) == 5
    assert not (tmp_path / "out" / METRICS_FILE).exists()

    second = CountingEngine(engine)
    resumed = run_sweep(config, engine=second, embedder=HashEmbedder(), progress=False)
    # Only the missing batches are generated ...
    assert second.calls == N_BATCHES - 5
    assert resumed.complete and resumed.skipped == 5 and resumed.generated == N_BATCHES - 5
    # ... and the results are those of a sweep that was never interrupted.
    reference, _ = full_run
    assert generations(tmp_path / "out" / GENERATIONS_FILE) == generations(
        reference.output_dir / GENERATIONS_FILE
    )
    # json.dumps spells NaN the same way on both sides, where NaN != NaN would not compare.
    assert json.dumps(resumed.rows) == json.dumps(reference.rows)
    assert resumed.groups == reference.groups

    # A third run has nothing left to generate and does not touch the engine.
    third = CountingEngine(engine)
    again = run_sweep(config, engine=third, embedder=HashEmbedder(), progress=False)
    assert third.calls == 0 and again.skipped == N_BATCHES and again.groups == reference.groups


def test_resume_after_crash_and_torn_write(
    tiny_pair: TinyPair,
    engine: BacoEngine,
    full_run: tuple[SweepResult, HashEmbedder],
    tmp_path: Path,
) -> None:
    config = make_config(tiny_pair, tmp_path)
    store_path = tmp_path / "out" / GENERATIONS_FILE
    crashing = CountingEngine(engine, crash_on=4)
    with pytest.raises(Crash):
        run_sweep(config, engine=crashing, embedder=HashEmbedder(), progress=False)
    assert len(generations(store_path)) == 3  # every batch finished before the crash is kept
    # A kill in the middle of a write leaves a torn last line: it is dropped and redone.
    with store_path.open("a") as handle:
        handle.write('{"method": "aligned T", "point": "temperature=0.7", "prom')

    again = CountingEngine(engine)
    with pytest.warns(RuntimeWarning, match="incomplete"):
        resumed = run_sweep(config, engine=again, embedder=HashEmbedder(), progress=False)
    assert again.calls == N_BATCHES - 3
    assert generations(store_path) == generations(full_run[0].output_dir / GENERATIONS_FILE)
    assert resumed.groups == full_run[0].groups


def test_resume_refuses_other_settings_and_no_resume_starts_over(
    tiny_pair: TinyPair, engine: BacoEngine, tmp_path: Path
) -> None:
    config = make_config(tiny_pair, tmp_path)
    run_sweep(config, engine=engine, embedder=HashEmbedder(), max_batches=1, progress=False)
    changed = make_config(tiny_pair, tmp_path, max_new_tokens=7)
    with pytest.raises(SweepError, match="max_new_tokens: stored 6, config 7"):
        run_sweep(changed, engine=engine, embedder=HashEmbedder(), progress=False)
    counting = CountingEngine(engine)
    result = run_sweep(
        changed,
        engine=counting,
        embedder=HashEmbedder(),
        resume=False,
        max_batches=1,
        progress=False,
    )
    assert counting.calls == 1 and result.skipped == 0
    (record,) = generations(tmp_path / "out" / GENERATIONS_FILE).values()
    assert all(s["num_tokens"] <= 7 for s in record)


def stored_record(prompt_id: str = "1") -> dict[str, Any]:
    """A minimal valid generation record: one batch of two samples."""
    sample = {
        "text": "hi there",
        "num_tokens": 2,
        "base_fraction": 0.5,
        "finish_reason": "length",
        "token_ids": [5, 6],
        "sources": "ba",
    }
    return {
        "method": "m",
        "point": "p",
        "prompt_id": prompt_id,
        "prompt": "Say hi.",
        "settings": {"n": 2, "router": "P-PUNC"},
        "samples": [sample, {**sample, "text": "hello"}],
    }


def test_store_rejects_a_corrupt_line_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / GENERATIONS_FILE
    good = json.dumps(stored_record())
    path.write_text(f"{good}\nnot json\n{good}\n")
    with pytest.raises(SweepError, match=f"{path}, line 2: not valid JSON"):
        GenerationStore(path)


def test_store_keeps_a_complete_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / GENERATIONS_FILE
    record = stored_record()
    path.write_text(json.dumps(record))
    store = GenerationStore(path)
    assert ("m", "p", "1") in store
    store.append({**record, "prompt_id": "2"})
    assert len(GenerationStore(path)) == 2


def test_batch_seed_is_stable_and_per_prompt() -> None:
    assert batch_seed(0, "a") == batch_seed(0, "a")
    assert len({batch_seed(0, "a"), batch_seed(0, "b"), batch_seed(1, "a")}) == 3
    assert 0 <= batch_seed(123, "x") < 2**31


# --------------------------------------------------------------------------- comparison / plot


def _row(method: str, value: float, x: float, y: float) -> dict[str, Any]:
    return {"method": method, "point": f"v={value}", "value": value, "d": x, "q": y}


def test_compare_methods_leaves_out_non_finite_points(tmp_path: Path) -> None:
    metrics = MetricsConfig(diversity=["distinct_1"], quality=["logprob"])
    rows = [
        {"method": "a", "point": "p1", "distinct_1": 0.2, "logprob": -1.0},
        {"method": "a", "point": "p2", "distinct_1": 0.9, "logprob": math.nan},
        {"method": "b", "point": "p1", "distinct_1": 0.5, "logprob": -2.0},
    ]
    planes, groups, dropped = compare_methods(rows, metrics, ["a", "b"])
    assert dropped == {"distinct_1/logprob": ["a p2"]}
    assert set(groups) == {"lexical", "overall"}
    assert planes["distinct_1/logprob"]["a"][1] == pytest.approx(0.5)


def test_plot_plane_draws_curves_and_staircases(tmp_path: Path) -> None:
    rows = [
        _row("BACO", 0.1, 0.2, 0.9),
        _row("BACO", 0.5, 0.6, 0.7),
        _row("aligned", 0.7, 0.1, 1.0),
        _row("aligned", 1.0, 0.3, 0.5),
        _row("empty", 1.0, math.nan, 0.5),
    ]
    result = {"BACO": (0.7, 0.67), "aligned": (0.4, 0.33), "empty": (0.0, 0.0)}
    path = plot_plane(rows, "d", "q", result, tmp_path / "sub" / "p.png")
    data = path.read_bytes()
    assert data[:4] == b"\x89PNG" and 5_000 < len(data) < 200_000


# --------------------------------------------------------------------------- prompts


def test_builtin_prompts_ship_with_the_package() -> None:
    path = builtin_prompts_path()
    assert path.is_file() and path.parent.name == "data"
    assert path.parent.parent.name == "baco_integrations"
    prompts = load_prompts("builtin")
    assert 20 <= len(prompts) <= 40
    assert len({p.id for p in prompts}) == len(prompts)
    categories = {json.loads(line)["category"] for line in path.read_text().splitlines()}
    assert categories == {"brainstorm", "creative"}


def test_load_prompts_accepts_noveltybench_and_plain_rows(tmp_path: Path) -> None:
    prompts = load_prompts(write_prompts(tmp_path / "p.jsonl"))
    assert [(p.id, p.prompt) for p in prompts] == [
        ("q1", "Suggest a name for a cat."),
        ("2", "Write a line about the sea."),
        ("line-3", "Give me an idea for a party."),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "a"}\n{"prompt": "b"\n', "line 2: not valid JSON"),
        ('{"prompt": "a"}\n\n["b"]\n', "line 3: expected a JSON object"),
        ('{"text": "a"}\n', "line 1: 'prompt' must be a non-empty string"),
        ('{"prompt": "  "}\n', "line 1: 'prompt' must be a non-empty string"),
        ('{"id": 1, "prompt": "a"}\n{"id": "1", "prompt": "b"}\n', "line 2: duplicate id '1'"),
        ('{"id": [1], "prompt": "a"}\n', "line 1: 'id' must be"),
        ("\n\n", "holds no prompts"),
    ],
)
def test_load_prompts_errors_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(SweepConfigError, match=message.replace("[", r"\[")):
        load_prompts(path)


def test_load_prompts_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SweepConfigError, match="cannot read prompt file"):
        load_prompts(tmp_path / "nope.jsonl")


# --------------------------------------------------------------------------- configuration


BASE = {"base": "b", "aligned": "a", "output_dir": "o"}
ONE_METHOD = [{"router": "aligned"}]


def test_config_defaults_and_operating_points() -> None:
    config = parse_config(
        {
            **BASE,
            "methods": [
                {"router": "p-punc", "gammas": [0.1, 0.5], "gate": "aligned"},
                {
                    "name": "aligned min-p",
                    "router": "aligned",
                    "temperature": 1.5,
                    "min_ps": [0.05, 0.1],
                },
                {"router": "nudging"},
            ],
        }
    )
    assert config.n == 10 and config.max_new_tokens == 512 and config.prompts == "builtin"
    assert config.metrics.diversity == list(DIVERSITY_METRICS)
    assert config.metrics.quality == ["logprob"]
    points = config.operating_points()
    assert [(p.method, p.label) for p in points] == [
        ("P-PUNC", "gamma=0.1"),
        ("P-PUNC", "gamma=0.5"),
        ("aligned min-p", "min_p=0.05"),
        ("aligned min-p", "min_p=0.1"),
        ("nudging", "default"),
    ]
    assert points[0].settings == {"router": "P-PUNC", "gate": "aligned", "gamma": 0.1}
    assert points[3].settings == {"router": "aligned", "temperature": 1.5, "min_p": 0.1}
    # nudging with no γ aims at the default base share; a γ point reads its γ
    assert points[4].gamma is None and points[4].base_share == 0.2
    assert points[0].gamma == 0.1 and points[0].base_share is None
    assert points[2].gamma is None and points[2].base_share is None  # aligned: neither
    with_reward = MetricsConfig(reward_model="rm")
    assert with_reward.quality == ["reward", "logprob"]
    assert with_reward.planes_to_plot() == [("distinct_1", "reward"), ("cosine_distance", "reward")]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model": "x"}, "model: Extra inputs are not permitted"),
        ({"methods": []}, "methods: List should have at least 1 item"),
        ({"n": 1}, "n: Input should be greater than or equal to 2"),
        ({"methods": [{"gammas": [0.1]}]}, r"methods\[0\]\.router: Field required"),
        ({"methods": [{"router": "nope"}]}, "router='nope' is not a known router"),
        ({"methods": [{"router": "aligned", "gammas": [0.1]}]}, "router 'aligned' has no gamma"),
        (
            {"methods": [{"router": "P", "gammas": [0.1], "temperatures": [1.0]}]},
            "sweep one setting per method",
        ),
        ({"methods": [{"router": "P", "gammas": [0.5, 1.5]}]}, "point gamma=1.5: gamma=1.5"),
        ({"methods": [{"router": "P", "gammas": []}]}, "gammas: must list at least one value"),
        ({"methods": [{"router": "P", "gammas": [0.1, 0.1]}]}, "must be distinct"),
        ({"methods": [{"router": "P", "n": 4}]}, "'n' is set for the whole sweep"),
        ({"methods": [{"router": "P", "temprature": 0.5}]}, "unknown setting 'temprature'"),
        (
            {"methods": [{"router": "P", "gamma": 0.2, "gammas": [0.1]}]},
            "both 'gammas' and 'gamma'",
        ),
        ({"methods": [{"router": "P"}, {"router": "p"}]}, "method names must be unique"),
        ({"metrics": {"diversity": ["distinct_9"]}}, "metrics.diversity: .*unknown diversity"),
        ({"metrics": {"quality": ["reward"]}}, "'reward' needs reward_model"),
        ({"metrics": {"quality": ["bleu"]}}, "quality: unknown metric"),
        (
            {"metrics": {"diversity": ["vendi"], "plot_planes": [["distinct_2", "logprob"]]}},
            "plot_planes: .*'distinct_2' is not among the chosen diversity",
        ),
        ({"metrics": {"batch_size": 0}}, "metrics.batch_size: Input should be greater"),
    ],
)
def test_config_errors_name_the_field(overrides: dict[str, Any], message: str) -> None:
    data = {**BASE, "methods": ONE_METHOD, **overrides}
    with pytest.raises(SweepConfigError, match=message):
        parse_config(data)


def test_load_config_toml_json_and_relative_paths(tmp_path: Path, tiny_pair: TinyPair) -> None:
    shutil.copytree(tiny_pair.base_dir, tmp_path / "models" / "base")
    write_prompts(tmp_path / "prompts.jsonl")
    (tmp_path / "sweep.toml").write_text(
        'base = "models/base"\naligned = "org/some-hub-id"\nprompts = "prompts.jsonl"\n'
        'output_dir = "results"\n\n[[methods]]\nrouter = "aligned"\n'
    )
    config = load_config(tmp_path / "sweep.toml")
    assert config.base == str(tmp_path / "models" / "base")
    assert config.aligned == "org/some-hub-id"  # not a path next to the file: a hub id
    assert config.prompts == str(tmp_path / "prompts.jsonl")
    assert config.output_dir == str(tmp_path / "results")
    (tmp_path / "sweep.json").write_text(json.dumps({**BASE, "methods": ONE_METHOD}))
    assert load_config(tmp_path / "sweep.json").output_dir == str(tmp_path / "o")
    (tmp_path / "broken.toml").write_text("base = \n")
    with pytest.raises(SweepConfigError, match="does not parse"):
        load_config(tmp_path / "broken.toml")
    with pytest.raises(SweepConfigError, match="cannot read sweep config"):
        load_config(tmp_path / "missing.toml")


def test_load_config_expands_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "sweep.toml").write_text(
        'base = "~/models/base"\naligned = "org/id"\noutput_dir = "~/results"\n\n'
        '[[methods]]\nrouter = "aligned"\n'
    )
    config = load_config(tmp_path / "sweep.toml")
    assert config.base == str(tmp_path / "home" / "models" / "base")
    assert config.output_dir == str(tmp_path / "home" / "results")
    assert config.aligned == "org/id"


def test_example_config_is_valid(tmp_path: Path) -> None:
    (tmp_path / "example.toml").write_text(EXAMPLE_CONFIG)
    config = load_config(tmp_path / "example.toml")
    assert len(config.operating_points()) == 16
    assert config.metrics.planes_to_plot() == [("distinct_2", "logprob"), ("vendi", "logprob")]


def test_recorded_logprob_is_read_from_the_decoding_not_a_second_pass(
    tiny_pair: TinyPair, engine: BacoEngine, tmp_path: Path
) -> None:
    """``recorded_logprob`` stores, per sample, the aligned model's mean log-prob of the
    response after the engine's prompt, as recorded while decoding; no judge is loaded."""
    import torch
    from transformers import AutoModelForCausalLM

    config = make_config(
        tiny_pair,
        tmp_path,
        methods=[{"name": "BACO", "router": "P-PUNC", "gammas": [0.5]}],
        metrics={"diversity": ["distinct_1"], "quality": ["recorded_logprob"]},
    )
    result = run_sweep(
        config, engine=engine, embedder=HashEmbedder(), quality_scorers={}, progress=False
    )
    records = [
        json.loads(line) for line in (result.output_dir / GENERATIONS_FILE).read_text().splitlines()
    ]
    model = AutoModelForCausalLM.from_pretrained(tiny_pair.aligned_dir).eval()
    means = []
    for record in records:
        prompt_ids = engine.encode_prompts(record["prompt"])["aligned"]
        for sample in record["samples"]:
            ids = torch.tensor([prompt_ids + sample["token_ids"]])
            with torch.inference_mode():
                logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            own = [
                logprobs[len(prompt_ids) - 1 + i, t].item()
                for i, t in enumerate(sample["token_ids"])
            ]
            assert sample["aligned_logprob"] == pytest.approx(sum(own) / len(own), abs=1e-4)
            means.append(sample["aligned_logprob"])
    (row,) = json.loads((result.output_dir / "metrics.json").read_text())
    assert row["recorded_logprob"] == pytest.approx(sum(means) / len(means), abs=1e-6)


def test_recorded_logprob_refuses_generations_made_without_it() -> None:
    from baco_integrations.evaluation.quality import recorded_aligned_logprobs

    with pytest.raises(ValueError, match="recorded_logprob"):
        recorded_aligned_logprobs([{"text": "x"}])


def test_base_shares_are_an_axis_and_the_builtin_prompts_have_fixed_halves(
    tiny_pair: TinyPair, tmp_path: Path
) -> None:
    from baco_integrations.evaluation.sweep.prompts import load_prompts

    config = make_config(
        tiny_pair,
        tmp_path,
        prompts="builtin:heldout",
        methods=[{"name": "share", "router": "P-PUNC", "base_shares": [0.1, 0.3], "guard": 0.1}],
    )
    (method,) = config.methods
    points = method.operating_points()
    assert [p.label for p in points] == ["base_share=0.1", "base_share=0.3"]
    assert all(p.settings["guard"] == 0.1 and p.gamma is None for p in points)
    tuning, heldout = load_prompts("builtin:tuning"), load_prompts("builtin:heldout")
    assert len(tuning) == len(heldout) == 12
    assert not {p.id for p in tuning} & {p.id for p in heldout}
    assert {p.id for p in tuning} | {p.id for p in heldout} == {p.id for p in load_prompts()}
    with pytest.raises(ValueError, match="has none"):
        make_config(tiny_pair, tmp_path, methods=[{"router": "aligned", "base_shares": [0.2]}])


def test_a_point_the_pair_refuses_stops_the_sweep_before_generating(
    tiny_cross_pair: TinyPair, cross_engine: BacoEngine, tmp_path: Path
) -> None:
    """A setting past the engine's limits (stop strings longer than its max_stop_chars): the
    sweep says so up front."""
    from baco_integrations.evaluation.sweep.errors import SweepConfigError

    config = make_config(
        tiny_cross_pair,
        tmp_path,
        methods=[
            {"name": "aligned T", "router": "aligned", "temperatures": [1.0]},
            {"name": "long stop", "router": "P", "gammas": [0.3], "stop": ["x" * 10_001]},
        ],
    )
    counting = CountingEngine(cross_engine)
    with pytest.raises(SweepConfigError, match="method 'long stop'.*stop"):
        run_sweep(config, engine=counting, embedder=HashEmbedder(), progress=False)
    assert counting.calls == 0
