"""Conversations as the engine reads them: the role names it knows, and same-role turn merging.

Both framework adapters turn their message objects into ``(role, text)`` turns and hand them
to :func:`merge_turns`; nothing here knows LangChain or LlamaIndex.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

#: The roles of the engine's ``{"role", "content"}`` messages.
Role = Literal["system", "user", "assistant"]

#: Role names used by chat APIs and frameworks, and the engine role each becomes
#: (LangChain says "human"/"ai", LlamaIndex "developer"/"model"/"chatbot" besides the rest).
ROLE_ALIASES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "model": "assistant",
    "chatbot": "assistant",
}

#: What joins consecutive turns of one role.
TURN_SEPARATOR = "\n\n"


def canonical_role(name: str) -> Role | None:
    """The engine role for a role ``name`` (case-insensitive), or None for one it cannot read
    (tool and function results, custom roles)."""
    return ROLE_ALIASES.get(name.strip().lower())


def merge_turns(turns: Iterable[tuple[Role, str]]) -> list[dict[str, str]]:
    """``(role, text)`` turns as the engine's conversation, consecutive same-role turns joined.

    Many chat templates reject two turns of one role in a row, and frameworks produce them:
    LlamaIndex puts ``LLM.system_prompt`` in front of a template's own system message, a
    LangChain prompt may hold two human messages. They are joined with a blank line
    (:data:`TURN_SEPARATOR`). An empty conversation is a ``ValueError``.
    """
    conversation: list[dict[str, str]] = []
    for role, text in turns:
        if conversation and conversation[-1]["role"] == role:
            conversation[-1]["content"] += TURN_SEPARATOR + text
        else:
            conversation.append({"role": role, "content": text})
    if not conversation:
        raise ValueError("a conversation needs at least one message")
    return conversation
