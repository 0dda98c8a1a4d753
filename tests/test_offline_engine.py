"""``load_offline_engine()`` (issue 26): the offline pair as an engine in one call.

Fast tests stand the tiny pair in for the converted pair (``offline.converted_pair`` is
replaced: nothing is installed, converted or downloaded). The slow test loads the real pair
when ``python -m baco_integrations.offline`` has prepared the default cache (it never
installs or converts), like the other real-pair tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import baco_integrations
from baco_integrations import BacoEngine, EngineLimits, offline
from baco_integrations.testing import TinyPair


@pytest.fixture
def pair_calls(monkeypatch: pytest.MonkeyPatch, tiny_pair: TinyPair) -> list[dict[str, Any]]:
    """``converted_pair``'s arguments; it returns the tiny pair's folders."""
    calls: list[dict[str, Any]] = []

    def converted_pair(**kwargs: Any) -> offline.ConvertedPair:
        calls.append(kwargs)
        return offline.ConvertedPair(Path(tiny_pair.base_dir), Path(tiny_pair.aligned_dir))

    monkeypatch.setattr(offline, "converted_pair", converted_pair)
    return calls


def test_exported_from_the_package() -> None:
    assert baco_integrations.load_offline_engine is offline.load_offline_engine
    assert "load_offline_engine" in baco_integrations.__all__
    assert "load_offline_engine" in offline.__all__


def test_loads_the_converted_pair_on_the_auto_device(
    pair_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    engine = offline.load_offline_engine()
    try:
        assert pair_calls == [{"cache_dir": None, "install": True, "convert": True}]
        assert isinstance(engine, BacoEngine)
        for model in (engine.base_model, engine.aligned_model):
            parameter = next(model.parameters())
            assert (parameter.device.type, parameter.dtype) == ("cpu", torch.float32)
        (outputs,) = engine.generate("Hi", max_new_tokens=3, seed=0)
        assert len(outputs) == 1 and outputs[0].num_tokens <= 3
    finally:
        engine.shutdown()


def test_options_reach_converted_pair_and_the_engine(
    pair_calls: list[dict[str, Any]], tmp_path: Path
) -> None:
    limits = EngineLimits(max_live_rows=8, max_waiting=2)
    engine = offline.load_offline_engine(
        device="cpu",
        dtype="bfloat16",
        cache_dir=tmp_path,
        install=False,
        convert=False,
        limits=limits,
    )
    try:
        assert pair_calls == [{"cache_dir": tmp_path, "install": False, "convert": False}]
        assert engine.limits == limits
        assert next(engine.aligned_model.parameters()).dtype == torch.bfloat16
    finally:
        engine.shutdown()


def test_a_bad_device_fails_before_the_pair_is_prepared(
    pair_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='cuda': CUDA is not available here"):
        offline.load_offline_engine(device="cuda")
    with pytest.raises(ValueError, match="device='gpu' is not a torch device"):
        offline.load_offline_engine(device="gpu")
    assert pair_calls == []  # nothing installed or converted for a call that cannot load


def test_a_missing_pair_names_the_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With ``install=False`` an empty cache is a FileNotFoundError naming what to run (the
    pip command), not a download."""

    def no_pip(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"pip ran: {args}")

    monkeypatch.setattr(offline.subprocess, "run", no_pip)

    def not_installed() -> Any:
        raise ImportError(f"no module named {offline.BASE_MODULE}")

    monkeypatch.setattr(offline, "_import_base", not_installed)
    with pytest.raises(FileNotFoundError, match=f"{offline.BASE_PACKAGE} is not installed"):
        offline.load_offline_engine(cache_dir=tmp_path / "empty", install=False, device="cpu")


# -------------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_the_real_offline_pair_in_one_call() -> None:
    try:
        engine = offline.load_offline_engine(device="cpu", install=False, convert=False)
    except (FileNotFoundError, offline.IntegrityError) as exc:
        pytest.skip(f"offline pair not prepared: {exc}")
    try:
        assert type(engine.base_model).__name__ == "Gemma3ForCausalLM"
        assert type(engine.aligned_model).__name__ == "LlamaForCausalLM"
        (outputs,) = engine.generate(
            "Name a colour.", router="P-PUNC", gamma=0.3, max_new_tokens=8, seed=0
        )
        (sample,) = outputs
        assert sample.text.strip() and 0.0 <= sample.base_fraction <= 1.0
    finally:
        engine.shutdown()


def test_serve_refuses_gguf_file_options_for_the_offline_pair(
    pair_calls: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """The offline pair is the converted checkpoints: a GGUF file name has nothing to name."""
    pytest.importorskip("uvicorn")
    from baco_integrations.cli import EXIT_USAGE, main

    assert main(["serve", "--base-gguf-file", "m.gguf"]) == EXIT_USAGE
    assert "--base-gguf-file and --aligned-gguf-file need --base and --aligned" in (
        capsys.readouterr().err
    )
    assert pair_calls == []
