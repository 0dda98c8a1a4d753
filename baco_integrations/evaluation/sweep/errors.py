"""The sweep's exceptions: what went wrong, with the file / setting / line named."""

from __future__ import annotations

__all__ = [
    "StoreRecordError",
    "SweepConfigError",
    "SweepError",
    "SweepLockedError",
    "UnsafeOutputError",
]


class SweepConfigError(ValueError):
    """A sweep configuration or prompt file is invalid; the message names the field / line."""


class SweepError(RuntimeError):
    """A sweep cannot go on (e.g. the output directory holds generations of other settings)."""


class StoreRecordError(SweepError, ValueError):
    """A line of ``generations.jsonl`` is JSON but not a generation record; the message names
    the file and the line. A ValueError too: the content, not the run, is at fault."""


class SweepLockedError(SweepError):
    """Another sweep holds the output directory's lock."""


class UnsafeOutputError(SweepError):
    """The sweep would write through a symbolic link (or into something that is not a plain
    file / directory), so it refuses: a link planted in the output directory must not redirect
    its writes to another file."""
