"""``baco`` command line, run in-process through ``main([...])`` on the tiny pair."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from baco_integrations.cli import EXIT_INCOMPLETE, EXIT_USAGE, main
from baco_integrations.testing import TinyPair


def pair_args(pair: TinyPair) -> list[str]:
    return ["--base", str(pair.base_dir), "--aligned", str(pair.aligned_dir)]


def test_generate_prints_samples_with_base_fraction(
    tiny_pair: TinyPair, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "generate",
        *pair_args(tiny_pair),
        "--router",
        "P-PUNC",
        "--gamma",
        "0.3",
        "-n",
        "3",
        "--max-new-tokens",
        "5",
        "--seed",
        "1",
        "Suggest a name for a cat.",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    headers = [line for line in out.splitlines() if line.startswith("--- sample")]
    assert len(headers) == 3
    assert all("base fraction" in h and "tokens" in h for h in headers)
    assert headers[0].startswith("--- sample 1/3 | base fraction ")
    # Same seed, same samples.
    assert main(argv) == 0
    assert capsys.readouterr().out == out


def test_generate_json_and_stdin(
    tiny_pair: TinyPair, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("Write a line about the sea."))
    argv = [
        "generate",
        *pair_args(tiny_pair),
        "--router",
        "base",
        "-n",
        "2",
        "--max-new-tokens",
        "4",
        "--json",
        "-",
    ]
    assert main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["sample"] for r in rows] == [1, 2]
    for row in rows:
        assert set(row) == {"sample", "text", "base_fraction", "num_tokens", "finish_reason"}
        assert row["num_tokens"] == 0 or row["base_fraction"] == 1.0


def test_generate_takes_base_share_and_guard(
    tiny_pair: TinyPair, capsys: pytest.CaptureFixture[str]
) -> None:
    from baco_integrations import BacoEngine

    argv = [
        "generate",
        *pair_args(tiny_pair),
        "--base-share",
        "0.5",
        "--guard",
        "0.01",
        "--max-new-tokens",
        "12",
        "--seed",
        "3",
        "--json",
        "Suggest a name for a cat.",
    ]
    assert main(argv) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    engine = BacoEngine.from_pretrained(tiny_pair.base_dir, tiny_pair.aligned_dir)
    ((expected,),) = engine.generate(
        "Suggest a name for a cat.", base_share=0.5, guard=0.01, max_new_tokens=12, seed=3
    )
    assert (row["text"], row["base_fraction"]) == (expected.text, expected.base_fraction)


@pytest.mark.parametrize(
    ("options", "message"),
    [(["--gamma", "1.5"], "gamma=1.5 is out of range"), (["--guard", "2"], "guard")],
)
def test_generate_rejects_bad_settings_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    # The model paths do not exist: the error must come from validation, not loading.
    missing = str(tmp_path / "missing")
    argv = ["generate", "--base", missing, "--aligned", missing, *options, "hi"]
    assert main(argv) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_sweep_resumes_and_writes_outputs(
    tiny_pair: TinyPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "prompts.jsonl").write_text(
        '{"id": "a", "prompt": "Name a colour."}\n{"id": "b", "prompt": "Name a fruit."}\n'
    )
    # Lexical metrics only: no sentence embedder to load in a quick CLI test.
    (tmp_path / "sweep.toml").write_text(
        f"""
base = "{tiny_pair.base_dir}"
aligned = "{tiny_pair.aligned_dir}"
prompts = "prompts.jsonl"
n = 2
max_new_tokens = 4
output_dir = "out"

[[methods]]
router = "P-PUNC"
gammas = [0.2, 0.8]

[[methods]]
name = "aligned"
router = "aligned"

[metrics]
diversity = ["distinct_1", "self_rouge_l"]
plot_planes = [["self_rouge_l", "logprob"]]
"""
    )
    config = str(tmp_path / "sweep.toml")
    assert main(["sweep", config, "--max-batches", "2", "--no-progress"]) == EXIT_INCOMPLETE
    assert "run again to continue" in capsys.readouterr().out
    assert len((tmp_path / "out" / "generations.jsonl").read_text().splitlines()) == 2

    assert main(["sweep", config, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "4 batches generated, 2 resumed" in out
    assert "P-PUNC: lexical" in out and "overall" in out
    assert len((tmp_path / "out" / "generations.jsonl").read_text().splitlines()) == 6
    for name in ("metrics.csv", "metrics.json", "coverage_dominance.md", "coverage_dominance.json"):
        assert (tmp_path / "out" / name).is_file()
    assert [p.name for p in (tmp_path / "out").glob("plot_*.png")] == [
        "plot_self_rouge_l__logprob.png"
    ]

    # Nothing left to generate: the models are not loaded for generation, the judge is loaded
    # from the aligned path, and the numbers are those of the run that reused the engine's.
    metrics = (tmp_path / "out" / "metrics.json").read_text()
    assert main(["sweep", config, "--no-progress"]) == 0
    assert "0 batches generated, 6 resumed" in capsys.readouterr().out
    assert (tmp_path / "out" / "metrics.json").read_text() == metrics

    # --no-resume starts over.
    assert main(["sweep", config, "--no-resume", "--max-batches", "1", "--no-progress"]) == 3
    assert len((tmp_path / "out" / "generations.jsonl").read_text().splitlines()) == 1


def test_sweep_example_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--example"]) == 0
    example = tomllib.loads(capsys.readouterr().out)
    assert example["methods"][0]["router"] == "P-PUNC"

    bad = tmp_path / "bad.toml"
    bad.write_text(
        'base = "b"\naligned = "a"\noutput_dir = "o"\n[[methods]]\nrouter = "H"\nn = 3\n'
    )
    assert main(["sweep", str(bad)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "methods[0]" in err and "'n' is set for the whole sweep" in err

    assert main(["sweep"]) == EXIT_USAGE
    assert "needs CONFIG" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "hi"])  # --base / --aligned are required: argparse exits


def test_sweep_wait_waits_for_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --wait a locked output folder stops the sweep at once; with it, the lock is
    waited for (here: taken, since nobody else holds it)."""
    from baco_integrations.evaluation import sweep

    seen: list[bool] = []

    def fake_run_sweep(config: object, **kwargs: object) -> object:
        seen.append(bool(kwargs["wait_for_lock"]))
        raise sweep.SweepLockedError("held by another sweep")

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    config = tmp_path / "sweep.toml"
    config.write_text('base = "b"\naligned = "a"\noutput_dir = "o"\n[[methods]]\nrouter = "H"\n')
    assert main(["sweep", str(config)]) == EXIT_USAGE
    assert "held by another sweep" in capsys.readouterr().err
    assert main(["sweep", str(config), "--wait"]) == EXIT_USAGE
    assert seen == [False, True]


# ------------------------------------------------------------ text that is not UTF-8 (issue 13)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["a\udcffb"], "PROMPT is not valid UTF-8 (byte 0xff at byte 1)"),
        (["--system-prompt", "\udce9t\udce9", "hi"], "--system-prompt is not valid UTF-8"),
        (["--stop", "ok", "--stop", "x\udc80", "hi"], "--stop is not valid UTF-8 (byte 0x80"),
        (["-n", "100000", "hi"], "n=100000 is out of range: allowed values are 1..256"),
        (["--max-new-tokens", "1000000000", "hi"], "max_new_tokens=1000000000 is out of range"),
        (["--seed", str(2**70), "hi"], "seed=1180591620717411303424 is out of range"),
    ],
)
def test_generate_refuses_bad_text_and_sizes_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    # Python passes a non-UTF-8 argument with each bad byte as a lone surrogate
    # (surrogateescape); the models do not exist, so the error must come before loading.
    missing = str(tmp_path / "missing")
    assert main(["generate", "--base", missing, "--aligned", missing, *extra]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_generate_refuses_stdin_that_is_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    stdin = io.TextIOWrapper(io.BytesIO(b"caf\xe9 au lait"), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", stdin)
    missing = str(tmp_path / "missing")
    assert main(["generate", "--base", missing, "--aligned", missing, "-"]) == EXIT_USAGE
    assert "standard input is not valid UTF-8 (invalid continuation byte at byte 3)" in (
        capsys.readouterr().err
    )


def test_a_real_non_utf8_argument_is_a_usage_error_not_a_traceback(tmp_path: Path) -> None:
    """Through the real argv decoding of a child process."""
    import os
    import subprocess
    import sys

    missing = os.fsencode(tmp_path / "missing")
    argv = [sys.executable, "-m", "baco_integrations.cli", "generate"]
    result = subprocess.run(
        [*map(os.fsencode, argv), b"--base", missing, b"--aligned", missing, b"caf\xe9"],
        capture_output=True,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
        check=False,
    )
    assert result.returncode == EXIT_USAGE
    assert b"PROMPT is not valid UTF-8 (byte 0xe9 at byte 3)" in result.stderr
    assert b"Traceback" not in result.stderr
