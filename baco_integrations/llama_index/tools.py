"""LlamaIndex tools on a BACO model: :class:`BacoToolSpec`.

A thin adapter: the brainstorming itself (prompt, rounds of sampling, near-duplicate dropping)
is :mod:`baco_integrations.brainstorm`, shared with the LangChain tool.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.tools.tool_spec.base import SPEC_FUNCTION_TYPE, BaseToolSpec
from llama_index.core.tools.types import ToolMetadata
from pydantic import BaseModel

from .._adapter import EngineSettings
from ..brainstorm import (
    DEFAULT_MAX_ROUNDS,
    DEFAULT_PROMPT,
    DEFAULT_THRESHOLD,
    DESCRIPTION,
    BrainstormArgs,
    IdeaSchema,
    abrainstorm,
    brainstorm,
    json_ready,
    tool_call_kwargs,
)

__all__ = ["BacoToolSpec"]

_BRAINSTORM = ("brainstorm", "abrainstorm")


class BacoToolSpec(BaseToolSpec):
    """LlamaIndex tools on a BACO model; ``to_tool_list()`` gives them (today one,
    ``brainstorm``: ``n`` semantically distinct ideas about a topic, sync and async).

    ``BacoToolSpec(llm=BacoLLM(...))``: the tools decode on that model's engine with that
    model's settings (router, gamma, temperature, max_new_tokens, seed, system_prompt, ...),
    so their calls share the engine's batch with everything else the engine decodes.
    ``idea_schema`` (a JSON schema or pydantic model class) shapes every call's ideas unless
    the call gives its own; ``embedder`` (default: the packaged all-MiniLM-L6-v2, which needs
    the ``eval`` extra), ``threshold``, ``max_rounds`` and ``prompt`` are the core's
    (:func:`baco_integrations.brainstorm.brainstorm`).
    """

    spec_functions: list[SPEC_FUNCTION_TYPE] = [_BRAINSTORM]

    def __init__(
        self,
        llm: EngineSettings,
        *,
        idea_schema: IdeaSchema | None = None,
        embedder: Any = None,
        threshold: float = DEFAULT_THRESHOLD,
        max_rounds: int = DEFAULT_MAX_ROUNDS,
        prompt: str = DEFAULT_PROMPT,
    ) -> None:
        if not isinstance(llm, EngineSettings):
            raise ValueError(
                "llm must be a BACO model (baco_integrations.llama_index.BacoLLM, or another "
                f"BACO adapter), got {type(llm).__name__}"
            )
        self.llm = llm
        self.idea_schema = idea_schema
        self.embedder = embedder
        self.threshold = threshold
        self.max_rounds = max_rounds
        self.prompt = prompt

    def get_fn_schema_from_fn_name(
        self, fn_name: str, spec_functions: list[SPEC_FUNCTION_TYPE] | None = None
    ) -> type[BaseModel] | None:
        """The argument schema an agent's model sees: the same as LangChain's tool."""
        return BrainstormArgs if fn_name in _BRAINSTORM else None

    def get_metadata_from_fn_name(
        self, fn_name: str, spec_functions: list[SPEC_FUNCTION_TYPE] | None = None
    ) -> ToolMetadata | None:
        """The tool's name, description and argument schema, as LangChain's tool states them
        (not LlamaIndex's default of the Python signature and docstring)."""
        if fn_name not in _BRAINSTORM:
            return None
        return ToolMetadata(name="brainstorm", description=DESCRIPTION, fn_schema=BrainstormArgs)

    def _core_kwargs(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        return tool_call_kwargs(self, tool_input)

    def brainstorm(
        self,
        topic: str,
        n: int = 5,
        idea_schema: dict[str, Any] | None = None,
        router: str | None = None,
        gamma: float | None = None,
        base_share: float | None = None,
        temperature: float | None = None,
    ) -> list[dict[str, Any]]:
        """``n`` semantically distinct ideas about ``topic``:
        ``[{"idea": text | object, "base_fraction": float}, ...]`` as JSON values (arguments:
        :class:`~baco_integrations.brainstorm.BrainstormArgs`). Raises
        :class:`~baco_integrations.brainstorm.NotEnoughIdeas` (its message and ``.ideas`` hold
        the ideas found) when ``max_rounds`` rounds of sampling find fewer."""
        kwargs = self._core_kwargs(
            {
                "topic": topic,
                "n": n,
                "idea_schema": idea_schema,
                "router": router,
                "gamma": gamma,
                "base_share": base_share,
                "temperature": temperature,
            }
        )
        return json_ready(brainstorm(**kwargs))

    async def abrainstorm(
        self,
        topic: str,
        n: int = 5,
        idea_schema: dict[str, Any] | None = None,
        router: str | None = None,
        gamma: float | None = None,
        base_share: float | None = None,
        temperature: float | None = None,
    ) -> list[dict[str, Any]]:
        """:meth:`brainstorm` for asyncio: the engine's own async call (no thread), the
        embedding in a worker thread."""
        kwargs = self._core_kwargs(
            {
                "topic": topic,
                "n": n,
                "idea_schema": idea_schema,
                "router": router,
                "gamma": gamma,
                "base_share": base_share,
                "temperature": temperature,
            }
        )
        return json_ready(await abrainstorm(**kwargs))
