"""The prompts of a sweep: a JSON-lines file, or the package's own set."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import SweepConfigError

__all__ = [
    "BUILTIN_PROMPTS",
    "BUILTIN_SPLITS",
    "PromptItem",
    "builtin_prompts_path",
    "load_prompts",
]

#: ``prompts = "builtin"`` selects the package's own prompt set (``data/prompts.jsonl``).
BUILTIN_PROMPTS = "builtin"
#: Its two fixed halves, ``"builtin:tuning"`` and ``"builtin:heldout"`` (every other prompt of
#: each category): defaults are chosen on the tuning half and reported on the held-out one.
BUILTIN_SPLITS = ("tuning", "heldout")


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a sweep. ``id`` keys its generations, so it must be stable across runs."""

    id: str
    prompt: str


def is_builtin(source: object) -> bool:
    """Whether ``source`` names the packaged set or one of its halves."""
    return isinstance(source, str) and (
        source == BUILTIN_PROMPTS or source in {f"{BUILTIN_PROMPTS}:{s}" for s in BUILTIN_SPLITS}
    )


def builtin_prompts_path() -> Path:
    """Path of the packaged prompt set (24 original brainstorming / creative-writing prompts)."""
    return Path(str(resources.files("baco_integrations") / "data" / "prompts.jsonl"))


def _parse_prompt_line(line: str, where: str, lineno: int) -> PromptItem:
    """One prompt row; errors start with ``where`` (file and line)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SweepConfigError(f"{where}: not valid JSON ({exc.msg})") from exc
    if not isinstance(row, dict):
        raise SweepConfigError(
            f"{where}: expected a JSON object with a 'prompt' field, got {type(row).__name__}"
        )
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise SweepConfigError(f"{where}: 'prompt' must be a non-empty string")
    raw_id = row.get("id", f"line-{lineno}")
    # bool is an int subclass; an id of `true` is almost certainly a broken file.
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        raise SweepConfigError(f"{where}: 'id' must be a string or an integer")
    return PromptItem(str(raw_id), prompt)


def load_prompts(source: str | os.PathLike[str] = BUILTIN_PROMPTS) -> list[PromptItem]:
    """Read a JSON-lines prompt file, or the packaged set for ``"builtin"`` (or one of its
    halves, ``"builtin:tuning"`` / ``"builtin:heldout"``).

    Each non-blank line is a JSON object with a non-empty string ``prompt``; an ``id`` (string
    or integer, as in NoveltyBench's files) is optional and defaults to the 1-based line number
    (``"line-7"``), other fields (``category``, ``language``...) are ignored. Ids must be
    unique. Errors name the file and line.
    """
    name, _, split = str(source).partition(":")
    builtin = name == BUILTIN_PROMPTS and (not split or split in BUILTIN_SPLITS)
    if name == BUILTIN_PROMPTS and split and not builtin:
        raise SweepConfigError(
            f"prompts={str(source)!r}: unknown split {split!r}; allowed: "
            + ", ".join(f"'builtin:{s}'" for s in BUILTIN_SPLITS)
        )
    path = builtin_prompts_path() if builtin else Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SweepConfigError(f"cannot read prompt file {str(path)!r}: {exc}") from exc
    items: list[PromptItem] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        item = _parse_prompt_line(line, where, lineno)
        if builtin and split and json.loads(line).get("split") != split:
            continue
        if item.id in seen:
            raise SweepConfigError(
                f"{where}: duplicate id {item.id!r} (first on line {seen[item.id]})"
            )
        seen[item.id] = lineno
        items.append(item)
    if not items:
        raise SweepConfigError(f"prompt file {str(path)!r} holds no prompts")
    return items
