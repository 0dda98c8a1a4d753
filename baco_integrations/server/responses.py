"""Responses and stream chunks in OpenAI's wire format, each choice with its provenance.

Every choice carries an extra ``"baco"`` object, which standard clients ignore: for a finished
choice its ``base_fraction`` (share of tokens the base model wrote), ``spans`` (runs of text
by the model that wrote them, joining to the choice's text) and each model's mean log-prob per
token of the text, ``aligned_mean_logprob`` and ``base_mean_logprob`` (numbers when the request
asked for log-probs and the model could score the text; null otherwise) and, with log-probs,
``token_logprobs``: per token of the choice's ``logprobs``, its writer and both models' own
log-probs of its text (``{"source", "aligned", "base"}``); for a streamed piece the ``source``
of its text.

Token log-probs (``logprobs``) are in OpenAI's two shapes: chat's
``{"content": [{"token", "bytes", "logprob", "top_logprobs": [{"token", "bytes", "logprob"}]}],
"refusal": null}`` and the legacy completions' ``{"tokens", "token_logprobs", "top_logprobs",
"text_offset"}``. A streamed chunk's choice carries the entries of its own tokens (the writer's
tokens whose text starts in that chunk), so a stream's entries joined are the whole answer's.

With tools, a chat choice whose text is a call to one of them (:mod:`baco_integrations.tool_calls`)
is answered in OpenAI's shape: ``message: {"role": "assistant", "content": null, "tool_calls":
[{"id", "type": "function", "function": {"name", "arguments": <a JSON string>}}]}`` and
``finish_reason: "tool_calls"``; its ``logprobs`` and ``baco`` block are those of the call's
text (the JSON the models wrote).
"""

from __future__ import annotations

import codecs
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from .._adapter import openai_logprobs, token_bytes
from ..outputs import BacoOutput, TokenLogProb, Usage
from ..render import source_spans
from ..tool_calls import ToolCall, ToolSpec, parse_tool_call

#: OpenAI's ``system_fingerprint``: which server configuration answered.
FINGERPRINT = "baco-integrations"


@dataclass(frozen=True)
class Reply:
    """What every response or chunk of one request shares."""

    id: str
    created: int
    model: str
    chat: bool

    @classmethod
    def new(cls, model: str, *, chat: bool) -> Reply:
        prefix = "chatcmpl" if chat else "cmpl"
        return cls(f"{prefix}-{uuid.uuid4().hex}", int(time.time()), model, chat)

    def envelope(self, obj: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
        }


def provenance(output: BacoOutput, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """Which model wrote what (the base share and the text's spans by source), and how
    likely each model finds the text (null unless log-probs were asked)."""
    return {
        "base_fraction": output.base_fraction,
        "spans": [
            {"text": text, "source": source} for text, source in source_spans(output, tokenizer)
        ],
        "aligned_mean_logprob": output.aligned_mean_logprob,
        "base_mean_logprob": output.base_mean_logprob,
        "token_logprobs": None
        if output.logprobs is None
        else [
            {"source": e.source, "aligned": e.aligned_logprob, "base": e.base_logprob}
            for e in output.logprobs
        ],
    }


# ------------------------------------------------------------------------- log-probs


def chat_logprobs(entries: Sequence[TokenLogProb]) -> dict[str, Any]:
    """Chat's ``choice.logprobs``: one entry per token, its alternatives most likely first
    (the adapters' shape, with OpenAI's ``refusal``)."""
    return openai_logprobs(entries) | {"refusal": None}


class LegacyLogprobs:
    """The legacy completions' ``choice.logprobs`` of one choice, chunk after chunk.

    ``text_offset`` is each token's offset in the choice's text, in characters, continuing
    across the chunks of a stream; a token that starts inside a character (a byte-level token
    holding part of it) has the offset of that character. ``top_logprobs`` maps the k most
    likely tokens to their log-probs and always holds the sampled token (so up to k + 1
    entries, as in OpenAI's API); where two tokens read the same, the likelier one is kept.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._chars = 0

    def add(self, entries: Sequence[TokenLogProb]) -> dict[str, Any]:
        """The legacy shape of the next ``entries`` of this choice."""
        offsets = []
        tops = []
        for entry in entries:
            offsets.append(self._chars)
            self._chars += len(self._decoder.decode(bytes(token_bytes(entry))))
            top: dict[str, float] = {}
            for alternative in entry.top_logprobs:
                top.setdefault(alternative.token, alternative.logprob)
            top.setdefault(entry.token, entry.logprob)
            tops.append(top)
        return {
            "tokens": [entry.token for entry in entries],
            "token_logprobs": [entry.logprob for entry in entries],
            "top_logprobs": tops,
            "text_offset": offsets,
        }


def choice_logprobs(
    chat: bool, entries: Sequence[TokenLogProb] | None, legacy: LegacyLogprobs | None = None
) -> dict[str, Any] | None:
    """A choice's ``logprobs`` in its endpoint's shape: null when none were asked."""
    if entries is None:
        return None
    if chat:
        return chat_logprobs(entries)
    return (legacy or LegacyLogprobs()).add(entries)


def tool_call(call: ToolCall) -> dict[str, Any]:
    """A parsed call in OpenAI's shape (the arguments as a JSON string)."""
    arguments = json.dumps(call.arguments, ensure_ascii=False)
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    }


def response(
    reply: Reply,
    outputs: Sequence[tuple[int, BacoOutput]],
    usage: Usage,
    tokenizer: PreTrainedTokenizerBase,
    tools: Sequence[ToolSpec] = (),
) -> dict[str, Any]:
    """A whole (non-streamed) response; ``outputs`` are ``(choice index, output)`` pairs. A
    chat choice whose text is a call to one of ``tools`` is answered as ``tool_calls``."""
    choices = []
    for index, output in outputs:
        choice: dict[str, Any] = {"index": index}
        finish_reason = output.finish_reason
        if reply.chat:
            message: dict[str, Any] = {"role": "assistant", "content": output.text, "refusal": None}
            call = parse_tool_call(output.text, tools) if tools else None
            if call is not None:
                message |= {"content": None, "tool_calls": [tool_call(call)]}
                finish_reason = "tool_calls"
            choice["message"] = message
        else:
            choice["text"] = output.text
        choice["logprobs"] = choice_logprobs(reply.chat, output.logprobs)
        choice["finish_reason"] = finish_reason
        choice["baco"] = provenance(output, tokenizer)
        choices.append(choice)
    obj = "chat.completion" if reply.chat else "text_completion"
    return {**reply.envelope(obj), "choices": choices, "usage": usage.as_dict()}


def stream_choice(
    reply: Reply,
    index: int,
    text: str,
    finish_reason: str | None,
    *,
    role: bool = False,
    baco: dict[str, Any] | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One choice of a stream chunk: a delta (chat) or a text piece (completions), with the
    log-probs of its tokens (:func:`choice_logprobs`) when they were asked."""
    choice: dict[str, Any] = {"index": index}
    if reply.chat:
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text or role:
            delta["content"] = text
        choice["delta"] = delta
    else:
        choice["text"] = text
    choice["logprobs"] = logprobs
    choice["finish_reason"] = finish_reason
    if baco is not None:
        choice["baco"] = baco
    return choice


def chunk(
    reply: Reply,
    choices: list[dict[str, Any]],
    *,
    include_usage: bool,
    usage: Usage | None = None,
) -> dict[str, Any]:
    """A stream chunk. With ``include_usage`` every chunk has ``usage`` (null but in the
    extra last chunk, which has no choices), as OpenAI's ``stream_options`` says."""
    obj = "chat.completion.chunk" if reply.chat else "text_completion"
    body = {**reply.envelope(obj), "choices": choices}
    if include_usage:
        body["usage"] = usage.as_dict() if usage is not None else None
    return body


def sse(data: dict[str, Any]) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


SSE_DONE = "data: [DONE]\n\n"
