"""ChatBaco: BACO collaborative decoding as a LangChain chat model (``BaseChatModel``)."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import wait
from contextlib import aclosing, closing
from contextvars import copy_context
from functools import partial
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
    Callbacks,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
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
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import get_config_list
from pydantic import ConfigDict

from .._adapter import PROVIDER, check_streamable, mean_logprobs, openai_logprobs
from ..config import GenerationSettings
from ..conversation import ROLE_ALIASES, Role, canonical_role, merge_turns
from ..outputs import BacoChunk, BacoOutput, Usage
from ..tool_calls import opens_call
from . import _batch
from ._common import BacoSettingsMixin
from .structured import constraint_for, structured_output
from .tool_calling import (
    BoundTools,
    call_names,
    openai_tools,
    tool_call_chunk_fields,
    tool_call_message_fields,
    tool_turn,
)

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


def _role(message: BaseMessage) -> Role:
    """The engine role of ``message`` (tool calls and tool messages are read by
    :func:`~.tool_calling.tool_turn` first); invalid tool calls and unknown roles raise."""
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        if message.invalid_tool_calls:
            raise ValueError(
                "an AIMessage in the input carries invalid tool calls; ChatBaco reads the "
                "valid ones (tool_calls) only"
            )
        return "assistant"
    role = canonical_role(message.role) if isinstance(message, ChatMessage) else None
    if role is None:
        raise ValueError(
            f"ChatBaco does not support {type(message).__name__} messages; use "
            "SystemMessage, HumanMessage, AIMessage and ToolMessage, or a ChatMessage with one "
            f"of the roles {', '.join(sorted(ROLE_ALIASES))}"
        )
    return role


def to_conversation(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as the engine's ``{"role", "content"}`` conversation.

    System, human and AI messages map to ``system``, ``user`` and ``assistant``; an AI
    message's tool calls are the JSON the models wrote for them, and a tool's reply is a user
    turn naming the tool (:mod:`~.tool_calling`). Consecutive messages of one role are joined
    (:func:`~baco_integrations.conversation.merge_turns`).
    """
    names = call_names(messages)
    turns: list[tuple[Role, str]] = []
    for message in messages:
        turn = tool_turn(message, names)
        turns.append(turn or (_role(message), _text_content(message)))  # type: ignore[arg-type]
    return merge_turns(turns)


def usage_metadata(usage: Usage) -> UsageMetadata:
    """The core's usage under LangChain's names."""
    return UsageMetadata(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


class ChatBaco(BacoSettingsMixin, BaseChatModel):
    """A chat model whose every reply is written by a base model and its aligned counterpart.

    The conversation goes to the engine as ``{"role", "content"}`` messages: the aligned model
    reads it through its chat template, the base model as a plain transcript. Settings are the
    same fields as :class:`~baco_integrations.langchain.BacoLLM`, overridable per call::

        chat = ChatBaco(engine=engine, router="P-PUNC", gamma=0.3, max_new_tokens=256)
        chat.invoke([SystemMessage("Be brief."), HumanMessage("Name a cat.")], gamma=0.6)

    Replies carry ``usage_metadata`` and ``response_metadata`` with the per-token ``sources``
    and ``token_ids`` (aligned-tokenizer ids), the ``base_fraction``, the ``finish_reason`` and
    the model names.

    Token log-probs: with ``logprobs=True`` (a field, or per call: ``chat.invoke(messages,
    logprobs=True, top_logprobs=3)``) ``response_metadata["logprobs"]`` holds them in
    ChatOpenAI's shape, ``{"content": [{"token", "bytes", "logprob", "top_logprobs": [{"token",
    "bytes", "logprob"}, ...]}, ...]}``, one entry per token of the writing model, and
    ``response_metadata`` also holds each model's mean log-prob per token of the reply
    (``aligned_mean_logprob``, ``base_mean_logprob``). Streamed chunks carry their own tokens'
    entries, so the added-up chunks hold the reply's. ``top_logprobs`` is 0 to 20 and needs
    ``logprobs=True``; without ``logprobs`` there is no ``"logprobs"`` key.

    Structured output (:meth:`with_structured_output`) decodes every sample under the schema
    (``method="json_schema"``) or as a JSON object (``"json_mode"``); any call also takes
    ``constraint=``.

    Tool calling: ``chat.bind_tools(tools, tool_choice=...)`` decodes every reply under a
    grammar of "free text, or a call to one of these tools with valid arguments"
    (``tool_choice="auto"``), only calls (``"required"``/``"any"``/a tool's name) or text
    (``"none"``); a call comes back as ``AIMessage.tool_calls`` (streamed: one chunk with
    ``tool_call_chunks`` once the call is complete). One call per reply (docs/agents.md).
    """

    model_config = ConfigDict(
        extra="forbid",  # an unknown setting is an error, never silently dropped
        arbitrary_types_allowed=True,
        # BaseChatModel assigns ``profile`` inside its own validator, which re-validates
        # without end under validate_assignment; a setting is still validated when assigned
        # (EngineSettings.__setattr__) and at every call.
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
        # LangChain's cache key and traces: the effective stop strings (not None when only the
        # field is set), validated also on paths that enter LangChain without our entry points.
        return super()._get_invocation_params(stop=self._call_stop(stop), **kwargs)

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Tokens of the aligned model's prompt for ``messages`` (chat template included,
        and the tools' instructions when ``tools`` are given)."""
        conversation = to_conversation(messages)
        bound = BoundTools.pop({"tools": openai_tools(tools)} if tools else {})
        if bound is not None:
            conversation = bound.conversation(conversation)
        return self._prompt_tokens(conversation, self.generation_settings)

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: str | bool | builtins.dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """This model with ``tools`` bound (any tool LangChain converts to OpenAI's shape:
        a ``BaseTool``, a pydantic class, a function, a dict). ``tool_choice``: ``"auto"``
        (default: text or a call), ``"none"``, ``"required"``/``"any"``/``True`` (a call),
        or a tool's name (a call to it). ``kwargs`` are settings bound with them."""
        formatted = openai_tools(tools)
        BoundTools.pop({"tools": formatted, "tool_choice": tool_choice})  # check it now
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(  # type: ignore[override]
        self,
        schema: builtins.dict[str, Any] | type | None = None,
        *,
        method: Literal["json_schema", "json_mode", "function_calling"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """A runnable whose replies are decoded under ``schema`` and parsed.

        ``schema`` is a pydantic model class (the output is an instance of it), or a JSON
        schema dict, a TypedDict class or an OpenAI function/tool dict (the output is a
        dict). ``method``:

        * ``"json_schema"`` (default): every sample is compact JSON valid against the schema
          by construction (objects closed to keys the schema does not list), unless the token
          budget ends it first (``finish_reason == "length"``: raise ``max_new_tokens``);
        * ``"json_mode"``: every sample is a JSON object (``schema`` may be None; if given it
          only parses the reply, so ask for its keys in the prompt).

        ``"function_calling"`` raises ``ValueError``: BACO has no tool calling. ``strict`` is
        accepted for compatibility with ``json_schema`` (decoding is always strict).
        ``include_raw=True`` gives ``{"raw": AIMessage, "parsed": ..., "parsing_error": ...}``
        (the error caught, not raised). ``kwargs`` are settings bound to every call
        (``n=``, ``temperature=``, ``max_new_tokens=``, ...; unknown names raise).

        With ``n > 1`` (the field, or ``n=`` here) the runnable returns a list of ``n``
        results, one per sample, in sample order (each a parsed object, or a
        ``{"raw", "parsed", "parsing_error"}`` dict with ``include_raw=True``); the samples
        share one prefill and are decoded in one call. It cannot stream then.

        Example::

            class Idea(BaseModel):
                title: str
                risk: int

            chain = prompt | ChatBaco(engine=engine, n=4).with_structured_output(Idea)
            ideas = chain.invoke({"topic": "coffee"})  # [Idea(...), Idea(...), ...]
        """
        constraint = constraint_for(schema, method, strict)
        # Every setting is checked now (unknown names raise), and n read from them.
        n = self.settings_for_call({**kwargs, "constraint": constraint}).n
        return structured_output(
            self,
            schema,
            constraint=constraint,
            n=n,
            method=method,
            include_raw=include_raw,
            strict=strict,
            settings=kwargs,
        )

    # ----------------------------------------------------------------- entry points

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Reply to every input, all decoded in one engine call.

        Each input runs LangChain's own ``invoke`` (its run and callbacks, its config, the
        cache), all at once, a thread per input (not a pool sized by the machine's cores);
        their conversations then reach the engine together (:mod:`._batch`). Each reply is
        the one its ``invoke`` alone gives (the same seed, the same text). With
        ``max_concurrency`` in the config, the inputs go in consecutive sub-batches of at
        most that many, as ``BaseLLM.batch`` does; without, in sub-batches as wide as one
        engine call may be (``EngineLimits.max_rows``, 1024 by default).
        ``return_exceptions=True`` returns each failed input's exception in its place.
        """
        if not inputs:
            return []
        configs, width = self._batch_configs(inputs, config)
        if len(inputs) > width:
            return [
                output
                for start in range(0, len(inputs), width)
                for output in self.batch(
                    inputs[start : start + width],
                    configs[start : start + width],
                    return_exceptions=return_exceptions,
                    **kwargs,
                )
            ]
        if len(inputs) == 1:
            return super().batch(inputs, configs, return_exceptions=return_exceptions, **kwargs)
        rendezvous = _batch.Rendezvous(self.engine, len(inputs))

        def reply(index: int) -> AIMessage | Exception:
            _batch.enter(rendezvous, index)
            try:
                return self.invoke(inputs[index], configs[index], **kwargs)
            except Exception as error:
                if return_exceptions:
                    return error
                raise
            finally:
                rendezvous.leave(index)

        replies = [
            _batch.WORKERS.run(partial(copy_context().run, reply, i)) for i in range(len(inputs))
        ]
        wait(replies)  # every input ends (its run, its callbacks) before the batch does
        return [future.result() for future in replies]

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Async :meth:`batch`: one task per input, all decoded in one engine call (the
        engine's own async call: the event loop never blocks)."""
        if not inputs:
            return []
        configs, width = self._batch_configs(inputs, config)
        if len(inputs) > width:
            return [
                output
                for start in range(0, len(inputs), width)
                for output in await self.abatch(
                    inputs[start : start + width],
                    configs[start : start + width],
                    return_exceptions=return_exceptions,
                    **kwargs,
                )
            ]
        if len(inputs) == 1:
            return await super().abatch(
                inputs, configs, return_exceptions=return_exceptions, **kwargs
            )
        rendezvous = _batch.AsyncRendezvous(self.engine, len(inputs))

        async def reply(index: int) -> AIMessage | Exception:
            _batch.enter(rendezvous, index)  # in this task's own context
            try:
                return await self.ainvoke(inputs[index], configs[index], **kwargs)
            except Exception as error:
                if return_exceptions:
                    return error
                raise
            finally:
                rendezvous.leave(index)

        return list(await asyncio.gather(*(reply(i) for i in range(len(inputs)))))

    def _batch_configs(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None,
    ) -> tuple[list[RunnableConfig], int]:
        """Each input's config, and the most inputs decoded together: ``max_concurrency``
        when the config sets it (the sub-batches' configs then no longer do), else as many
        as one engine call takes (:func:`._batch.batch_width`)."""
        configs = get_config_list(config, len(inputs))
        width = configs[0].get("max_concurrency")
        if width is None:
            return configs, _batch.batch_width(self.engine)
        return [{**c, "max_concurrency": None} for c in configs], width

    def generate(
        self,
        messages: list[list[BaseMessage]],
        stop: list[str] | None = None,
        callbacks: Callbacks = None,
        **kwargs: Any,
    ) -> LLMResult:
        """Like ``BaseChatModel.generate``; ``stop`` is validated before LangChain reads it."""
        return super().generate(messages, self._call_stop(stop), callbacks, **kwargs)

    async def agenerate(
        self,
        messages: list[list[BaseMessage]],
        stop: list[str] | None = None,
        callbacks: Callbacks = None,
        **kwargs: Any,
    ) -> LLMResult:
        """Async :meth:`generate` (the engine's own async call: the event loop never blocks)."""
        return await super().agenerate(messages, self._call_stop(stop), callbacks, **kwargs)

    # ----------------------------------------------------------------- LangChain hooks

    def _settings(self, stop: list[str] | None, kwargs: dict[str, Any]) -> GenerationSettings:
        kwargs = {k: v for k, v in kwargs.items() if k not in _LANGCHAIN_KWARGS}
        return self._call_settings(stop, kwargs)

    def _call(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[list[builtins.dict[str, str]], GenerationSettings, BoundTools | None]:
        """A call's conversation and settings, with its bound tools (their instructions in
        the system message, their grammar as the constraint)."""
        kwargs = dict(kwargs)
        tools = BoundTools.pop(kwargs)
        settings, conversation = self._settings(stop, kwargs), to_conversation(messages)
        if tools is None:
            return conversation, settings, None
        return tools.conversation(conversation), tools.settings(settings), tools

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        conversation, settings, tools = self._call(messages, stop, kwargs)
        return self._result(_batch.generate(self.engine, conversation, settings), tools)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        conversation, settings, tools = self._call(messages, stop, kwargs)  # fail fast
        # The engine's own async call: no thread, and cancelling this task takes the call's
        # rows out of the engine's batch at once.
        return self._result(await _batch.agenerate(self.engine, conversation, settings), tools)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        _batch.release(self.engine, _batch.Rendezvous)  # a batch input that streams
        conversation, settings, tools = self._call(messages, stop, kwargs)
        check_streamable(settings)
        chunks = self.engine.stream(conversation, settings=settings)
        calls = _CallBuffer(tools)
        # Closing the engine's iterator (also when our consumer stops early) stops decoding.
        with closing(chunks):  # type: ignore[type-var]
            for chunk in chunks:
                if (generation := calls.push(self._chunk(chunk), chunk)) is None:
                    continue
                if run_manager:
                    run_manager.on_llm_new_token(generation.text, chunk=generation)
                yield generation

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        _batch.release(self.engine, _batch.AsyncRendezvous)  # a batch input that streams
        conversation, settings, tools = self._call(messages, stop, kwargs)
        check_streamable(settings)
        chunks = self.engine.astream(conversation, settings=settings)
        calls = _CallBuffer(tools)
        # Closing the engine's stream now, not when it is garbage-collected, takes the call
        # out of the engine's batch as soon as our consumer stops.
        async with aclosing(chunks):  # type: ignore[type-var]
            async for chunk in chunks:
                if (generation := calls.push(self._chunk(chunk), chunk)) is None:
                    continue
                if run_manager:
                    await run_manager.on_llm_new_token(generation.text, chunk=generation)
                yield generation

    def _combine_llm_outputs(self, llm_outputs: list[builtins.dict | None]) -> builtins.dict:
        # One llm_output per conversation, each from its own engine call: their usages add up.
        usages = (
            Usage.from_dict((output or {}).get("token_usage") or {}) for output in llm_outputs
        )
        return {"token_usage": sum(usages, Usage()).as_dict(), "model_name": self.model_name}

    # ----------------------------------------------------------------- helpers

    def _metadata(self) -> dict[str, Any]:
        names = self.model_names
        return {
            "model_name": self.model_name,
            "model_provider": PROVIDER,
            "base_model": names["base"],
            "aligned_model": names["aligned"],
        }

    def _finished_metadata(self, output: BacoOutput) -> dict[str, Any]:
        """What a reply reports once, besides the per-token ``sources``, ``token_ids`` and
        ``logprobs``: with log-probs, each model's mean log-prob of the reply as well."""
        return {
            **self._metadata(),
            "finish_reason": output.finish_reason,
            "base_fraction": output.base_fraction,
            **mean_logprobs(output),
        }

    def _result(self, samples: list[BacoOutput], tools: BoundTools | None = None) -> ChatResult:
        """One conversation's ``n`` samples as a ChatResult (one engine call); a sample that
        is a call to a bound tool is an AIMessage with ``tool_calls``."""
        generations = []
        for output in samples:
            metadata = {
                **self._finished_metadata(output),
                "sources": list(output.sources),
                "token_ids": list(output.token_ids),
            }
            if output.logprobs is not None:
                metadata["logprobs"] = openai_logprobs(output.logprobs)
            content: dict[str, Any] = {"content": output.text}
            if tools is not None and (call := tools.call(output.text)) is not None:
                content = tool_call_message_fields(call)
                metadata["finish_reason"] = "tool_calls"
            message = AIMessage(
                **content,
                usage_metadata=usage_metadata(Usage.of([output])),
                response_metadata=metadata,
            )
            generations.append(ChatGeneration(message=message))
        return ChatResult(
            generations=generations,
            llm_output={
                "token_usage": Usage.of(samples).as_dict(),
                "model_name": self.model_name,
            },
        )

    def _chunk(self, chunk: BacoChunk) -> ChatGenerationChunk:
        """One streamed piece as a chat chunk.

        Every chunk's ``response_metadata["sources"]`` and ``["token_ids"]`` list its tokens'
        sources and ids, and with log-probs ``["logprobs"]["content"]`` its tokens' entries
        (LangChain concatenates the lists when chunks are added); the last chunk carries the
        usage, the ``finish_reason``, the ``base_fraction``, the mean log-probs and the model
        names, exactly once, read from the finished sample.
        """
        metadata: dict[str, Any] = {
            "sources": list(chunk.sources),
            "token_ids": list(chunk.token_ids),
        }
        if chunk.logprobs is not None:
            metadata["logprobs"] = openai_logprobs(chunk.logprobs)
        if chunk.output is None:
            return ChatGenerationChunk(
                message=AIMessageChunk(content=chunk.text, response_metadata=metadata)
            )
        message = AIMessageChunk(
            content=chunk.text,
            response_metadata=metadata | self._finished_metadata(chunk.output),
            usage_metadata=usage_metadata(Usage.of([chunk.output])),
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message)


class _CallBuffer:
    """A stream's chunks, held back while they may be a tool call: a reply that starts with
    ``{`` under bound tools comes out as one chunk with ``tool_call_chunks`` at its end (or as
    its text, if the token budget cut the call short)."""

    def __init__(self, tools: BoundTools | None) -> None:
        self.tools = tools
        self.held: ChatGenerationChunk | None = None
        self.started = False

    def push(self, generation: ChatGenerationChunk, chunk: BacoChunk) -> ChatGenerationChunk | None:
        """What to yield for ``generation`` now (None: held back)."""
        if self.tools is None or (self.started and self.held is None):
            return generation
        if not self.started and chunk.text:
            self.started = True
            if not opens_call(chunk.text):
                return generation
        self.held = generation if self.held is None else self.held + generation
        if chunk.output is None:
            return None
        held, self.held = self.held, None
        call = self.tools.call(chunk.output.text)
        if call is None:
            return held
        message = held.message
        metadata = {**message.response_metadata, "finish_reason": "tool_calls"}
        return ChatGenerationChunk(
            message=AIMessageChunk(
                **tool_call_chunk_fields(call),
                response_metadata=metadata,
                usage_metadata=getattr(message, "usage_metadata", None),
                chunk_position="last",
            )
        )
