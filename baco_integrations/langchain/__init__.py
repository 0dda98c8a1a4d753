"""LangChain adapters for BACO: :class:`BacoLLM` (a ``BaseLLM``) and :class:`ChatBaco`.

Both wrap a :class:`~baco_integrations.BacoEngine`; neither decodes anything itself.
"""

from .chat_models import ChatBaco
from .llms import BacoLLM

__all__ = ["BacoLLM", "ChatBaco"]
