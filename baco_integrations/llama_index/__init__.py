"""LlamaIndex adapter for BACO: :class:`BacoLLM`, a ``llama_index.core`` ``CustomLLM``.

It wraps a :class:`~baco_integrations.BacoEngine` and decodes nothing itself.
"""

from .base import BacoLLM, to_conversation
from .tools import BacoToolSpec

__all__ = ["BacoLLM", "BacoToolSpec", "to_conversation"]
