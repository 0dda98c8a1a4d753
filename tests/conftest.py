"""Shared fixtures: tiny local base/aligned pairs, built once per test session."""

from __future__ import annotations

import pytest

from baco_integrations.testing import TinyPair, make_tiny_pair


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> TinyPair:
    """A default pair: one shared 512-token tokenizer, two different random Llama models."""
    return make_tiny_pair(tmp_path_factory.mktemp("tiny_pair"))


@pytest.fixture(scope="session")
def tiny_cross_pair(tmp_path_factory: pytest.TempPathFactory) -> TinyPair:
    """A cross-family pair: base with 512 tokens, aligned with its own 640-token tokenizer."""
    return make_tiny_pair(tmp_path_factory.mktemp("tiny_cross_pair"), aligned_vocab_size=640)
