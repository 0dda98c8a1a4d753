"""The device default (issue 26): ``auto`` is CUDA, else MPS, else CPU, resolved in one place
(``loading.choose_device``) and used by ``baco generate``, ``baco serve`` and the loader.

No GPU is needed: ``torch.cuda.is_available`` (and MPS) are monkeypatched to test both ways.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from baco_integrations import loading
from baco_integrations.cli import EXIT_USAGE, build_parser, main
from baco_integrations.loading import DeviceChoice, choose_device, load_causal_lm, resolve_device
from baco_integrations.testing import TinyPair


def fake_accelerators(monkeypatch: pytest.MonkeyPatch, *, cuda: int = 0, mps: bool = False) -> None:
    """This machine as one with ``cuda`` visible GPUs and MPS or not."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    monkeypatch.setattr(loading, "_mps_available", lambda: mps)


@pytest.mark.parametrize(
    ("cuda", "mps", "device", "reason"),
    [
        (2, True, "cuda:0", "auto: CUDA available, 2 GPU(s) visible"),
        (1, False, "cuda:0", "auto: CUDA available, 1 GPU(s) visible"),
        (0, True, "mps", "auto: MPS available"),
        (0, False, "cpu", "auto: no CUDA or MPS device"),
    ],
)
def test_auto_prefers_cuda_then_mps_then_cpu(
    monkeypatch: pytest.MonkeyPatch, cuda: int, mps: bool, device: str, reason: str
) -> None:
    fake_accelerators(monkeypatch, cuda=cuda, mps=mps)
    assert choose_device() == choose_device("auto") == DeviceChoice(device, reason)
    assert str(choose_device("auto")) == f"device {device} ({reason})"
    assert resolve_device("auto") == device
    # dtype "auto" follows the chosen device: bfloat16 on CUDA only.
    expected = torch.bfloat16 if device.startswith("cuda") else torch.float32
    assert loading.resolve_dtype("auto", resolve_device("auto")) == expected


def test_auto_on_this_machine_is_a_real_device() -> None:
    device = resolve_device("auto")
    assert device in ("cuda:0", "mps", "cpu")
    if not torch.cuda.is_available():
        assert device != "cuda:0"


def test_explicit_devices_are_kept_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_accelerators(monkeypatch, cuda=2)
    for given in ("cpu", "cuda", "cuda:1", torch.device("cuda:0"), "meta"):
        assert choose_device(given) == DeviceChoice(given, "given by device")
    assert choose_device("cuda:1", name="--device").reason == "given by --device"
    assert resolve_device(None) is None  # "leave the model where it is"
    with pytest.raises(ValueError, match=r"--device cuda:2: only 2 CUDA device\(s\) are visible"):
        choose_device("cuda:2", name="--device")
    with pytest.raises(ValueError, match="mps.*MPS is not available here"):
        choose_device("mps")


def test_an_absent_accelerator_is_refused_before_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_accelerators(monkeypatch, cuda=0, mps=False)
    with pytest.raises(ValueError, match=r"device='cuda:1': CUDA is not available here"):
        choose_device("cuda:1")
    with pytest.raises(ValueError, match="--device cuda: CUDA is not available"):
        choose_device("cuda", name="--device")
    # The loader checks too, before it reads anything (this path does not exist).
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_causal_lm("/nonexistent/model", device="cuda")


@pytest.mark.parametrize("bad", ["gpu", "CUDA", "cuda:x", "", "auto:0"])
def test_bad_values_name_the_option(bad: str) -> None:
    with pytest.raises(ValueError, match=f"device={bad!r} is not a torch device; use 'auto'"):
        choose_device(bad)
    with pytest.raises(ValueError, match=f"--device {bad} is not a torch device"):
        choose_device(bad, name="--device")


def test_the_loader_takes_auto(tiny_pair: TinyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_accelerators(monkeypatch)  # whatever this machine has: the test must load here
    model, _ = load_causal_lm(tiny_pair.aligned_dir, device="auto")
    assert next(model.parameters()).device == torch.device("cpu")
    assert next(model.parameters()).dtype == torch.float32


# ----------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize(
    "command", [["generate", "--base", "b", "--aligned", "a", "hi"], ["serve"]]
)
def test_the_cli_default_is_auto(command: list[str]) -> None:
    args = build_parser().parse_args(command)
    assert args.device == "auto"
    assert args.dtype == "auto"


def test_the_help_says_auto(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "auto (default: CUDA if available, else MPS, else CPU)" in help_text
    assert "default: cpu" not in help_text


class Stop(Exception):
    """Raised by a stand-in loader once it has recorded its arguments."""


@pytest.fixture
def generate_loads(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """``BacoEngine.from_pretrained`` as ``baco generate`` (or serve) calls it, without
    loading."""
    from baco_integrations import BacoEngine

    calls: list[dict[str, Any]] = []

    def from_pretrained(base: str, aligned: str, **kwargs: Any) -> None:
        calls.append(kwargs)
        raise Stop

    monkeypatch.setattr(BacoEngine, "from_pretrained", from_pretrained)
    return calls


def test_generate_says_which_device_it_chose(
    tiny_pair: TinyPair, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On this machine (no GPU) the default resolves to cpu, and the line says so; the real
    tiny pair is loaded and decodes there."""
    fake_accelerators(monkeypatch)
    argv = ["generate", "--base", str(tiny_pair.base_dir), "--aligned", str(tiny_pair.aligned_dir)]
    assert main([*argv, "--max-new-tokens", "2", "--seed", "0", "hi"]) == 0
    captured = capsys.readouterr()
    assert "baco: device cpu (auto: no CUDA or MPS device), dtype float32\n" in captured.err
    assert captured.out.startswith("--- sample 1/1")


def test_generate_on_a_gpu_machine_loads_on_cuda_in_bfloat16(
    generate_loads: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_accelerators(monkeypatch, cuda=1, mps=True)
    with pytest.raises(Stop):
        main(["generate", "--base", "b", "--aligned", "a", "hi"])
    assert generate_loads[0]["device"] == "cuda:0" and generate_loads[0]["dtype"] == "auto"
    err = capsys.readouterr().err
    assert "baco: device cuda:0 (auto: CUDA available, 1 GPU(s) visible), dtype bfloat16" in err
    # An explicit device wins over auto.
    with pytest.raises(Stop):
        main(["generate", "--base", "b", "--aligned", "a", "--device", "cpu", "hi"])
    assert generate_loads[1]["device"] == "cpu"
    assert "baco: device cpu (given by --device), dtype float32" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("device", "says"),
    [
        ("gpu", "--device gpu is not a torch device; use 'auto'"),
        ("cuda:1", "--device cuda:1: CUDA is not available here"),
    ],
)
@pytest.mark.parametrize("command", ["generate", "serve"])
def test_a_bad_device_is_a_usage_error_before_loading(
    generate_loads: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    device: str,
    says: str,
) -> None:
    fake_accelerators(monkeypatch)
    offline_loads: list[Any] = []
    from baco_integrations import offline

    monkeypatch.setattr(offline, "converted_pair", lambda **kw: offline_loads.append(kw))
    argv = [command, "--device", device]
    if command == "generate":
        argv += ["--base", "b", "--aligned", "a", "hi"]
    assert main(argv) == EXIT_USAGE
    assert f"baco: error: {says}" in capsys.readouterr().err
    assert generate_loads == [] and offline_loads == []


@pytest.fixture
def offline_pair_here(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The offline pair's folders without installing or converting anything."""
    from baco_integrations import offline

    pair = offline.ConvertedPair(tmp_path / "base", tmp_path / "aligned")
    monkeypatch.setattr(offline, "converted_pair", lambda **kwargs: pair)


@pytest.mark.parametrize(
    ("cuda", "line", "device"),
    [
        (0, "baco: device cpu (auto: no CUDA or MPS device), dtype float32", "cpu"),
        (
            2,
            "baco: device cuda:0 (auto: CUDA available, 2 GPU(s) visible), dtype bfloat16",
            "cuda:0",
        ),
    ],
)
def test_serve_says_which_device_it_chose(
    offline_pair_here: None,
    generate_loads: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    cuda: int,
    line: str,
    device: str,
) -> None:
    pytest.importorskip("uvicorn")
    fake_accelerators(monkeypatch, cuda=cuda)
    with pytest.raises(Stop):
        main(["serve"])
    (kwargs,) = generate_loads
    assert (kwargs["device"], kwargs["dtype"]) == (device, "auto")
    err = capsys.readouterr().err.splitlines()
    assert line in err
    assert err.index(line) < err.index(
        "baco: preparing the offline pair (installed once, then cached) ..."
    )


def test_serve_over_endpoints_chooses_no_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from baco_integrations import cli

    chosen: list[Any] = []
    monkeypatch.setattr(cli, "_choose_device", chosen.append)
    argv = ["serve", "--base-url", "http://127.0.0.1:1/v1", "--base-tokenizer", "t"]
    assert main(argv) == EXIT_USAGE  # --aligned-url missing; no device was resolved for it
    assert chosen == []


def test_ray_on_a_cluster_leaves_an_explicit_device_to_the_replicas(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from baco_integrations import cli

    fake_accelerators(monkeypatch)  # this machine has no GPU; the cluster's nodes may
    args = build_parser().parse_args(["serve", "--ray", "--ray-address", "ray://head:10001"])
    cli._choose_device(args.__class__(**{**vars(args), "device": "cuda"}))
    assert "baco: device cuda (given by --device, for the cluster's replicas)" in (
        capsys.readouterr().err
    )
    cli._choose_device(args)  # auto is resolved here, where it runs
    assert args.device == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        cli._choose_device(build_parser().parse_args(["serve", "--ray", "--device", "cuda"]))
