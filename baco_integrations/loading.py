"""Loading a causal LM and its tokenizer: the one place that knows devices, dtypes, GGUF paths
and ``from_pretrained`` options. The engine, the evaluation sweep and the quality scorers use it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

__all__ = [
    "AUTO_DEVICE",
    "DeviceChoice",
    "choose_device",
    "load_causal_lm",
    "resolve_device",
    "resolve_dtype",
    "split_gguf",
]

#: The device value that picks the accelerator when there is one (see :func:`choose_device`).
AUTO_DEVICE = "auto"


class DeviceChoice(NamedTuple):
    """A device to load models on, and why it was chosen (``str()``: one line for a log)."""

    device: str | torch.device
    reason: str

    def __str__(self) -> str:
        return f"device {self.device} ({self.reason})"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def choose_device(
    device: str | torch.device = AUTO_DEVICE, *, name: str = "device"
) -> DeviceChoice:
    """Where to load a model, and why.

    ``"auto"`` is ``"cuda:0"`` when ``torch.cuda.is_available()`` (the first visible GPU:
    ``CUDA_VISIBLE_DEVICES`` selects another), else ``"mps"`` when Apple's MPS is available,
    else ``"cpu"``. Any other value is returned as given once checked: it must be a torch
    device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, a ``torch.device`` ...), and a CUDA
    or MPS device must exist here. A bad value is a ``ValueError`` that names ``name`` (the
    CLI passes ``"--device"``), raised before any model loads.
    """
    if isinstance(device, str) and device.strip().lower() == AUTO_DEVICE:
        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            return DeviceChoice("cuda:0", f"auto: CUDA available, {count} GPU(s) visible")
        if _mps_available():
            return DeviceChoice("mps", "auto: MPS available")
        return DeviceChoice("cpu", "auto: no CUDA or MPS device")
    label = f"{name} {device}" if name.startswith("-") else f"{name}={device!r}"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"{label} is not a torch device; use 'auto' (the accelerator if there is one), "
            "'cpu', 'cuda', 'cuda:1', 'mps', ..."
        ) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = "torch was built without CUDA" if torch.version.cuda is None else "no GPU"
            raise ValueError(f"{label}: CUDA is not available here ({why}); use 'auto' or 'cpu'")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(
                f"{label}: only {count} CUDA device(s) are visible (cuda:0 to cuda:{count - 1})"
            )
    elif parsed.type == "mps" and not _mps_available():
        raise ValueError(f"{label}: MPS is not available here; use 'auto' or 'cpu'")
    return DeviceChoice(device, f"given by {name}")


def resolve_device(
    device: str | torch.device | None, *, name: str = "device"
) -> str | torch.device | None:
    """:func:`choose_device`'s device (``None``, "leave the model where it is", stays None)."""
    return None if device is None else choose_device(device, name=name).device


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device | None) -> torch.dtype:
    """``"auto"`` is bfloat16 on CUDA and float32 elsewhere; names map to ``torch`` dtypes."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        on_cuda = device is not None and str(device).startswith("cuda")
        return torch.bfloat16 if on_cuda else torch.float32
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(
            f"dtype={dtype!r} is not a floating-point torch dtype; allowed values: 'auto', "
            "'float32', 'bfloat16', 'float16' or a torch.dtype"
        )
    return resolved


def split_gguf(path: str | os.PathLike[str], gguf_file: str | None) -> tuple[str, str | None]:
    """Let a user pass a ``.gguf`` file path directly instead of (directory, file name):
    transformers wants the two apart."""
    text = os.fspath(path)
    if gguf_file is None and text.lower().endswith(".gguf") and Path(text).is_file():
        return str(Path(text).parent), Path(text).name
    return text, gguf_file


def load_causal_lm(
    path: str | os.PathLike[str],
    *,
    gguf_file: str | None = None,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype = "auto",
    device_map: str | dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    **model_kwargs: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model (in eval mode, on ``device`` unless ``device_map`` shards it) and its tokenizer,
    from a hub id, a local directory or a GGUF file. ``device="auto"`` is the accelerator if
    there is one (:func:`choose_device`); a device that is not available here is a
    ``ValueError`` before anything loads."""
    if device_map is None:
        device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device if device_map is None else "cuda")
    location, gguf = split_gguf(path, gguf_file)
    common: dict[str, Any] = {"trust_remote_code": trust_remote_code, "revision": revision}
    if gguf is not None:
        common["gguf_file"] = gguf
    tokenizer = AutoTokenizer.from_pretrained(location, **common)
    model = AutoModelForCausalLM.from_pretrained(
        location, dtype=torch_dtype, device_map=device_map, **common, **model_kwargs
    )
    if device_map is None and device is not None:
        model = model.to(device)
    return model.eval(), tokenizer
