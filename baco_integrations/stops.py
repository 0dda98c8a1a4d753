"""Stop strings over growing text: where one completed, and how much text is safe to stream."""

from __future__ import annotations

from collections.abc import Sequence


def find_stop(text: str, stops: Sequence[str], longest: int, delta: str) -> int | None:
    """Where the first stop string that ``delta`` (the end of ``text``) completed begins."""
    if not delta:
        return None
    start = max(0, len(text) - len(delta) - longest + 1)
    hits = [i for s in stops if (i := text.find(s, start)) >= 0]
    return min(hits) if hits else None


def streamable_length(text: str, stops: Sequence[str] | None) -> int:
    """All of ``text`` but a suffix that may begin a stop string."""
    if not stops:
        return len(text)
    held = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:k]):
                held = k
                break
    return len(text) - held
