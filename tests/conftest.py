"""Shared fixtures: tiny local base/aligned pairs, built once per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from baco_integrations import BacoEngine
from baco_integrations.testing import TinyPair, make_tiny_pair


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's
    spinning threads make them many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> TinyPair:
    """A default pair: one shared 512-token tokenizer, two different random Llama models."""
    return make_tiny_pair(tmp_path_factory.mktemp("tiny_pair"))


@pytest.fixture(scope="session")
def tiny_cross_pair(tmp_path_factory: pytest.TempPathFactory) -> TinyPair:
    """A cross-family pair: base with 512 tokens, aligned with its own 640-token tokenizer."""
    return make_tiny_pair(tmp_path_factory.mktemp("tiny_cross_pair"), aligned_vocab_size=640)


@pytest.fixture(scope="session")
def engine(tiny_pair: TinyPair) -> BacoEngine:
    """One engine on the default tiny pair, loaded through the real loading code."""
    return BacoEngine.from_pretrained(tiny_pair.base_dir, tiny_pair.aligned_dir)


@pytest.fixture(scope="session")
def cross_engine(tiny_cross_pair: TinyPair) -> BacoEngine:
    """One engine on the cross-family tiny pair (its tokenizers differ)."""
    return BacoEngine.from_pretrained(tiny_cross_pair.base_dir, tiny_cross_pair.aligned_dir)
