"""The sweep's phases one at a time: plan, generate, score, report, on stand-in models."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from baco_integrations.evaluation.sweep import (
    GENERATIONS_FILE,
    GenerationStore,
    MetricsConfig,
    SweepConfig,
    batch_seed,
    parse_config,
)
from baco_integrations.evaluation.sweep.report import (
    coverage_markdown,
    metrics_csv_text,
    write_report,
)
from baco_integrations.evaluation.sweep.run import generate_batches, plan_sweep, score_sweep
from baco_integrations.evaluation.sweep.scoring import flatten_responses, metric_rows


def make_config(root: Path, prompt_file: Path, **overrides: Any) -> SweepConfig:
    data: dict[str, Any] = {
        "base": "b",
        "aligned": "a",
        "prompts": str(prompt_file),
        "n": 3,
        "max_new_tokens": 4,
        "seed": 5,
        "output_dir": str(root / "out"),
        "methods": [
            {"name": "BACO", "router": "P-PUNC", "gammas": [0.2, 0.6]},
            {"name": "base", "router": "base"},
        ],
        "metrics": {"diversity": ["distinct_1", "vendi"]},
    }
    return parse_config({**data, **overrides})


def test_plan_is_point_major_and_cut_to_max_prompts(tmp_path: Path, prompt_file: Path) -> None:
    plan = plan_sweep(make_config(tmp_path, prompt_file))
    assert [(pt.label, pr.id) for pt, pr in plan.work] == [
        ("gamma=0.2", "cat"),
        ("gamma=0.2", "sea"),
        ("gamma=0.6", "cat"),
        ("gamma=0.6", "sea"),
        ("default", "cat"),
        ("default", "sea"),
    ]
    short = plan_sweep(make_config(tmp_path, prompt_file, max_prompts=1))
    assert [pr.id for pr in short.prompts] == ["cat"] and len(short.work) == 3


def test_generate_stores_each_batch_with_its_seed_and_stops_at_max(
    tmp_path: Path, prompt_file: Path, fake_engine: Any
) -> None:
    config = make_config(tmp_path, prompt_file)
    plan = plan_sweep(config)
    store = GenerationStore(tmp_path / GENERATIONS_FILE)
    seen: list[tuple[str, str]] = []
    done = generate_batches(
        config,
        store,
        plan.work,
        fake_engine,
        max_batches=4,
        on_batch=lambda pt, pr: seen.append((pt.label, pr.id)),
    )
    assert done == 4 and len(store) == 4 and seen == [(p.label, q.id) for p, q in plan.work[:4]]
    first = fake_engine.calls[0]
    assert first["prompts"] == ["Name a cat."]
    assert (first["n"], first["max_new_tokens"], first["seed"]) == (3, 4, batch_seed(5, "cat"))
    assert (first["router"], first["gamma"]) == ("P-PUNC", 0.2)
    # What was stored is what a reload reads back, and validates.
    assert GenerationStore(tmp_path / GENERATIONS_FILE).records == store.records
    assert len(plan.missing(store)) == 2
    record = store.records[("BACO", "gamma=0.2", "cat")]
    assert record["settings"]["seed"] == batch_seed(5, "cat")
    assert [s["sources"] for s in record["samples"]] == ["aba", "abab", "ababa"]


def test_score_averages_within_then_over_prompts(
    tmp_path: Path, prompt_file: Path, fake_engine: Any, hash_embedder: Any, length_scorer: Any
) -> None:
    config = make_config(tmp_path, prompt_file)
    plan = plan_sweep(config)
    store = GenerationStore(tmp_path / GENERATIONS_FILE)
    generate_batches(config, store, plan.work, fake_engine)
    rows = score_sweep(
        config, plan, store, embedder=hash_embedder, quality_scorers={"logprob": length_scorer}
    )
    assert hash_embedder.calls == 1
    assert [(r["method"], r["point"]) for r in rows] == [
        ("BACO", "gamma=0.2"),
        ("BACO", "gamma=0.6"),
        ("base", "default"),
    ]
    for row, point_records in zip(rows, plan.records(store), strict=True):
        lengths = [[len(s["text"]) for s in r["samples"]] for r in point_records]
        assert row["logprob"] == pytest.approx(np.mean([np.mean(v) for v in lengths]))
        assert (row["prompts"], row["samples"]) == (2, 6)
        assert 1.0 <= row["vendi"] <= 3.0
    assert rows[0]["base_fraction"] == pytest.approx(np.mean([1 / 3, 2 / 4, 2 / 5]))
    assert rows[2]["gamma"] is None and rows[0]["gamma"] == 0.2


def test_metric_rows_slice_the_flat_arrays_per_point_and_prompt() -> None:
    sample = {"text": "a b", "num_tokens": 2, "base_fraction": 0.0}
    records = [
        [{"prompt": "p", "samples": [sample] * 2}, {"prompt": "q", "samples": [sample] * 2}],
        [{"prompt": "p", "samples": [sample] * 2}, {"prompt": "q", "samples": [sample] * 2}],
    ]
    assert (
        flatten_responses(records)
        == [("p", "a b")] * 2 + [("q", "a b")] * 2 + [("p", "a b")] * 2 + [("q", "a b")] * 2
    )
    points = make_config(Path("/x"), Path("builtin")).operating_points()[:2]
    metrics = MetricsConfig(diversity=["distinct_1"], quality=["logprob"])
    # Point 0: prompt means 0.5 and 2.5 -> 1.5; point 1: a NaN is left out of its prompt's mean.
    quality = {"logprob": np.array([0.0, 1.0, 2.0, 3.0, 4.0, math.nan, 6.0, 6.0])}
    rows = metric_rows(points, records, metrics, quality, None)
    assert [r["logprob"] for r in rows] == [1.5, 5.0]


def test_report_writes_every_file_and_nan_as_empty(tmp_path: Path) -> None:
    metrics = MetricsConfig(diversity=["distinct_1"], quality=["logprob"])
    rows = [
        {"method": "a", "point": "p1", "value": 0.1, "distinct_1": 0.2, "logprob": -1.0},
        {"method": "a", "point": "p2", "value": 0.5, "distinct_1": 0.9, "logprob": math.nan},
        {"method": "b", "point": "p1", "value": 1.0, "distinct_1": 0.5, "logprob": -2.0},
    ]
    planes, groups, files = write_report(rows, metrics, ["a", "b"], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "coverage_dominance.json",
        "coverage_dominance.md",
        "metrics.csv",
        "metrics.json",
        "plot_distinct_1__logprob.png",
    ]
    assert set(files) == {
        "metrics_csv",
        "metrics_json",
        "coverage_md",
        "coverage_json",
        "plot:distinct_1/logprob",
    }
    table = list(csv.DictReader((tmp_path / "metrics.csv").open(newline="")))
    assert table[1]["logprob"] == "" and table[0]["logprob"] == "-1.0"
    assert metrics_csv_text(rows).splitlines()[0] == "method,point,value,distinct_1,logprob"
    assert json.loads((tmp_path / "metrics.json").read_text())[1]["logprob"] is None
    coverage = json.loads((tmp_path / "coverage_dominance.json").read_text())
    assert coverage["dropped_points"] == {"distinct_1/logprob": ["a p2"]}
    assert set(coverage["groups"]) == set(groups) == {"lexical", "overall"}
    markdown = coverage_markdown(groups, planes, ["a", "b"], {"distinct_1/logprob": ["a p2"]})
    assert (tmp_path / "coverage_dominance.md").read_text() == markdown
    assert "- distinct_1/logprob: a p2" in markdown
    assert files["plot:distinct_1/logprob"].read_bytes()[:4] == b"\x89PNG"
