"""The sweep's files: no write through a link, one sweep per directory, stored records checked.

Every sweep here runs on stand-in models (conftest: a fake engine, a hashing embedder, a length
"quality"), so the tests exercise the files, not the models.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from baco_integrations.cli import main as cli_main
from baco_integrations.evaluation.sweep import (
    GENERATIONS_FILE,
    LOCK_FILE,
    GenerationStore,
    StoreRecordError,
    SweepConfig,
    SweepError,
    SweepLockedError,
    SweepResult,
    UnsafeOutputError,
    lock_output_dir,
    parse_config,
    run_sweep,
)

OUTPUT_FILES = [
    "sweep_config.json",
    GENERATIONS_FILE,
    "metrics.csv",
    "metrics.json",
    "coverage_dominance.md",
    "coverage_dominance.json",
    "plot_distinct_2__logprob.png",
    "plot_vendi__logprob.png",
    LOCK_FILE,
]


def sweep_data(root: Path, prompt_file: Path) -> dict[str, Any]:
    return {
        "base": "b",
        "aligned": "a",
        "prompts": str(prompt_file),
        "n": 2,
        "max_new_tokens": 4,
        "output_dir": str(root / "out"),
        "methods": [
            {"name": "BACO", "router": "P-PUNC", "gammas": [0.2, 0.6]},
            {"name": "aligned T", "router": "aligned", "temperatures": [0.7, 1.3]},
        ],
        "metrics": {"diversity": ["distinct_2", "vendi"]},
    }


@pytest.fixture
def config(tmp_path: Path, prompt_file: Path) -> SweepConfig:
    return parse_config(sweep_data(tmp_path, prompt_file))


@pytest.fixture
def run(
    fake_engine: Any, hash_embedder: Any, length_scorer: Any
) -> Any:  # a callable: run(config, **options) -> SweepResult
    def run(config: SweepConfig, **options: Any) -> SweepResult:
        return run_sweep(
            config,
            engine=fake_engine,
            embedder=hash_embedder,
            quality_scorers={"logprob": length_scorer},
            progress=False,
            **options,
        )

    return run


def test_the_stand_in_sweep_writes_every_file(config: SweepConfig, run: Any) -> None:
    result = run(config)
    assert result.complete and result.generated == 8
    assert sorted(p.name for p in result.output_dir.iterdir()) == sorted(OUTPUT_FILES)
    assert (result.output_dir / LOCK_FILE).read_text() == f"{os.getpid()}\n"


# --------------------------------------------------------------------------- links


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
@pytest.mark.parametrize("name", OUTPUT_FILES)
def test_a_link_planted_in_the_output_dir_is_refused(
    config: SweepConfig, run: Any, tmp_path: Path, name: str, dangling: bool
) -> None:
    out = Path(config.output_dir)
    out.mkdir()
    victim = tmp_path / "victim.txt"
    if not dangling:
        victim.write_text("precious\n")
    (out / name).symlink_to(victim)
    with pytest.raises(UnsafeOutputError, match="is a symbolic link") as info:
        run(config)
    assert str(out / name) in str(info.value)
    # The link's target is untouched (or still absent), and the link is still a link.
    if dangling:
        assert not victim.exists()
    else:
        assert victim.read_text() == "precious\n"
    assert (out / name).is_symlink()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_linked_output_dir_is_refused(config: SweepConfig, run: Any, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Path(config.output_dir).symlink_to(elsewhere)
    with pytest.raises(UnsafeOutputError, match="out is a symbolic link"):
        run(config)
    assert list(elsewhere.iterdir()) == []


def test_an_output_dir_that_is_a_file_is_refused(config: SweepConfig, run: Any) -> None:
    Path(config.output_dir).write_text("not a folder\n")
    with pytest.raises(UnsafeOutputError, match="out is not a directory"):
        run(config)
    assert Path(config.output_dir).read_text() == "not a folder\n"


def test_a_hard_linked_store_is_not_appended_to(
    config: SweepConfig, run: Any, tmp_path: Path
) -> None:
    out = Path(config.output_dir)
    run(config, max_batches=1)
    victim = tmp_path / "victim.jsonl"
    os.link(out / GENERATIONS_FILE, victim)
    before = victim.read_bytes()
    with pytest.raises(UnsafeOutputError, match="has other hard links"):
        run(config)
    assert victim.read_bytes() == before


def test_no_resume_replaces_the_store_with_a_new_file(config: SweepConfig, run: Any) -> None:
    out = Path(config.output_dir)
    run(config, max_batches=2)
    inode = (out / GENERATIONS_FILE).stat().st_ino
    run(config, resume=False, max_batches=1)
    assert (out / GENERATIONS_FILE).stat().st_ino != inode
    assert len(GenerationStore(out / GENERATIONS_FILE)) == 1


# --------------------------------------------------------------------------- the lock


def test_a_second_sweep_on_a_locked_dir_stops_at_once(config: SweepConfig, run: Any) -> None:
    out = Path(config.output_dir)
    out.mkdir()
    with lock_output_dir(out):
        with pytest.raises(SweepLockedError) as info:
            run(config)
        message = str(info.value)
        assert f"another sweep is running in {out} (process {os.getpid()})" in message
        assert "another output_dir" in message
        # It stopped before writing anything.
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    assert run(config).complete  # once the first lets go


HOLD_LOCK = """
import sys
from pathlib import Path
from baco_integrations.evaluation.sweep import lock_output_dir
with lock_output_dir(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_sweep_in_another_process_holds_the_dir(config: SweepConfig, run: Any) -> None:
    out = Path(config.output_dir)
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(SweepLockedError, match=f"process {holder.pid}"):
            run(config)
    finally:
        holder.kill()  # a killed holder leaves its lock file, but not its lock
        holder.wait()
    assert run(config).complete


def test_wait_for_lock_waits_for_the_holder(config: SweepConfig) -> None:
    out = Path(config.output_dir)
    out.mkdir()
    waiting = threading.Event()
    acquired: list[bool] = []

    def second() -> None:
        with lock_output_dir(out, wait=True, on_wait=waiting.set):
            acquired.append(True)

    with lock_output_dir(out):
        thread = threading.Thread(target=second)
        thread.start()
        assert waiting.wait(timeout=60)  # a guard against a hang, not a timing assumption
        assert acquired == []  # it found the lock taken and waits in flock
    thread.join()
    assert acquired == [True]


# --------------------------------------------------------------------------- stored records


def good_record(prompt_id: str = "cat") -> dict[str, Any]:
    sample = {
        "text": "Tom",
        "num_tokens": 2,
        "base_fraction": 0.5,
        "finish_reason": "stop",
        "token_ids": [7, 8],
        "sources": "ab",
    }
    return {
        "method": "BACO",
        "point": "gamma=0.2",
        "prompt_id": prompt_id,
        "prompt": "Name a cat.",
        "settings": {"n": 2},
        "samples": [sample, dict(sample)],
    }


def spoil(path: str, value: Any) -> dict[str, Any]:
    """``good_record`` with the field at ``path`` (``samples.0.text``) set, or removed."""
    record = good_record()
    *parents, last = path.split(".")
    target: Any = record
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    if value is None:
        del target[last]
    else:
        target[last] = value
    return record


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        pytest.param(spoil("prompt", None), "prompt: Field required", id="missing-field"),
        pytest.param(spoil("prompt_id", 3), "prompt_id: Input should be a valid string", id="id"),
        pytest.param(spoil("samples", []), "samples: List should have at least 1", id="empty"),
        pytest.param(
            spoil("samples.1.num_tokens", "2"), r"samples\[1\]\.num_tokens", id="token-count"
        ),
        pytest.param(spoil("samples.0.sources", "ax"), r"samples\[0\]\.sources", id="sources"),
        pytest.param(
            spoil("samples.0.token_ids", [1, 2, 3]), "but there are 3 token_ids", id="lengths"
        ),
        pytest.param(spoil("samples.0.base_fraction", 1.5), "base_fraction", id="fraction"),
        pytest.param(spoil("settings.n", 3), "settings.n is 3 but 2 samples", id="n"),
        pytest.param(["a", "list"], "expected a JSON object, got list", id="not-an-object"),
    ],
)
@pytest.mark.parametrize("where", ["middle", "last"])
def test_a_record_that_is_json_but_wrong_names_file_and_line(
    tmp_path: Path, line: Any, problem: str, where: str
) -> None:
    path = tmp_path / GENERATIONS_FILE
    good = json.dumps(good_record("sea"))
    rows = [good, json.dumps(line), good] if where == "middle" else [good, good, json.dumps(line)]
    path.write_text("\n".join(rows) + "\n")
    # Valid JSON is never a torn write, so even on the last line it is an error, not dropped.
    with pytest.raises(StoreRecordError, match=f"line {rows.index(json.dumps(line)) + 1}: .*"):
        GenerationStore(path)
    with pytest.raises(ValueError, match=problem) as info:
        GenerationStore(path)
    assert str(info.value).startswith(f"{path}, line ")
    assert isinstance(info.value, SweepError)


def test_a_bad_record_stops_the_sweep_and_the_cli(
    tmp_path: Path, prompt_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = sweep_data(tmp_path, prompt_file)
    out = Path(data["output_dir"])
    out.mkdir()
    (out / GENERATIONS_FILE).write_text(
        json.dumps(good_record()) + "\n" + json.dumps(spoil("samples.0.text", 5)) + "\n"
    )
    (tmp_path / "sweep.json").write_text(json.dumps(data))
    # Exit status 2, before any model loads (the models "a" and "b" do not exist).
    assert cli_main(["sweep", str(tmp_path / "sweep.json"), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert f"{out / GENERATIONS_FILE}, line 2: not a generation record: samples[0].text" in error
