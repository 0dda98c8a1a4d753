"""Stand-ins for the sweep's models: an engine and an embedder that need no weights."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from baco_integrations.outputs import BacoOutput


class FakeEngine:
    """Answers ``generate`` like a BacoEngine, without models: sample i of a prompt is a few
    words made of the prompt, the settings, the seed and i, half written by each model."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def generate(self, prompts: Sequence[str], **kwargs: Any) -> list[list[BacoOutput]]:
        self.calls.append({"prompts": list(prompts), **kwargs})
        batches = []
        for prompt in prompts:
            samples = []
            for i in range(kwargs["n"]):
                words = [prompt.split()[0], str(kwargs.get("router")), str(kwargs["seed"] % 7)]
                words += ["x"] * (i % 3)
                ids = tuple(range(1, len(words) + 1))
                sources = tuple("base" if k % 2 else "aligned" for k in range(len(ids)))
                samples.append(BacoOutput(" ".join(words), ids, sources, "length", 0, i))  # type: ignore[arg-type]
            batches.append(samples)
        return batches


class HashEmbedder:
    """Deterministic stand-in for a sentence embedder: hashed bag of words plus a constant
    component (so that no row is zero, even for an empty response)."""

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


class LengthScorer:
    """A quality metric without a model: the response's length in characters."""

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return np.asarray([float(len(r)) for r in responses])


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def hash_embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture
def length_scorer() -> LengthScorer:
    return LengthScorer()


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    """Two prompts."""
    path = tmp_path / "prompts.jsonl"
    rows = [{"id": "cat", "prompt": "Name a cat."}, {"id": "sea", "prompt": "Describe the sea."}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path
