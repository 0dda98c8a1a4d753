"""ChatBaco: BACO collaborative decoding as a LangChain chat model (``BaseChatModel``)."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import closing
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

from .._streaming import SourceTracker, generate_in_thread, iterate_in_thread
from ..config import GenerationSettings
from ..outputs import BacoOutput
from ._common import (
    PROVIDER,
    BacoSettingsMixin,
    check_streamable,
)

_ROLES: dict[str, str] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
}
#: Keyword arguments LangChain itself interprets (``invoke(..., stream=True)``) and forwards.
_LANGCHAIN_KWARGS = frozenset({"stream"})


def _text_content(message: BaseMessage) -> str:
    """The message's text; any non-text content block is an error (the models read text)."""
    if isinstance(message.content, str):
        return message.content
    parts: list[str] = []
    for block in message.content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise ValueError(
                f"ChatBaco reads text only; got a {kind!r} content block in a "
                f"{type(message).__name__}"
            )
    return "".join(parts)


def to_conversation(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as the engine's ``{"role", "content"}`` conversation.

    System, human and AI messages map to ``system``, ``user`` and ``assistant``. Consecutive
    messages of one role are joined (blank line between), since many chat templates reject
    two turns of the same role in a row. Tool messages and tool calls are rejected: ChatBaco
    does not support tool calling.
    """
    conversation: list[dict[str, str]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            role = "system"
        elif isinstance(message, HumanMessage):
            role = "user"
        elif isinstance(message, AIMessage):
            if message.tool_calls or message.invalid_tool_calls:
                raise ValueError(
                    "ChatBaco does not support tool calling: an AIMessage in the input carries "
                    "tool calls"
                )
            role = "assistant"
        elif isinstance(message, ChatMessage) and message.role.lower() in _ROLES:
            role = _ROLES[message.role.lower()]
        else:
            why = " (tool calling is not supported)" if message.type in {"tool", "function"} else ""
            raise ValueError(
                f"ChatBaco does not support {type(message).__name__} messages{why}; use "
                "SystemMessage, HumanMessage and AIMessage"
            )
        content = _text_content(message)
        if conversation and conversation[-1]["role"] == role:
            conversation[-1]["content"] += "\n\n" + content
        else:
            conversation.append({"role": role, "content": content})
    if not conversation:
        raise ValueError("ChatBaco needs at least one message")
    return conversation


class ChatBaco(BacoSettingsMixin, BaseChatModel):
    """A chat model whose every reply is written by a base model and its aligned counterpart.

    The conversation goes to the engine as ``{"role", "content"}`` messages: the aligned model
    reads it through its chat template, the base model as a plain transcript. Settings are the
    same fields as :class:`~baco_integrations.langchain.BacoLLM`, overridable per call::

        chat = ChatBaco(engine=engine, router="P-PUNC", gamma=0.3, max_new_tokens=256)
        chat.invoke([SystemMessage("Be brief."), HumanMessage("Name a cat.")], gamma=0.6)

    Replies carry ``usage_metadata`` and ``response_metadata`` with the per-token ``sources``
    and ``token_ids`` (aligned-tokenizer ids), the ``base_fraction``, the ``finish_reason`` and
    the model names. Tool calling and structured output are not supported.
    """

    model_config = ConfigDict(
        extra="forbid",  # an unknown setting is an error, never silently dropped
        arbitrary_types_allowed=True,
        # BaseChatModel assigns ``profile`` inside its own validator, which re-validates
        # without end under validate_assignment; settings are checked at every call instead.
        validate_assignment=False,
        protected_namespaces=(),
    )

    @property
    def _llm_type(self) -> str:
        return "baco-chat"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self._baco_ls_params("chat", stop, kwargs)

    def _get_invocation_params(
        self, stop: list[str] | None = None, **kwargs: Any
    ) -> builtins.dict[str, Any]:
        # LangChain's cache key: the effective stop strings, not None when only the field is set.
        return super()._get_invocation_params(
            stop=stop if stop is not None else self.stop, **kwargs
        )

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Tokens of the aligned model's prompt for ``messages`` (chat template included)."""
        if tools:
            raise ValueError("ChatBaco does not support tools")
        return self._prompt_tokens(to_conversation(messages), self.generation_settings)

    # ----------------------------------------------------------------- LangChain hooks

    def _settings(self, stop: list[str] | None, kwargs: dict[str, Any]) -> GenerationSettings:
        kwargs = {k: v for k, v in kwargs.items() if k not in _LANGCHAIN_KWARGS}
        return self._call_settings(stop, kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        settings = self._settings(stop, kwargs)
        conversation = to_conversation(messages)
        return self._result(self.engine.generate([conversation], settings=settings)[0])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        settings = self._settings(stop, kwargs)  # fail fast, on the loop
        conversation = to_conversation(messages)
        outputs = await generate_in_thread(self.engine, [conversation], settings)
        return self._result(outputs[0])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        settings = self._settings(stop, kwargs)
        for chunk in self._chunks(to_conversation(messages), settings):
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        settings = self._settings(stop, kwargs)
        conversation = to_conversation(messages)
        check_streamable(settings)  # raise here, not in the worker thread
        chunks = await iterate_in_thread(lambda: self._chunks(conversation, settings))
        try:
            async for chunk in chunks:
                if run_manager:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        finally:
            # Close now rather than when garbage-collected: this stops the worker thread.
            await chunks.aclose()  # type: ignore[attr-defined]

    def _combine_llm_outputs(self, llm_outputs: list[builtins.dict | None]) -> builtins.dict:
        usage: dict[str, int] = {}
        for output in llm_outputs:
            for key, value in ((output or {}).get("token_usage") or {}).items():
                usage[key] = usage.get(key, 0) + value
        return {"token_usage": usage, "model_name": self.model_name}

    # ----------------------------------------------------------------- helpers

    def _metadata(self) -> dict[str, Any]:
        names = self.engine.model_names
        return {
            "model_name": self.model_name,
            "model_provider": PROVIDER,
            "base_model": names["base"],
            "aligned_model": names["aligned"],
        }

    def _result(self, samples: list[BacoOutput]) -> ChatResult:
        generations = []
        for output in samples:
            usage = UsageMetadata(
                input_tokens=output.prompt_tokens,
                output_tokens=output.num_tokens,
                total_tokens=output.prompt_tokens + output.num_tokens,
            )
            metadata = {
                **self._metadata(),
                "finish_reason": output.finish_reason,
                "sources": list(output.sources),
                "token_ids": list(output.token_ids),
                "base_fraction": output.base_fraction,
            }
            message = AIMessage(
                content=output.text, usage_metadata=usage, response_metadata=metadata
            )
            generations.append(ChatGeneration(message=message))
        prompt = samples[0].prompt_tokens if samples else 0
        completion = sum(o.num_tokens for o in samples)
        token_usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        return ChatResult(
            generations=generations,
            llm_output={"token_usage": token_usage, "model_name": self.model_name},
        )

    def _chunks(
        self, conversation: list[dict[str, str]], settings: GenerationSettings
    ) -> Iterator[ChatGenerationChunk]:
        """The engine's stream as chat chunks (no callbacks: the caller fires them).

        Every chunk's ``response_metadata["sources"]`` and ``["token_ids"]`` list its tokens'
        sources and ids (LangChain concatenates the lists when chunks are added); the last chunk
        carries the usage, the ``finish_reason``, the ``base_fraction`` and the model names,
        exactly once.
        """
        check_streamable(settings)
        tracker = SourceTracker()
        # Closing the engine's iterator stops decoding and releases the engine's lock.
        with closing(self.engine.stream(conversation, settings=settings)) as chunks:
            for chunk in chunks:
                metadata: dict[str, Any] = {
                    "sources": tracker.add(chunk),
                    "token_ids": list(chunk.token_ids),
                }
                if chunk.finish_reason is None:
                    message = AIMessageChunk(content=chunk.text, response_metadata=metadata)
                else:
                    prompt_tokens = chunk.prompt_tokens
                    output_tokens = len(tracker.sources)
                    metadata |= {
                        **self._metadata(),
                        "finish_reason": chunk.finish_reason,
                        "base_fraction": tracker.base_fraction,
                    }
                    message = AIMessageChunk(
                        content=chunk.text,
                        response_metadata=metadata,
                        usage_metadata=UsageMetadata(
                            input_tokens=prompt_tokens,
                            output_tokens=output_tokens,
                            total_tokens=prompt_tokens + output_tokens,
                        ),
                        chunk_position="last",
                    )
                yield ChatGenerationChunk(message=message)
