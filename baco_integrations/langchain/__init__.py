"""LangChain adapters for BACO: :class:`BacoLLM` (a ``BaseLLM``) and :class:`ChatBaco`.

Both wrap a :class:`~baco_integrations.BacoEngine`; neither decodes anything itself.
"""

from .chat_models import ChatBaco
from .llms import BacoLLM
from .tools import BacoBrainstormTool

__all__ = ["BacoBrainstormTool", "BacoLLM", "ChatBaco"]
