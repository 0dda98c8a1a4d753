"""BacoLLM: BACO collaborative decoding as a LlamaIndex ``CustomLLM``.

A thin adapter in the manner of ``llama_index.llms.huggingface.HuggingFaceLLM``: decoding,
prompt rendering and stop strings are the engine's job. This module turns LlamaIndex's
calling conventions into one validated :class:`~baco_integrations.GenerationSettings` per call,
LlamaIndex messages into the engine's ``{"role", "content"}`` conversation, and the engine's
outputs into ``CompletionResponse``/``ChatResponse`` objects.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping, Sequence
from contextlib import aclosing, closing
from typing import TYPE_CHECKING, Any, TypeVar

from llama_index.core.base.llms.types import (
    CachePoint,
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    LogProb,
    MessageRole,
    TextBlock,
    ThinkingBlock,
)
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.prompts import PromptTemplate
from llama_index.core.types import PydanticProgramMode
from pydantic import BaseModel, ConfigDict, ValidationError

from .._adapter import (
    EngineSettings,
    check_streamable,
    mean_logprobs,
    openai_logprobs,
    token_bytes,
)
from ..config import GenerationSettings, Source
from ..constraints import Constraint
from ..conversation import ROLE_ALIASES, Role, canonical_role, merge_turns
from ..outputs import BacoChunk, BacoOutput, TokenLogProb, Usage, base_fraction
from ..prompts import Prompt
from ..tool_calls import opens_call
from .tool_calling import (
    BoundTools,
    call_names,
    chat_with_tools_kwargs,
    tool_call_response,
    tool_selections,
    tool_turn,
)

if TYPE_CHECKING:
    from llama_index.core.llms.structured_llm import StructuredLLM
    from llama_index.core.tools import BaseTool

Model = TypeVar("Model", bound=BaseModel)

#: The start of the error LlamaIndex's PydanticOutputParser raises for text with no JSON
#: object in it (llama_index.core.output_parsers.utils.extract_json_str).
_NO_JSON = "Could not extract json string"

#: Blocks that carry nothing the models should read: a caching hint, and the reasoning of a
#: past assistant turn (chat templates drop it from the history too).
_SKIPPED_BLOCKS = (CachePoint, ThinkingBlock)
_TEXT_BLOCKS = (TextBlock, *_SKIPPED_BLOCKS)


def _turn(message: ChatMessage) -> tuple[Role, str]:
    """``message`` as a ``(role, text)`` turn; unknown roles and non-text content raise."""
    role = canonical_role(message.role.value)
    if role is None:
        readable = sorted(r.value for r in MessageRole if r.value in ROLE_ALIASES)
        raise ValueError(
            f"BacoLLM does not support {message.role.value!r} messages; use the roles "
            f"{', '.join(readable)} (and tool, after a call)"
        )
    for block in message.blocks:
        if not isinstance(block, _TEXT_BLOCKS):
            raise ValueError(
                f"BacoLLM reads text only; got a {type(block).__name__} in a "
                f"{message.role.value} message"
            )
    return role, "\n".join(b.text for b in message.blocks if isinstance(b, TextBlock))


def to_conversation(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """LlamaIndex messages as the engine's ``{"role", "content"}`` conversation.

    System/developer, user and assistant (model, chatbot) messages map to ``system``,
    ``user`` and ``assistant``. Consecutive messages of one role are joined
    (:func:`~baco_integrations.conversation.merge_turns`): LlamaIndex puts
    ``LLM.system_prompt`` in front of a template's own system message. An assistant message's
    tool calls are the JSON the models wrote for them and a tool's reply is a user turn naming
    the tool (:mod:`.tool_calling`); non-text content is rejected: the models read text.
    """
    names = call_names(messages)
    turns = [tool_turn(m, names) or _turn(m) for m in messages]
    return merge_turns(turns)  # type: ignore[arg-type]


def token_logprobs(entry: TokenLogProb) -> list[LogProb]:
    """One generated token's ``LogProb`` list, as LlamaIndex's OpenAI LLM fills it
    (``from_openai_token_logprob``): the token's ``top_logprobs`` alternatives, most likely
    first; with ``top_logprobs=0`` (none asked) the drawn token alone."""
    chosen = entry.top_logprobs or (entry,)
    return [LogProb(token=t.token, logprob=t.logprob, bytes=token_bytes(t)) for t in chosen]


def logprobs_info(entries: Sequence[TokenLogProb] | None) -> dict[str, Any]:
    """``{"logprobs": <OpenAI chat shape>}`` when log-probs were asked, else nothing: every
    token's own log-prob with its alternatives, which ``response.logprobs`` (alternatives
    only, as LlamaIndex's OpenAI LLM reports them) may not hold."""
    return {} if entries is None else {"logprobs": openai_logprobs(entries)}


def sample_info(output: BacoOutput) -> dict[str, Any]:
    """One finished sample as plain data (with log-probs and each model's mean log-prob when
    they were asked)."""
    return {
        "text": output.text,
        "sources": list(output.sources),
        "base_fraction": output.base_fraction,
        "finish_reason": output.finish_reason,
        "num_tokens": output.num_tokens,
        **logprobs_info(output.logprobs),
        **mean_logprobs(output),
    }


def _completion_response(outputs: Sequence[BacoOutput]) -> CompletionResponse:
    """One prompt's samples as a response; sample 0 is its text, all n are in ``samples``."""
    first, usage = outputs[0], Usage.of(outputs).as_dict()
    logprobs = None
    if first.logprobs is not None:
        logprobs = [token_logprobs(entry) for entry in first.logprobs]
    return CompletionResponse(
        text=first.text,
        additional_kwargs={
            "sources": list(first.sources),
            "base_fraction": first.base_fraction,
            "finish_reason": first.finish_reason,
            **logprobs_info(first.logprobs),
            **mean_logprobs(first),
            **usage,
            "samples": [sample_info(o) for o in outputs],
        },
        raw={"usage": usage, "outputs": outputs},
        logprobs=logprobs,
    )


class _RunningResponse:
    """Turns one sample's chunks into streamed responses: each with the new ``delta`` and the
    running text, sources and base fraction (and log-probs, when asked: ``logprobs`` and
    ``additional_kwargs["logprobs"]`` hold every token so far, as ``text`` does); the last
    also with the finish reason, usage and mean log-probs, read from the finished sample the
    engine's last chunk carries."""

    def __init__(self) -> None:
        self.text = ""
        self.sources: list[Source] = []
        # With log-probs: every token so far, in OpenAI's chat shape and as LogProb lists
        # (each built once; a response copies the lists, not the entries).
        self.content: list[dict[str, Any]] = []
        self.logprobs: list[list[LogProb]] = []

    def response(self, chunk: BacoChunk) -> CompletionResponse:
        self.text += chunk.text
        self.sources.extend(chunk.sources)
        info: dict[str, Any] = {
            "source": chunk.source,
            "sources": list(self.sources),
            "base_fraction": base_fraction(self.sources),
        }
        logprobs = None
        if chunk.logprobs is not None:
            self.content.extend(openai_logprobs(chunk.logprobs)["content"])
            self.logprobs.extend(token_logprobs(entry) for entry in chunk.logprobs)
            info["logprobs"] = {"content": list(self.content)}
            logprobs = list(self.logprobs)
        raw: dict[str, Any] = {"chunk": chunk}
        if chunk.output is not None:
            usage = Usage.of([chunk.output]).as_dict()
            info |= {
                "finish_reason": chunk.output.finish_reason,
                **mean_logprobs(chunk.output),
                **usage,
            }
            raw |= {"usage": usage, "outputs": [chunk.output]}
        return CompletionResponse(
            text=self.text,
            delta=chunk.text,
            additional_kwargs=info,
            raw=raw,
            logprobs=logprobs,
        )


def _with_call(response: ChatResponse, tools: BoundTools | None) -> ChatResponse:
    """``response``, or its call to one of ``tools`` when its text is one."""
    if tools is None or (call := tools.call(response.message.content or "")) is None:
        return response
    return tool_call_response(response, call)


class _CallBuffer:
    """Streamed chat responses, held back while they may be a tool call: a reply that starts
    with ``{`` under tools comes out as one response holding the call at its end (or as its
    text, if the token budget cut the call short)."""

    def __init__(self, tools: BoundTools | None) -> None:
        self.tools = tools
        self.holding: bool | None = None if tools is not None else False

    def push(self, response: ChatResponse) -> ChatResponse | None:
        if self.holding is None and response.message.content:
            self.holding = opens_call(response.message.content)
        finished = "finish_reason" in response.additional_kwargs
        if not self.holding or not finished:
            return None if self.holding else response
        return _with_call(response, self.tools)


def _chat_response(response: CompletionResponse) -> ChatResponse:
    """The chat form of a completion response: same text, delta and metadata."""
    return ChatResponse(
        message=ChatMessage(role=MessageRole.ASSISTANT, content=response.text),
        delta=response.delta,
        logprobs=response.logprobs,
        additional_kwargs=response.additional_kwargs,
        raw=response.raw,
    )


class BacoLLM(EngineSettings, CustomLLM, FunctionCallingLLM):
    """A base model and its aligned counterpart writing one response together (BACO).

    Every router and sampling setting of :class:`~baco_integrations.GenerationSettings` is a
    field (inherited, validators included) and can be overridden per call::

        llm = BacoLLM(engine=engine, router="P-PUNC", gamma=0.3, max_new_tokens=128)
        Settings.llm = llm
        llm.complete("Ideas for a party", gamma=0.6, n=4)

    Responses carry the per-token ``sources``, the ``base_fraction``, the ``finish_reason``,
    all ``samples`` (``n`` of them) and token counts in ``additional_kwargs``; token counts
    also in ``raw["usage"]``, where LlamaIndex's token counter reads them.

    Token log-probs: with ``logprobs=True`` (and ``top_logprobs=k``, 0 to 20; a field or per
    call) a response's ``logprobs`` is LlamaIndex's ``List[List[LogProb]]``, one inner list
    per generated token (the writing model's tokens), filled as LlamaIndex's OpenAI LLM fills
    it: the token's ``k`` most likely alternatives, most likely first, or with ``k = 0`` the
    drawn token alone. ``additional_kwargs["logprobs"]`` holds them in OpenAI's chat shape
    (``{"content": [{"token", "bytes", "logprob", "top_logprobs"}, ...]}``: the drawn token's
    own log-prob next to its alternatives), and ``additional_kwargs`` each model's mean
    log-prob per token (``aligned_mean_logprob``, ``base_mean_logprob``); each of
    ``samples`` has all three too. A streamed response holds every token so far, as its
    ``text`` does. Without ``logprobs`` the response's ``logprobs`` is None.

    ``system_prompt`` is one field with one meaning for LlamaIndex and the engine: the
    aligned model's system message (the base model never sees it). It is applied to every
    call unless the conversation already opens with a system message (LlamaIndex's
    ``predict`` puts it there itself) or ``complete(..., formatted=True)`` is given a prompt
    LlamaIndex already formatted, system prompt included.

    ``messages_to_prompt`` is not used: :meth:`chat` hands the conversation itself to the
    engine, which renders it for each model.

    Structured output: :meth:`structured_predict` (and its async and streaming forms) and
    :meth:`as_structured_llm` decode under ``output_cls``'s JSON schema (``constraint=``), so
    the reply is valid JSON for it by construction instead of free text that may not parse.
    Any call also takes ``constraint=`` (``llm.complete(prompt, constraint=Idea, n=8)`` gives
    8 samples, each valid JSON for ``Idea``, in ``additional_kwargs["samples"]``).

    Function calling (a ``FunctionCallingLLM``, so ``FunctionAgent`` and ``predict_and_call``
    use it): :meth:`chat_with_tools` decodes under a grammar of "free text or a call to one of
    these tools with valid arguments" (``tool_required=True`` or ``tool_choice="required"``/a
    tool's name: only calls); a call comes back as a ``ToolCallBlock`` that
    :meth:`get_tool_calls_from_response` reads. One call per reply (docs/agents.md).
    """

    model_config = ConfigDict(
        extra="forbid",  # an unknown setting is an error, never silently dropped
        arbitrary_types_allowed=True,
        # LlamaIndex's own fields are validated when assigned too; settings are validated
        # first, as one GenerationSettings (EngineSettings.__setattr__).
        validate_assignment=True,
        protected_namespaces=(),
    )

    #: Structured output decodes under the schema (the constraint path of structured_predict
    #: below). LlamaIndex's default mode would pick a tool-calling program for a
    #: function-calling LLM: a forced tool call around the same JSON, less direct.
    pydantic_program_mode: PydanticProgramMode = PydanticProgramMode.LLM

    @classmethod
    def class_name(cls) -> str:
        return "BacoLLM"

    # ----------------------------------------------------------------- identity

    @property
    def metadata(self) -> LLMMetadata:
        """The pair's real context window (the smaller model's) and output length.

        ``is_chat_model`` is true when the aligned tokenizer has a chat template: the engine
        then reads conversations natively (chat template for the aligned model, transcript for
        the base model), so LlamaIndex sends messages to :meth:`chat`. Without a template the
        engine renders everything as plain text, and LlamaIndex formats prompts itself.
        """
        return LLMMetadata(
            context_window=self.engine.context_window or DEFAULT_CONTEXT_WINDOW,
            num_output=self.max_new_tokens,
            is_chat_model=bool(getattr(self.engine.aligned_tokenizer, "chat_template", None)),
            is_function_calling_model=True,
            model_name=self.model_name,
        )

    def to_payload(self) -> dict[str, Any]:
        """Metadata plus the two models and every setting, for instrumentation events."""
        return {
            **super().to_payload(),
            "base_model": self.model_names["base"],
            "aligned_model": self.model_names["aligned"],
            **self.described_settings(),
        }

    # ----------------------------------------------------------------- settings

    def _call_settings(
        self, kwargs: Mapping[str, Any], *, formatted: bool = False
    ) -> GenerationSettings:
        """The settings of one call: the fields with ``kwargs`` on top.

        Unknown keyword arguments raise ``ValueError``; ``max_tokens`` is accepted as the
        alias of ``max_new_tokens``. A ``formatted`` prompt already holds the system prompt
        (``LLM._extend_prompt``), so the field is not applied a second time; an explicit
        ``system_prompt=`` still is.
        """
        overrides = dict(kwargs)
        if formatted:
            overrides.setdefault("system_prompt", None)
        return self.settings_for_call(overrides)

    def _completion_call(
        self, prompt: str, formatted: bool, kwargs: Mapping[str, Any]
    ) -> tuple[str, GenerationSettings]:
        """Settings and final prompt text of a completion call, as ``HuggingFaceLLM`` forms it.

        An unformatted prompt goes through ``query_wrapper_prompt`` (deprecated, when set) and
        ``completion_to_prompt`` (identity by default); either way the engine then renders the
        text for each model (chat template for the aligned one, ``base_template`` for the base).
        """
        settings = self._call_settings(kwargs, formatted=formatted)
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
        if not formatted:
            if self.query_wrapper_prompt is not None:
                prompt = self.query_wrapper_prompt.format(query_str=prompt)
            if self.completion_to_prompt is not None:
                prompt = self.completion_to_prompt(prompt)
        return prompt, settings

    # ----------------------------------------------------------------- engine calls

    def _generate(self, prompt: Prompt, settings: GenerationSettings) -> CompletionResponse:
        """Decode ``settings.n`` samples of one prompt; sample 0 is the response's text."""
        return _completion_response(self.engine.generate([prompt], settings=settings)[0])

    async def _agenerate(self, prompt: Prompt, settings: GenerationSettings) -> CompletionResponse:
        """Async :meth:`_generate`, the engine's own: no thread, and cancelling the caller
        takes the call's rows out of the engine's batch at once."""
        outputs = await self.engine.agenerate([prompt], settings=settings)
        return _completion_response(outputs[0])

    def _stream(self, prompt: Prompt, settings: GenerationSettings) -> CompletionResponseGen:
        """Validate now, then stream one sample as running-text responses.

        The engine's ``stream`` validates the settings and the prompt before iteration starts,
        so errors raise at the call, as with :meth:`complete`.
        """
        check_streamable(settings)
        return self._responses(self.engine.stream(prompt, settings=settings))

    def _astream(self, prompt: Prompt, settings: GenerationSettings) -> CompletionResponseAsyncGen:
        """Async :meth:`_stream`, the engine's own (no thread); validates now as well."""
        check_streamable(settings)
        return self._aresponses(self.engine.astream(prompt, settings=settings))

    @staticmethod
    def _responses(chunks: Iterator[BacoChunk]) -> CompletionResponseGen:
        running = _RunningResponse()
        # Closing the engine's iterator (also when our consumer stops early) takes the call
        # out of the engine's batch.
        with closing(chunks):  # type: ignore[type-var]
            for chunk in chunks:
                yield running.response(chunk)

    @staticmethod
    async def _aresponses(chunks: AsyncIterator[BacoChunk]) -> CompletionResponseAsyncGen:
        running = _RunningResponse()
        async with aclosing(chunks):  # type: ignore[type-var]
            async for chunk in chunks:
                yield running.response(chunk)

    def _stream_chat(
        self, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]
    ) -> ChatResponseGen:
        conversation, settings, tools = self._chat_call(messages, kwargs)
        responses = self._stream(conversation, settings)

        def generate() -> ChatResponseGen:
            calls = _CallBuffer(tools)
            with closing(responses):
                for response in responses:
                    if (reply := calls.push(_chat_response(response))) is not None:
                        yield reply

        return generate()

    def _astream_chat(
        self, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]
    ) -> ChatResponseAsyncGen:
        conversation, settings, tools = self._chat_call(messages, kwargs)
        responses = self._astream(conversation, settings)

        async def generate() -> ChatResponseAsyncGen:
            calls = _CallBuffer(tools)
            async with aclosing(responses):  # type: ignore[type-var]
                async for response in responses:
                    if (reply := calls.push(_chat_response(response))) is not None:
                        yield reply

        return generate()

    # ----------------------------------------------------------------- completion

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Complete ``prompt``; ``kwargs`` are per-call settings (unknown ones raise)."""
        prompt, settings = self._completion_call(prompt, formatted, kwargs)
        return self._generate(prompt, settings)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        """Stream a completion: each response has the new ``delta`` and the running ``text``."""
        prompt, settings = self._completion_call(prompt, formatted, kwargs)
        return self._stream(prompt, settings)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        """Async :meth:`complete`; the event loop is never blocked."""
        prompt, settings = self._completion_call(prompt, formatted, kwargs)
        return await self._agenerate(prompt, settings)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Async :meth:`stream_complete`; errors raise here, at the call."""
        prompt, settings = self._completion_call(prompt, formatted, kwargs)
        return self._astream(prompt, settings)

    # ----------------------------------------------------------------- chat

    def _chat_call(
        self, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]
    ) -> tuple[list[dict[str, str]], GenerationSettings, BoundTools | None]:
        """A chat call's conversation and settings, with its tools (``tools=`` in OpenAI's
        shape and ``tool_choice=``, as :meth:`chat_with_tools` passes them)."""
        kwargs = dict(kwargs)
        tools = BoundTools.pop(kwargs)
        conversation, settings = to_conversation(messages), self._call_settings(kwargs)
        if tools is None:
            return conversation, settings, None
        return tools.conversation(conversation), tools.settings(settings), tools

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Reply to a conversation, passed to the engine as is (not via messages_to_prompt)."""
        conversation, settings, tools = self._chat_call(messages, kwargs)
        return _with_call(_chat_response(self._generate(conversation, settings)), tools)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Stream a reply: each response has the new ``delta`` and the running message."""
        return self._stream_chat(messages, kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async :meth:`chat`; the event loop is never blocked."""
        conversation, settings, tools = self._chat_call(messages, kwargs)
        return _with_call(_chat_response(await self._agenerate(conversation, settings)), tools)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        """Async :meth:`stream_chat`; errors raise here, at the call."""
        return self._astream_chat(messages, kwargs)

    # ----------------------------------------------------------------- function calling

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """:meth:`chat`'s arguments for a call with ``tools`` (at most one call per reply,
        whatever ``allow_parallel_tool_calls`` says)."""
        return chat_with_tools_kwargs(tools, user_msg, chat_history, tool_required, kwargs)

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The tool calls a :meth:`chat_with_tools` response holds (none raises
        ``ValueError`` unless ``error_on_no_tool_call=False``)."""
        return tool_selections(response, error_on_no_tool_call)

    # ----------------------------------------------------------------- structured output

    def _structured_kwargs(
        self, output_cls: type[BaseModel], llm_kwargs: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """``llm_kwargs`` with ``constraint=output_cls`` (unless one is given), checked now."""
        kwargs = dict(llm_kwargs or {})
        kwargs.setdefault("constraint", output_cls)
        settings = self._call_settings(kwargs)  # a bad schema or setting raises here
        if settings.n != 1:
            name = getattr(output_cls, "__name__", "object")
            raise ValueError(
                f"structured_predict returns one {name}, but n={settings.n}; for n structured "
                f"samples call complete(prompt, constraint={name}, n={settings.n}) and "
                f"validate each of response.additional_kwargs['samples'] (every sample that "
                "finished is valid JSON for the schema)"
            )
        return kwargs

    def _cut_reply(
        self, exc: Exception, output_cls: type[BaseModel], kwargs: Mapping[str, Any]
    ) -> Exception:
        """What a reply decoded under the schema that failed to parse means, or ``exc`` itself
        when the error is not the parser's."""
        if not (isinstance(exc, ValidationError) or str(exc).startswith(_NO_JSON)):
            return exc
        budget = self._call_settings(kwargs).max_new_tokens
        return ValueError(
            f"the reply could not be parsed as {output_cls.__name__}: decoding under its schema "
            "makes every finished reply valid, so this one was cut before its JSON was "
            f"complete: it reached max_new_tokens={budget} (raise it) or a stop string ended "
            f"it. {exc}"
        )

    def structured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        """LlamaIndex's ``structured_predict``, with the reply decoded under ``output_cls``'s
        JSON schema (``llm_kwargs`` are per-call settings; a ``constraint`` there wins)."""
        kwargs = self._structured_kwargs(output_cls, llm_kwargs)
        try:
            return super().structured_predict(output_cls, prompt, llm_kwargs=kwargs, **prompt_args)
        except ValueError as exc:
            raise self._cut_reply(exc, output_cls, kwargs) from exc

    async def astructured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        """Async :meth:`structured_predict` (the engine's own async call)."""
        kwargs = self._structured_kwargs(output_cls, llm_kwargs)
        try:
            return await super().astructured_predict(
                output_cls, prompt, llm_kwargs=kwargs, **prompt_args
            )
        except ValueError as exc:
            raise self._cut_reply(exc, output_cls, kwargs) from exc

    def _structured_stream_call(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Generator[Any, None, None]:
        # What stream_structured_predict streams: partial objects of the constrained reply.
        kwargs = self._structured_kwargs(output_cls, llm_kwargs)
        return super()._structured_stream_call(output_cls, prompt, kwargs, **prompt_args)

    async def _structured_astream_call(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> AsyncGenerator[Any, None]:
        kwargs = self._structured_kwargs(output_cls, llm_kwargs)
        return await super()._structured_astream_call(output_cls, prompt, kwargs, **prompt_args)

    def as_structured_llm(self, output_cls: type[BaseModel], **kwargs: Any) -> StructuredLLM:
        """LlamaIndex's StructuredLLM around this LLM: its chat/complete calls go through
        :meth:`structured_predict`, so every reply is decoded under ``output_cls``'s schema.
        The schema is checked now."""
        Constraint.from_schema(output_cls)  # a bad schema raises ValueError here
        return super().as_structured_llm(output_cls, **kwargs)
