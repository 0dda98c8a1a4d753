"""The generations of a sweep: an append-only JSON-lines file that a rerun resumes from.

One line of ``generations.jsonl`` is one batch: the ``n`` samples of one prompt at one
operating point, with the prompt and every setting that made them (:func:`batch_settings`).
A batch is appended with a single ``write`` and flushed to disk as soon as it is made, so an
interrupted sweep loses at most the batch in flight. Each line is validated on reading
(:class:`GenerationRecord`); a line that is JSON but not a record is an error naming the file
and line.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..quality import RECORDED_LOGPROB_KEY
from .config import OperatingPoint, SweepConfig
from .errors import StoreRecordError, SweepError
from .files import open_regular_file, write_bytes_atomic
from .prompts import PromptItem

__all__ = [
    "GENERATIONS_FILE",
    "GenerationRecord",
    "GenerationStore",
    "Key",
    "StoredSample",
    "batch_seed",
    "batch_settings",
    "check_resumed",
    "make_record",
]

GENERATIONS_FILE = "generations.jsonl"

#: A batch's key: (method name, operating point label, prompt id).
Key = tuple[str, str, str]


def batch_seed(seed: int, prompt_id: str) -> int:
    """Seed of the batch of one prompt: a stable hash of the sweep seed and the prompt id.

    The same seed serves every operating point of a prompt (common random numbers): the points
    differ by their settings, not by the luck of the draw, so curves are smoother and a
    resumed batch is generated exactly as it would have been without the interruption.
    """
    digest = hashlib.sha256(f"{seed}\x00{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def jsonable(value: Any) -> Any:
    """Settings as stored in a record: plain JSON, so they compare equal after a reload."""
    return json.loads(json.dumps(value, default=str))


# --------------------------------------------------------------------------- record format


class StoredSample(BaseModel):
    """One sample of a stored batch (see :func:`make_record`)."""

    model_config = ConfigDict(extra="allow", strict=True)

    text: str
    num_tokens: int = Field(ge=0)
    base_fraction: float = Field(ge=0.0, le=1.0)
    finish_reason: str
    token_ids: list[int]
    #: One letter per token: ``b`` = the base model wrote it, ``a`` = the aligned model.
    sources: str = Field(pattern=r"^[ab]*$")

    @model_validator(mode="after")
    def _one_source_per_token(self) -> StoredSample:
        if not len(self.token_ids) == len(self.sources) == self.num_tokens:
            raise ValueError(
                f"num_tokens is {self.num_tokens} but there are {len(self.token_ids)} token_ids "
                f"and {len(self.sources)} sources"
            )
        return self


class GenerationRecord(BaseModel):
    """One line of ``generations.jsonl``. Extra fields are kept (a later version may add some)."""

    model_config = ConfigDict(extra="allow", strict=True)

    method: str
    point: str
    prompt_id: str
    prompt: str
    settings: dict[str, Any]
    samples: list[StoredSample] = Field(min_length=1)

    @model_validator(mode="after")
    def _n_samples(self) -> GenerationRecord:
        n = self.settings.get("n")
        if isinstance(n, int) and n != len(self.samples):
            raise ValueError(f"settings.n is {n} but {len(self.samples)} samples are stored")
        return self

    @property
    def key(self) -> Key:
        return (self.method, self.point, self.prompt_id)


def _describe(exc: ValidationError) -> str:
    """The first few problems of a record, each with where it is (``samples[0].text``)."""
    parts = []
    for err in exc.errors()[:3]:
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def make_record(
    point: OperatingPoint,
    prompt: PromptItem,
    settings: Mapping[str, Any],
    outputs: Sequence[Any],
) -> dict[str, Any]:
    """The stored form of one generated batch (``outputs``: the engine's samples)."""
    return {
        "method": point.method,
        "point": point.label,
        "prompt_id": prompt.id,
        "prompt": prompt.prompt,
        "settings": dict(settings),
        "samples": [
            {
                "text": o.text,
                "num_tokens": o.num_tokens,
                "base_fraction": o.base_fraction,
                "finish_reason": o.finish_reason,
                "token_ids": list(o.token_ids),
                # One letter per token (b = base, a = aligned): compact, and enough to see
                # which words each model wrote.
                "sources": "".join("b" if s == "base" else "a" for s in o.sources),
                **(
                    {RECORDED_LOGPROB_KEY: o.aligned_mean_logprob} if o.logprobs is not None else {}
                ),
            }
            for o in outputs
        ],
    }


# --------------------------------------------------------------------------- the file


class GenerationStore:
    """Append-only JSON-lines file of generation batches, keyed by (method, point, prompt id).

    One line = one batch, written with a single ``write`` and flushed to disk, so a line is
    either complete or is the torn tail of a crash. On opening, a torn last line (not valid
    JSON) is cut off, with a warning: it is regenerated. Any other line that is not a valid
    :class:`GenerationRecord` is a :class:`StoreRecordError` naming the file and line. Later
    lines win over earlier ones with the same key. The file is never opened through a
    symbolic link (:func:`~.files.open_regular_file`).
    """

    def __init__(self, path: str | os.PathLike[str], *, resume: bool = True) -> None:
        self.path = Path(path)
        self.records: dict[Key, dict[str, Any]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not resume or not self.path.exists():
            # --no-resume starts over: the previous file is replaced, not mixed in.
            write_bytes_atomic(self.path, b"")
            return
        self._load()

    @staticmethod
    def key_of(record: Mapping[str, Any]) -> Key:
        return (str(record["method"]), str(record["point"]), str(record["prompt_id"]))

    def _read(self) -> bytes:
        fd = open_regular_file(self.path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as handle:
            return handle.read()

    def _parse(self, line: bytes, lineno: int, torn_tail: bool) -> dict[str, Any] | None:
        """The record on one line; None for a torn tail (``torn_tail``: nothing follows it)."""
        try:
            data = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if torn_tail:
                # The torn tail of an interrupted write: drop it, the batch is redone.
                warnings.warn(
                    f"{self.path}: line {lineno} is incomplete (interrupted write); "
                    "that batch will be generated again",
                    RuntimeWarning,
                    stacklevel=4,
                )
                return None
            raise StoreRecordError(
                f"{self.path}, line {lineno}: not valid JSON ({exc}); fix or remove that line, "
                "or rerun with --no-resume"
            ) from exc
        where = f"{self.path}, line {lineno}: not a generation record"
        fix = "Fix or remove that line, or rerun with --no-resume"
        if not isinstance(data, dict):
            raise StoreRecordError(
                f"{where}: expected a JSON object, got {type(data).__name__}. {fix}"
            )
        try:
            GenerationRecord.model_validate(data)
        except ValidationError as exc:
            raise StoreRecordError(f"{where}: {_describe(exc)}. {fix}") from None
        return data

    def _load(self) -> None:
        data = self._read()
        good_end = 0
        lines = data.split(b"\n")
        for index, line in enumerate(lines):
            last = index == len(lines) - 1
            if not line.strip():
                if not last:
                    good_end += len(line) + 1
                continue
            torn_tail = all(not rest.strip() for rest in lines[index + 1 :])
            record = self._parse(line, index + 1, torn_tail)
            if record is None:
                break
            self.records[self.key_of(record)] = record
            good_end += len(line) + (0 if last else 1)
        if good_end < len(data):
            fd = open_regular_file(self.path, os.O_WRONLY)
            try:
                os.ftruncate(fd, good_end)
            finally:
                os.close(fd)
        if good_end and not data[:good_end].endswith(b"\n"):
            # A complete last record without its newline: add it before appending more.
            self._write(b"\n")

    def _write(self, data: bytes) -> None:
        fd = open_regular_file(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def __contains__(self, key: Key) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: Key) -> dict[str, Any] | None:
        return self.records.get(key)

    def append(self, record: dict[str, Any]) -> None:
        """Store one batch: one line, flushed to disk before this returns."""
        self._write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        self.records[self.key_of(record)] = record


# --------------------------------------------------------------------------- resuming


def batch_settings(
    config: SweepConfig, point: OperatingPoint, prompt: PromptItem
) -> dict[str, Any]:
    """Everything that determines a batch's generations; stored with it and compared on
    resume, so a changed config never silently mixes with old generations."""
    return jsonable(
        {
            "base": config.base,
            "aligned": config.aligned,
            "base_gguf_file": config.base_gguf_file,
            "aligned_gguf_file": config.aligned_gguf_file,
            "dtype": config.dtype,
            "n": config.n,
            "max_new_tokens": config.max_new_tokens,
            "seed": batch_seed(config.seed, prompt.id),
            **point.settings,
        }
    )


def check_resumed(
    store: GenerationStore,
    config: SweepConfig,
    work: Sequence[tuple[OperatingPoint, PromptItem]],
) -> None:
    """Raise :class:`SweepError` if a stored batch of ``work`` was made with other settings."""
    for point, prompt in work:
        record = store.get((point.method, point.label, prompt.id))
        if record is None:
            continue
        expected = batch_settings(config, point, prompt)
        stored = record.get("settings", {})
        problems = [
            f"{k}: stored {stored.get(k)!r}, config {expected.get(k)!r}"
            for k in sorted(set(expected) | set(stored))
            if stored.get(k) != expected.get(k)
        ]
        if record.get("prompt") != prompt.prompt:
            problems.append("the prompt text differs")
        if problems:
            raise SweepError(
                f"{store.path} holds generations for {point.method} {point.label} prompt "
                f"{prompt.id!r} made with other settings ({'; '.join(problems[:3])}). Use another "
                "output_dir, or rerun with --no-resume to start over."
            )
