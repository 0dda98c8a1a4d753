"""LangChain tools on a BACO model: :class:`BacoBrainstormTool`.

A thin adapter: the brainstorming itself (prompt, rounds of sampling, near-duplicate dropping)
is :mod:`baco_integrations.brainstorm`, shared with the LlamaIndex tool spec.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, ConfigDict, Field

from .._adapter import EngineSettings
from ..brainstorm import (
    DEFAULT_MAX_ROUNDS,
    DEFAULT_PROMPT,
    DEFAULT_THRESHOLD,
    DESCRIPTION,
    BrainstormArgs,
    IdeaSchema,
    NotEnoughIdeas,
    abrainstorm,
    brainstorm,
    json_ready,
    tool_call_kwargs,
)

__all__ = ["BacoBrainstormTool"]


def _not_enough(exc: NotEnoughIdeas) -> ToolException:
    """The tool's error when it falls short: the reason, and the ideas found, as JSON."""
    return ToolException(str(exc))


class BacoBrainstormTool(BaseTool):
    """A LangChain tool named ``brainstorm``: ``n`` semantically distinct ideas about a topic.

    Built on a BACO model, ``BacoBrainstormTool(llm=ChatBaco(...))`` (a LangChain
    ``BacoLLM``, or any BACO adapter, works too): it decodes on that model's engine, with that
    model's settings (router, gamma, temperature, max_new_tokens, seed, system_prompt, ...),
    so its calls share the engine's batch with everything else the engine decodes.

    The call's arguments (:class:`~baco_integrations.brainstorm.BrainstormArgs`): ``topic``,
    ``n`` (1 to 20), optionally ``idea_schema`` (a JSON schema of one idea) and routing
    overrides (``router``, ``gamma``, ``base_share``, ``temperature``). It returns
    ``[{"idea": text | object, "base_fraction": float}, ...]``, ``n`` ideas in sample order,
    as JSON values. When ``max_rounds`` rounds of sampling leave fewer than ``n`` distinct
    ideas it raises :class:`~langchain_core.tools.ToolException` whose message holds the
    ideas found (its ``__cause__`` is the core's
    :class:`~baco_integrations.brainstorm.NotEnoughIdeas`, with them as ``.ideas``); set
    ``handle_tool_error=True`` to return that message instead (an error ``ToolMessage``),
    which is what an agent should get: LangGraph's ToolNode re-raises a tool's errors other
    than bad arguments.

    Fields: ``idea_schema`` (a JSON schema or pydantic model class: every call's ideas follow
    it unless the call gives its own), ``embedder`` (default: the packaged all-MiniLM-L6-v2,
    which needs the ``eval`` extra), ``threshold`` (cosine similarity at which an idea is a
    near-duplicate), ``max_rounds`` and ``prompt`` (the request, with a ``{topic}`` field).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "brainstorm"
    description: str = DESCRIPTION
    args_schema: type[BaseModel] = BrainstormArgs

    llm: EngineSettings = Field(
        exclude=True, description="The BACO model (ChatBaco, BacoLLM) whose engine decodes."
    )
    idea_schema: IdeaSchema | None = Field(
        default=None,
        description="Each idea's JSON schema or pydantic model when a call gives none.",
    )
    embedder: Any = Field(
        default=None, exclude=True, description="Sentence embedder (default: all-MiniLM-L6-v2)."
    )
    threshold: float = Field(default=DEFAULT_THRESHOLD, ge=-1.0, le=1.0)
    max_rounds: int = Field(default=DEFAULT_MAX_ROUNDS, ge=1)
    prompt: str = Field(default=DEFAULT_PROMPT, description="The request; has '{topic}'.")

    def _core_kwargs(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        return tool_call_kwargs(self, tool_input)

    def _run(
        self, run_manager: CallbackManagerForToolRun | None = None, **tool_input: Any
    ) -> list[dict[str, Any]]:
        try:
            return json_ready(brainstorm(**self._core_kwargs(tool_input)))
        except NotEnoughIdeas as exc:
            raise _not_enough(exc) from exc

    async def _arun(
        self, run_manager: AsyncCallbackManagerForToolRun | None = None, **tool_input: Any
    ) -> list[dict[str, Any]]:
        try:
            return json_ready(await abrainstorm(**self._core_kwargs(tool_input)))
        except NotEnoughIdeas as exc:
            raise _not_enough(exc) from exc
