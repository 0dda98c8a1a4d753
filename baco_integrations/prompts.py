"""Rendering one user request for each model: chat template for aligned, plain text for base."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

#: A prompt is a plain string or a conversation: a list of ``{"role", "content"}`` messages.
Message = Mapping[str, str]
Prompt = str | Sequence[Message]


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
            continue
        if not is_conversation(prompt):
            raise ValueError(
                f"prompts[{i}] must be a string or a list of {{'role','content'}} messages, "
                f"got {type(prompt).__name__}"
            )
        for message in prompt:
            if not isinstance(message.get("role"), str) or not isinstance(
                message.get("content"), str
            ):
                raise ValueError(
                    f"prompts[{i}]: every message needs string 'role' and 'content' fields"
                )
    return batch


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
    """Token ids of the aligned model's prompt: its chat template with a generation prompt."""
    if getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(
            as_messages(prompt, system_prompt),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
        )
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
