"""``baco serve``: options checked before any model loads, the offline pair by default (a
stand-in here; the real pair in the slow test), and what it hands to the server."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from typing import Any

import openai
import pytest

from baco_integrations import offline
from baco_integrations.cli import EXIT_USAGE, build_parser, main
from baco_integrations.server import API_KEY_ENV, ServerConfig
from baco_integrations.server import run as server_run
from baco_integrations.server.run import OFFLINE_MODEL_NAME, engine_from_args
from baco_integrations.server.testing import running_server
from baco_integrations.testing import HANG_GUARD_S, TinyPair


class Served:
    """What ``serve`` was given, instead of serving it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ServerConfig]] = []

    def __call__(self, engine: Any, config: ServerConfig) -> None:
        self.calls.append((engine, config))
        engine.scheduler.shutdown()

    @property
    def only(self) -> tuple[Any, ServerConfig]:
        (call,) = self.calls
        return call


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Served:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    spy = Served()
    monkeypatch.setattr(server_run, "serve", spy)
    return spy


@pytest.fixture
def offline_calls(monkeypatch: pytest.MonkeyPatch, tiny_pair: TinyPair) -> list[dict[str, Any]]:
    """The offline pair's loader, standing in the tiny pair (no install, no conversion)."""
    calls: list[dict[str, Any]] = []

    def converted_pair(**kwargs: Any) -> offline.ConvertedPair:
        calls.append(kwargs)
        return offline.ConvertedPair(Path(tiny_pair.base_dir), Path(tiny_pair.aligned_dir))

    monkeypatch.setattr(offline, "converted_pair", converted_pair)
    return calls


def test_default_serves_the_offline_pair(
    served: Served, offline_calls: list[dict[str, Any]]
) -> None:
    assert main(["serve"]) == 0
    # Installs and converts if needed, like the quickstart.
    assert offline_calls == [{"cache_dir": None, "install": True, "convert": True}]
    engine, config = served.only
    assert config.model_name == OFFLINE_MODEL_NAME
    assert (config.host, config.port) == ("127.0.0.1", 8000)  # safe by default
    assert config.api_key is None and config.cors_origins == ()
    assert engine.model_names["aligned"].endswith("aligned")


def test_options(served: Served, tiny_pair: TinyPair, offline_calls: list[dict[str, Any]]) -> None:
    base, aligned = str(tiny_pair.base_dir), str(tiny_pair.aligned_dir)
    argv = ["serve", "--base", base, "--aligned", aligned, "--port", "0", "--api-key", "k"]
    argv += ["--max-n", "4", "--max-tokens", "100", "--default-max-tokens", "50"]
    argv += ["--cors-origin", "http://a.example", "--cors-origin", "http://b.example"]
    argv += ["--max-waiting", "3", "--max-live-rows", "64", "--shutdown-timeout", "5"]
    assert main(argv) == 0
    assert offline_calls == []
    engine, config = served.only
    assert config.model_name == f"baco:{base}+{aligned}"
    assert config.api_key is not None and config.api_key.get_secret_value() == "k"
    assert (config.port, config.max_n, config.max_tokens, config.default_max_tokens) == (
        0,
        4,
        100,
        50,
    )
    assert config.cors_origins == ("http://a.example", "http://b.example")
    assert config.shutdown_timeout_s == 5
    assert (engine.limits.max_waiting, engine.limits.max_live_rows) == (3, 64)


def test_api_key_from_the_environment(
    served: Served, offline_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert main(["serve", "--model-name", "mine"]) == 0
    _, config = served.only
    assert config.api_key is not None and config.api_key.get_secret_value() == "from-env"
    assert config.model_name == "mine"


_REMOTE = [
    "--base-url",
    "http://127.0.0.1:1/v1",
    "--aligned-url",
    "http://127.0.0.1:2/v1",
    "--base-tokenizer",
    "b",
    "--aligned-tokenizer",
    "a",
]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--base", "somewhere"], "give both --base and --aligned"),
        (["--port", "70000"], "port"),
        (["--max-n", "0"], "max_n"),
        (["--default-max-tokens", "9000"], "default_max_tokens=9000 is more than"),
        (["--shutdown-timeout", "-1"], "shutdown_timeout_s"),
        (["--base-url", "http://127.0.0.1:1/v1"], "needs --aligned-url, --base-tokenizer"),
        (
            [*_REMOTE, "--base", "b", "--aligned", "a"],
            "--base, --aligned load a pair here; not with --base-url",
        ),
        (["--base-tokenizer", "t"], "--base-tokenizer need --base-url and --aligned-url"),
        ([*_REMOTE, "--ray"], "--ray replicates a pair loaded here"),
    ],
)
def test_bad_options_fail_before_loading(
    served: Served,
    offline_calls: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    says: str,
) -> None:
    assert main(["serve", *argv]) == EXIT_USAGE
    assert says in capsys.readouterr().err
    assert offline_calls == [] and served.calls == []


def test_warns_when_exposed_without_a_key(
    served: Served, offline_calls: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--host", "0.0.0.0"]) == 0
    assert "without an API key" in capsys.readouterr().err
    assert main(["serve", "--host", "::1"]) == 0
    assert "without an API key" not in capsys.readouterr().err


def test_module_entry_point(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["baco_integrations.server", "--help"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module("baco_integrations.server", run_name="__main__")
    assert info.value.code == 0
    assert "usage: baco serve" in capsys.readouterr().out


@pytest.fixture(scope="module")
def real_pair() -> offline.ConvertedPair:
    try:
        return offline.converted_pair(install=False, convert=False)
    except (FileNotFoundError, offline.IntegrityError) as exc:
        pytest.skip(f"offline pair not prepared: {exc}")


@pytest.mark.slow
def test_serves_the_real_offline_pair(real_pair: offline.ConvertedPair) -> None:
    args = build_parser().parse_args(["serve"])
    engine, name = engine_from_args(args)
    config = ServerConfig(model_name=name, default_max_tokens=8)
    try:
        with (
            running_server(engine, config) as server,
            openai.OpenAI(
                base_url=server.base_url, api_key="none", max_retries=0, timeout=HANG_GUARD_S
            ) as client,
        ):
            reply = client.chat.completions.create(
                model=OFFLINE_MODEL_NAME,
                messages=[{"role": "user", "content": "Name a colour."}],
                seed=0,
                extra_body={"router": "P-PUNC", "gamma": 0.3},
            )
    finally:
        engine.scheduler.shutdown()
    (choice,) = reply.choices
    assert choice.message.content and choice.message.content.strip()
    assert 0.0 <= (choice.model_extra or {})["baco"]["base_fraction"] <= 1.0
    assert reply.usage is not None and reply.usage.completion_tokens <= 8
