"""Rendering one user request for each model: chat template for aligned, plain text for base."""

from __future__ import annotations

import json
import re
import string
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily: config.py uses the text checks before any model loads
    from transformers import PreTrainedTokenizerBase

#: A prompt is a plain string or a conversation: a list of ``{"role", "content"}`` messages.
Message = Mapping[str, str]
Prompt = str | Sequence[Message]

_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(text: str, where: str) -> str:
    """``text`` if it is valid Unicode, else a ``ValueError`` naming ``where``.

    A Python string may hold lone surrogates (``"a\\ud800b"``, or the ``surrogateescape``
    form of a non-UTF-8 command-line argument); no tokenizer can encode them. Checked by a
    search, without copying the text.
    """
    if text.isascii():
        return text
    found = _SURROGATE.search(text)
    if found is not None:
        raise ValueError(
            f"{where} is not valid Unicode: it holds the lone surrogate {found.group()!r} at "
            f"index {found.start()} (text decoded with errors='surrogateescape' or a broken "
            "UTF-16 pair); decode it properly or drop that character"
        )
    return text


def template_fields(template: str) -> int:
    """How many ``{prompt}`` fields ``template`` has; ``ValueError`` for anything else.

    Parsed with :class:`string.Formatter`, so ``{{prompt}}`` (literal braces) is not a field.
    Only the bare field is allowed: no other names, no positional ``{}``, no conversion or
    format spec (``{prompt:>999999999}`` would build a huge string).
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(
            f"base_template={_preview(template)} is not a valid format string ({exc}); write "
            "literal braces as '{{' and '}}'"
        ) from exc
    count = 0
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name != "prompt" or spec or conversion:
            raw = (
                "{"
                + name
                + (f"!{conversion}" if conversion else "")
                + (f":{spec}" if spec else "")
                + "}"
            )
            raise ValueError(
                f"base_template may only use the field '{{prompt}}', found {raw!r}; write "
                "literal braces as '{{' and '}}'"
            )
        count += 1
    if count == 0:
        raise ValueError(
            f"base_template={_preview(template)} has no '{{prompt}}' field, so the base model "
            "would never see the prompt ('{{prompt}}' is a literal, not a field)"
        )
    return count


def _preview(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def is_conversation(value: object) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(isinstance(m, Mapping) for m in value)
    )


def normalize_prompts(prompts: object) -> list[Prompt]:
    """Accept one prompt or a list of prompts; raise ``ValueError`` for anything else."""
    if isinstance(prompts, str) or is_conversation(prompts):
        batch: list[Any] = [prompts]
    elif isinstance(prompts, Sequence):
        batch = list(prompts)
    else:
        raise ValueError(
            "prompts must be a string, a conversation (list of {'role','content'} dicts) or a "
            f"list of those, got {type(prompts).__name__}"
        )
    if not batch:
        raise ValueError("prompts is empty: pass at least one prompt")
    for i, prompt in enumerate(batch):
        if isinstance(prompt, str):
            check_text(prompt, f"prompts[{i}]")
            continue
        if not is_conversation(prompt):
            raise ValueError(
                f"prompts[{i}] must be a string or a list of {{'role','content'}} messages, "
                f"got {type(prompt).__name__}"
            )
        for k, message in enumerate(prompt):
            for key in ("role", "content"):
                value = message.get(key)
                if not isinstance(value, str):
                    raise ValueError(
                        f"prompts[{i}][{k}]: every message needs string 'role' and 'content' "
                        f"fields, got {key}={type(value).__name__}"
                    )
                check_text(value, f"prompts[{i}][{k}][{key!r}]")
    return batch


#: Characters a transcript adds around each message ("User: ", "\n\n") and at its end.
_TRANSCRIPT_OVERHEAD = 16


def prompt_chars(prompt: Prompt, system_prompt: str | None, template: str) -> int:
    """About how many characters of text ``prompt`` is for the longer of its two renderings.

    Computed from lengths, without rendering: the base rendering (``template`` with the
    prompt in each ``{prompt}`` field, or a transcript) and the aligned one (the messages and
    the system prompt, before the chat template's own markup). Used to refuse a prompt
    before it is tokenized.
    """
    fields = template_fields(template)
    template_chars = len(template) - fields * len("{prompt}")
    if isinstance(prompt, str):
        base = template_chars + fields * len(prompt)
        aligned = len(prompt)
    else:
        sizes = [len(m["role"]) + len(m["content"]) + _TRANSCRIPT_OVERHEAD for m in prompt]
        turns = [m for m in prompt if m["role"] != "system"]
        if len(turns) == 1 and turns[0]["role"] == "user":
            base = template_chars + fields * len(turns[0]["content"])
        else:
            base = sum(sizes) + _TRANSCRIPT_OVERHEAD
        aligned = sum(sizes)
    return max(base, aligned + len(system_prompt or ""))


def as_messages(prompt: Prompt, system_prompt: str | None) -> list[dict[str, str]]:
    """The aligned model's conversation: the prompt as a user turn, after a system prompt.

    A conversation that already opens with a system message keeps it.
    """
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = [{"role": m["role"], "content": m["content"]} for m in prompt]
    if system_prompt is not None and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def base_text(prompt: Prompt, template: str) -> str:
    """The base model's plain-text rendering.

    A string, or a conversation with a single user turn, goes through ``template``; a longer
    conversation becomes a plain transcript ("User: ...", "Assistant: ...") ending with
    "Assistant:". System messages are not shown to the base model: it has no notion of them.
    """
    if isinstance(prompt, str):
        return template.format(prompt=prompt)
    turns = [m for m in prompt if m["role"] != "system"]
    if len(turns) == 1 and turns[0]["role"] == "user":
        return template.format(prompt=turns[0]["content"])
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in turns]
    return "\n\n".join([*lines, "Assistant:"])


def aligned_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: Prompt, system_prompt: str | None, template: str
) -> list[int]:
    """Token ids of the aligned model's prompt: its chat template with a generation prompt.

    A chat template that refuses the conversation (e.g. "roles must alternate") raises
    ``ValueError`` with the template's message.
    """
    if getattr(tokenizer, "chat_template", None):
        from jinja2 import TemplateError

        try:
            encoded = tokenizer.apply_chat_template(
                as_messages(prompt, system_prompt),
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
            )
        except TemplateError as exc:
            raise ValueError(
                f"prompts: the aligned model's chat template refused this conversation: {exc}"
            ) from exc
        return list(encoded["input_ids"])
    warnings.warn(
        "the aligned tokenizer has no chat template; rendering its prompt with base_template",
        stacklevel=3,
    )
    text = base_text(prompt, template)
    if system_prompt:
        text = f"{system_prompt}\n\n{text}"
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def base_ids(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, template: str) -> list[int]:
    """Token ids of the base model's prompt (with its BOS token when it uses one)."""
    return list(tokenizer(base_text(prompt, template), add_special_tokens=True)["input_ids"])


def check_rendered(base: Sequence[Sequence[int]], aligned: Sequence[Sequence[int]]) -> None:
    """Refuse a prompt that renders to no tokens for a model: a model cannot continue nothing
    (an empty prompt through the template ``"{prompt}"``, with a tokenizer that adds no BOS)."""
    for i, (base_prompt, aligned_prompt) in enumerate(zip(base, aligned, strict=True)):
        for source, ids in (("base", base_prompt), ("aligned", aligned_prompt)):
            if not ids:
                raise ValueError(
                    f"prompts[{i}] renders to no tokens for the {source} model (an empty prompt "
                    "and a tokenizer that adds no BOS token): give the model some text to "
                    "continue, e.g. keep the default base_template '{prompt}\\n'"
                )


class RenderedPrompts:
    """Each model's prompt ids, rendered once per (prompt, system prompt, template) and kept
    for the most recent ``size`` prompts: a server that counts a prompt's tokens before the
    call and the engine that prepares it then tokenize it once, as do repeated prompts."""

    def __init__(
        self, base: PreTrainedTokenizerBase, aligned: PreTrainedTokenizerBase, size: int = 256
    ) -> None:
        self.base, self.aligned, self.size = base, aligned, size
        self._kept: OrderedDict[tuple[str, str | None, str], tuple[list[int], list[int]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def ids(
        self, prompt: Prompt, system_prompt: str | None, template: str
    ) -> tuple[list[int], list[int]]:
        """(base ids, aligned ids) of a normalized prompt; fresh lists on every call."""
        key = (json.dumps(prompt, sort_keys=True, default=repr), system_prompt, template)
        with self._lock:
            if (kept := self._kept.get(key)) is not None:
                self._kept.move_to_end(key)
                return list(kept[0]), list(kept[1])
        rendered = (
            base_ids(self.base, prompt, template),
            aligned_ids(self.aligned, prompt, system_prompt, template),
        )
        with self._lock:
            self._kept[key] = rendered
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        return list(rendered[0]), list(rendered[1])
