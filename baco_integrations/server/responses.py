"""Responses and stream chunks in OpenAI's wire format, each choice with its provenance.

Every choice carries an extra ``"baco"`` object, which standard clients ignore: for a finished
choice its ``base_fraction`` (share of tokens the base model wrote) and ``spans`` (runs of text
by the model that wrote them, joining to the choice's text); for a streamed piece the
``source`` of its text.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from ..outputs import BacoOutput, Usage
from ..render import source_spans

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
    """Which model wrote what: the base share and the text's spans by source."""
    return {
        "base_fraction": output.base_fraction,
        "spans": [
            {"text": text, "source": source} for text, source in source_spans(output, tokenizer)
        ],
    }


def response(
    reply: Reply,
    outputs: Sequence[tuple[int, BacoOutput]],
    usage: Usage,
    tokenizer: PreTrainedTokenizerBase,
) -> dict[str, Any]:
    """A whole (non-streamed) response; ``outputs`` are ``(choice index, output)`` pairs."""
    choices = []
    for index, output in outputs:
        choice: dict[str, Any] = {"index": index}
        if reply.chat:
            choice["message"] = {"role": "assistant", "content": output.text, "refusal": None}
        else:
            choice["text"] = output.text
        choice["logprobs"] = None
        choice["finish_reason"] = output.finish_reason
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
) -> dict[str, Any]:
    """One choice of a stream chunk: a delta (chat) or a text piece (completions)."""
    choice: dict[str, Any] = {"index": index}
    if reply.chat:
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text or role:
            delta["content"] = text
        choice["delta"] = delta
    else:
        choice["text"] = text
    choice["logprobs"] = None
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
