"""LangChain adapter fixtures: one engine on the tiny pair, shared by the whole directory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from baco_integrations import BacoEngine


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's
    spinning threads make them 10-20x slower; restored when this directory is done."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def engine(tiny_pair) -> BacoEngine:
    return BacoEngine.from_pretrained(tiny_pair.base_dir, tiny_pair.aligned_dir)
