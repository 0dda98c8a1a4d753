"""Loading a causal LM and its tokenizer: the one place that knows dtypes, GGUF paths and
``from_pretrained`` options. The engine, the evaluation sweep and the quality scorers use it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

__all__ = ["load_causal_lm", "resolve_dtype", "split_gguf"]


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
    from a hub id, a local directory or a GGUF file."""
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
