"""A model served elsewhere: an OpenAI-compatible ``/v1/completions`` endpoint that returns
log-probs (llama.cpp's ``llama-server``, vLLM, SGLang's OpenAI route).

The runner keeps each row's token ids (prompt, then response) here. When the loop needs a
row's distribution and has none, the runner sends the row as a token-id prompt and lets the
engine *draft* a run of tokens with the row's own sampling settings and seed, each with its
top-k log-probs: one round trip gives the distributions of as many positions as the response
then follows the draft (the loop takes the engine's drawn tokens while that model writes,
``Distributions.proposals``). A row another model wrote into leaves the draft and is sent
again when next needed; each engine reuses its prefix cache across a row's calls. Rows are
sent concurrently on one asyncio loop, so the engine batches them, and a row whose call was
cancelled has its request cancelled (the connection closes). Protocol and error bounds:
docs/remote.md.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Coroutine, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx
import torch
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from transformers import PreTrainedTokenizerBase

from ..config import MIN_TEMPERATURE
from .base import Distributions, ModelFacts, ModelRunner, RowSettings, RowsFailed, RunnerCounters

#: How an engine spells the top-k log-probs: llama.cpp's ``n_probs`` (ids in each entry), or
#: OpenAI's legacy ``logprobs`` (vLLM and SGLang, token ids as ``"token_id:N"`` keys).
Dialect = Literal["llama.cpp", "openai"]
#: Engines that say who they are in ``GET /models`` (``owned_by``).
_OWNERS: dict[str, Dialect] = {"llamacpp": "llama.cpp", "vllm": "openai", "sglang": "openai"}
#: Statuses after which the same request may be sent again: it changes nothing on the server.
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: How often a wait on in-flight requests looks whether their calls were cancelled.
_CANCEL_POLL_S = 0.05
#: Text whose ids, from the endpoint and from the local tokenizer, must agree.
_TOKENIZER_PROBE = "Hello, world! BACO brainstorms 42 ideas: naïve café, 東京."
_T = TypeVar("_T")


class EndpointError(RuntimeError):
    """An endpoint could not give a distribution: it names the endpoint and what went wrong."""


class Endpoint(BaseModel):
    """One model served over HTTP, as ``BacoEngine.from_endpoints`` takes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The API's base URL, e.g. ``http://127.0.0.1:8080/v1`` (``/completions`` is appended).
    url: str
    #: The model name to send; None: the first model the endpoint lists.
    model: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    #: Log-probs asked per position (engines cap this: vLLM's ``--max-logprobs`` is 20).
    top_logprobs: int = Field(default=20, ge=1, le=20)
    #: None: detected from ``GET /models``.
    dialect: Dialect | None = None
    #: Sends again after a connection error, a timeout or a 408/429/5xx, with backoff.
    max_retries: int = Field(default=2, ge=0, le=10)
    #: Rows sent at once.
    max_concurrency: int = Field(default=16, ge=1, le=256)
    #: Tokens the engine drafts per call (Nudging asks 16, Co-LLM 10): more saves round trips
    #: while this model writes and costs engine time when the router switches early.
    draft_tokens: int = Field(default=16, ge=1, le=256)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        return url.rstrip("/")


@dataclass(frozen=True)
class _Entry:
    """One drafted position: the engine's top-k there and the token it drew."""

    ids: list[int]
    logprobs: list[float]
    drawn: int


@dataclass
class _Row:
    """A row's ids (prompt, then response) and the engine's draft from ``draft_start`` on."""

    tokens: list[int]
    prompt_length: int
    settings: RowSettings
    #: The most response tokens the row may have (the call's cap).
    room: int
    draft_start: int = 0
    draft: list[_Entry] = field(default_factory=list)
    #: Positions of the current draft the response went through (each read at least once).
    followed: int = 0
    #: Tokens the next request drafts (None: the endpoint's ``draft_tokens``).
    next_length: int | None = None

    def entry(self) -> _Entry | None:
        """The draft's entry for the row's next position, if the response has followed the
        draft so far (verified entries are dropped, so each check is short)."""
        ahead = len(self.tokens) - self.draft_start
        if not 0 <= ahead < len(self.draft):
            return None
        for offset in range(ahead):
            if self.tokens[self.draft_start + offset] != self.draft[offset].drawn:
                self.draft = []
                return None
        del self.draft[:ahead]
        self.draft_start += ahead
        self.followed += ahead
        return self.draft[0]

    def max_tokens(self, draft_tokens: int) -> int:
        """The next draft's length: as long as the endpoint's ``draft_tokens`` at first, then
        twice what the row followed of its last draft (a model asked only for a router's
        signal, whose draft the other model's word cuts at once, drafts little; a writer's
        drafts grow back), within what the call may still write."""
        wanted = draft_tokens if self.next_length is None else self.next_length
        written = len(self.tokens) - self.prompt_length
        return max(1, min(wanted, self.room - written))

    def start_draft(self, start: int, entries: list[_Entry], draft_tokens: int) -> None:
        if self.draft_start or self.draft:  # a draft came before: size the next by it
            self.next_length = min(draft_tokens, 2 * (self.followed + 1))
        self.draft_start, self.draft, self.followed = start, entries, 0


class _Loop:
    """An asyncio loop on its own thread with the endpoint's HTTP client: rows' requests run
    concurrently there, and a request is cancelled by cancelling its future."""

    def __init__(self, client: httpx.AsyncClient, max_concurrency: int) -> None:
        self.client = client
        self.limit = asyncio.Semaphore(max_concurrency)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="baco-endpoint", daemon=True
        )
        self.thread.start()

    def submit(self, work: Coroutine[Any, Any, _T]) -> Future[_T]:
        return asyncio.run_coroutine_threadsafe(work, self.loop)

    def close(self) -> None:
        """Close the client and end the thread (once; later calls do nothing)."""
        if self.loop.is_closed():
            return
        self.submit(self.client.aclose()).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class EndpointRunner(ModelRunner):
    """Rows decoded by a remote ``/v1/completions`` endpoint (module docstring)."""

    def __init__(
        self,
        endpoint: Endpoint,
        tokenizer: PreTrainedTokenizerBase,
        *,
        context_window: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.tokenizer = tokenizer
        self._transport = transport  # e.g. a proxy's, or httpx.MockTransport in tests
        self._loop: _Loop | None = None
        self._finalizer: weakref.finalize[Any, Any]
        self._loop_lock = threading.Lock()
        try:
            self.dialect, model = self._run(self._describe())
            self.model = endpoint.model or model
            self._run(self._check_tokenizer())
        finally:
            self._stop_loop()  # an idle runner holds no thread
        self._facts = ModelFacts(
            vocab_size=len(tokenizer),
            eos_ids=frozenset(),
            context_window=context_window,
            device=torch.device("cpu"),
            name=self.model,
        )
        self._rows: list[_Row] = []
        #: Work and waiting, for stats and benchmarks: HTTP requests, prompt tokens sent,
        #: tokens the engine drafted, and seconds the loop waited on this endpoint.
        self.requests = 0
        self.tokens_sent = 0
        self.drafted_tokens = 0
        self.waited_s = 0.0

    def __repr__(self) -> str:
        return f"EndpointRunner({self.endpoint.url!r}, model={self.model!r})"

    @property
    def facts(self) -> ModelFacts:
        return self._facts

    @property
    def rows(self) -> int:
        return len(self._rows)

    @property
    def cheap_extra_rows(self) -> bool:
        return False  # every row is a request

    @property
    def full_distributions(self) -> bool:
        return False  # the top-k log-probs

    @property
    def top_logprobs_limit(self) -> int:
        return self.endpoint.top_logprobs

    def counters(self) -> RunnerCounters:
        return RunnerCounters(forward_passes=self.requests, forward_tokens=self.tokens_sent)

    # ------------------------------------------------------------- rows

    def add_rows(
        self,
        prompts: Sequence[list[int]],
        repeats: Sequence[int],
        capacity: int,
        sampling: Sequence[RowSettings] | None = None,
    ) -> None:
        # Nothing is sent yet: each sample drafts with its own seed when first needed.
        prompt_rows = [list(p) for p, k in zip(prompts, repeats, strict=True) for _ in range(k)]
        settings = list(sampling) if sampling is not None else [RowSettings()] * len(prompt_rows)
        if len(settings) != len(prompt_rows):
            raise ValueError(f"{len(settings)} row settings for {len(prompt_rows)} rows")
        self._rows += [
            _Row(ids, len(ids), row_settings, capacity)
            for ids, row_settings in zip(prompt_rows, settings, strict=True)
        ]

    def append(self, row: int, tokens: Sequence[int]) -> None:
        self._rows[row].tokens.extend(tokens)

    def rewind(self, row: int, length: int) -> None:
        state = self._rows[row]
        del state.tokens[state.prompt_length + length :]
        if len(state.tokens) < state.draft_start:
            state.draft = []

    def distributions(self, rows: Sequence[int]) -> Distributions:
        missing = [r for r in dict.fromkeys(rows) if self._rows[r].entry() is None]
        if missing:
            self._draft(missing)
        # A row not asked for and off its draft is stale (its scores must not be read).
        stale = _Entry([0], [0.0], -1)
        entries = [state.entry() or stale for state in self._rows]
        width = max(len(e.ids) for e in entries)
        ids = torch.zeros((len(entries), width), dtype=torch.long)
        logprobs = torch.full((len(entries), width), float("-inf"))
        for row, e in enumerate(entries):
            ids[row, : len(e.ids)] = torch.tensor(e.ids)
            logprobs[row, : len(e.logprobs)] = torch.tensor(e.logprobs)
        top = Distributions.from_top_k(ids, logprobs, self._facts.vocab_size)
        proposals = torch.tensor([e.drawn for e in entries], dtype=torch.long)
        return Distributions(top.logits, top.rest_mass, proposals)

    def select(self, keep: Sequence[int]) -> None:
        self._rows = [self._rows[r] for r in keep]

    def release(self) -> None:
        self._rows = []
        self._stop_loop()  # an idle engine holds no thread and no connection

    def close(self) -> None:
        self.release()

    # ------------------------------------------------------------- the loop

    def _running_loop(self) -> _Loop:
        with self._loop_lock:
            if self._loop is None:
                key = self.endpoint.api_key
                client = httpx.AsyncClient(
                    base_url=self.endpoint.url,
                    headers={"authorization": f"Bearer {key.get_secret_value()}"} if key else {},
                    timeout=self.endpoint.timeout_s,
                    limits=httpx.Limits(max_connections=self.endpoint.max_concurrency),
                    transport=self._transport,
                )
                self._loop = _Loop(client, self.endpoint.max_concurrency)
                # A runner dropped without ``release`` still ends its thread.
                self._finalizer = weakref.finalize(self, self._loop.close)
            return self._loop

    def _stop_loop(self) -> None:
        with self._loop_lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            self._finalizer.detach()
            loop.close()

    def _run(self, work: Coroutine[Any, Any, _T]) -> _T:
        return self._running_loop().submit(work).result()

    # ------------------------------------------------------------- HTTP

    def _draft(self, rows: list[int]) -> None:
        """Send ``rows`` at once; keep each answer as the row's draft. Rows whose call was
        cancelled are cancelled here; failed rows raise :class:`RowsFailed` after the
        others' drafts are kept."""
        started = time.perf_counter()
        loop = self._running_loop()
        futures = {loop.submit(self._ask(self._rows[r], loop)): r for r in rows}
        errors: dict[int, BaseException] = {}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=_CANCEL_POLL_S, return_when=FIRST_COMPLETED)
            for future in done:
                row = futures[future]
                try:
                    start, entries = future.result()
                    self._rows[row].start_draft(start, entries, self.endpoint.draft_tokens)
                except Exception as exc:
                    errors[row] = exc
            for future in [f for f in pending if self._rows[futures[f]].settings.abandoned()]:
                future.cancel()  # cancels the task: its connection is closed
                pending.discard(future)
                errors[futures[future]] = EndpointError(
                    f"{self.endpoint.url}: the call was cancelled"
                )
        self.waited_s += time.perf_counter() - started
        if errors:
            raise RowsFailed(dict(sorted(errors.items())))

    async def _ask(self, row: _Row, loop: _Loop) -> tuple[int, list[_Entry]]:
        """A draft for the row from its current ids: ``(start, entries)``."""
        ids = list(row.tokens)
        body = self._body(ids, row.settings, row.max_tokens(self.endpoint.draft_tokens))
        async with loop.limit:
            reply = await self._post(loop.client, "/completions", body)
        self.requests += 1
        self.tokens_sent += len(ids)
        entries = self._parse_draft(reply, self.endpoint.top_logprobs)
        self.drafted_tokens += len(entries)
        return len(ids), entries

    def _body(self, ids: list[int], settings: RowSettings, max_tokens: int) -> dict[str, Any]:
        """The request for a draft, sampled with the row's settings and a seed keyed by the
        position (the same row and prefix draw the same tokens)."""
        greedy = settings.temperature < MIN_TEMPERATURE
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": ids,
            "max_tokens": max_tokens,
            "temperature": 0.0 if greedy else settings.temperature,
            "top_p": settings.top_p,
            "min_p": settings.min_p,
        }
        if settings.seed is not None:
            body["seed"] = (settings.seed * 1_000_003 + len(ids)) % 2**31
        k = self.endpoint.top_logprobs
        if self.dialect == "llama.cpp":
            # top_k 0 is off in llama.cpp (its default, 40, is not).
            body.update(n_probs=k, cache_prompt=True, top_k=settings.top_k)
        else:  # vLLM and SGLang: -1 is off
            body.update(logprobs=k, return_tokens_as_token_ids=True, top_k=settings.top_k or -1)
        return body

    async def _post(self, client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
        where = f"{self.endpoint.url}{path}"
        for attempt in range(self.endpoint.max_retries + 1):
            last = attempt == self.endpoint.max_retries
            try:
                response = await client.post(path, json=body)
            except httpx.TimeoutException as exc:
                if last:
                    raise EndpointError(
                        f"{where} did not answer within {self.endpoint.timeout_s:g} s "
                        f"(Endpoint.timeout_s): {exc!r}"
                    ) from exc
            except httpx.TransportError as exc:
                if last:
                    raise EndpointError(f"{where} cannot be reached: {exc!r}") from exc
            else:
                if response.status_code < 400:
                    return _json(response, where)
                if response.status_code not in _RETRY_STATUSES or last:
                    raise EndpointError(
                        f"{where} answered {response.status_code}: {response.text[:500]}"
                    )
            # The same request again: a draft is keyed by its seed, so a retry cannot change it.
            await asyncio.sleep(min(0.25 * 2**attempt, 4.0))
        raise AssertionError("unreachable")

    def _parse_draft(self, reply: Any, k: int) -> list[_Entry]:
        where = f"{self.endpoint.url}/completions"
        try:
            logprobs = reply["choices"][0]["logprobs"]
            if self.dialect == "llama.cpp":
                entries = [_llama_cpp_entry(item) for item in logprobs["content"]]
            else:
                entries = [
                    _openai_entry(token, logprob, top, where)
                    for token, logprob, top in zip(
                        logprobs["tokens"],
                        logprobs["token_logprobs"],
                        logprobs["top_logprobs"],
                        strict=True,
                    )
                ]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise EndpointError(
                f"{where} returned no per-token log-probs in the expected shape "
                f"({type(exc).__name__}: {exc}); asked for {k}: {str(reply)[:300]}"
            ) from exc
        if not entries:
            raise EndpointError(f"{where} returned no tokens (asked for a draft)")
        for entry in entries:
            if len(entry.ids) < k:
                raise EndpointError(
                    f"{where} returned {len(entry.ids)} log-probs for a position, asked for "
                    f"{k} (Endpoint.top_logprobs; vLLM caps it with --max-logprobs)"
                )
        vocab = len(self.tokenizer)
        if any(not 0 <= t < vocab for e in entries for t in (e.drawn, *e.ids)):
            raise EndpointError(
                f"{where} returned token ids outside the local tokenizer's {vocab} ids: the "
                "endpoint serves another vocabulary than the tokenizer given for it"
            )
        return entries

    async def _describe(self) -> tuple[Dialect, str]:
        """The endpoint's dialect and its first model (``GET /models``)."""
        where = f"{self.endpoint.url}/models"
        try:
            response = await self._running_loop().client.get("/models")
        except httpx.HTTPError as exc:
            raise EndpointError(f"{where} cannot be reached: {exc!r}") from exc
        if response.status_code >= 400:
            raise EndpointError(f"{where} answered {response.status_code}: {response.text[:300]}")
        models = _json(response, where).get("data") or []
        if not models:
            raise EndpointError(f"{where} lists no model")
        owner = str(models[0].get("owned_by", ""))
        dialect = self.endpoint.dialect or _OWNERS.get(owner)
        if dialect is None:
            raise EndpointError(
                f"{where}: cannot tell how this engine (owned_by={owner!r}) returns log-probs; "
                f"set Endpoint.dialect to one of 'llama.cpp', 'openai'"
            )
        return dialect, str(models[0]["id"])

    async def _check_tokenizer(self) -> None:
        """The endpoint's ids for a probe text must be the local tokenizer's (llama.cpp's and
        vLLM's ``POST /tokenize``, beside ``/v1``); an engine without it is not checked here,
        and an id past the tokenizer is still caught in every reply."""
        root = self.endpoint.url.removesuffix("/v1")
        body = {"content": _TOKENIZER_PROBE, "add_special": False, "model": self.model}
        body.update(prompt=_TOKENIZER_PROBE, add_special_tokens=False)
        try:
            response = await self._running_loop().client.post(f"{root}/tokenize", json=body)
            theirs = [int(t) for t in response.json()["tokens"]]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return
        ours = self.tokenizer.encode(_TOKENIZER_PROBE, add_special_tokens=False)
        if theirs != ours:
            raise EndpointError(
                f"{self.endpoint.url} tokenizes text differently from the local tokenizer "
                f"given for it ({type(self.tokenizer).__name__}, {len(self.tokenizer)} ids): "
                f"{_TOKENIZER_PROBE!r} is {theirs[:12]} there and {ours[:12]} here; pass the "
                "tokenizer of the model the endpoint serves"
            )


def _llama_cpp_entry(item: dict[str, Any]) -> _Entry:
    """An entry from llama.cpp's ``logprobs.content`` item (ids in every entry)."""
    pairs = {int(e["id"]): float(e["logprob"]) for e in item["top_logprobs"]}
    drawn = int(item["id"])
    pairs.setdefault(drawn, float(item["logprob"]))
    return _Entry(list(pairs), list(pairs.values()), drawn)


def _openai_entry(token: str, logprob: float, top: dict[str, float], where: str) -> _Entry:
    """An entry from OpenAI's legacy ``logprobs`` (vLLM/SGLang, ids as ``"token_id:N"``)."""
    pairs = {_token_id(key, where): float(value) for key, value in top.items()}
    drawn = _token_id(token, where)
    pairs.setdefault(drawn, float(logprob))
    return _Entry(list(pairs), list(pairs.values()), drawn)


def _json(response: httpx.Response, where: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise EndpointError(f"{where} returned malformed JSON: {response.text[:300]!r}") from exc


def _token_id(key: str, where: str) -> int:
    """A token id from a ``top_logprobs`` key (``"token_id:N"``, vLLM's
    ``return_tokens_as_token_ids``)."""
    if not key.startswith("token_id:"):
        raise EndpointError(
            f"{where} returned token text ({key!r}) instead of token ids: run vLLM or SGLang, "
            "whose return_tokens_as_token_ids spells them 'token_id:N'"
        )
    return int(key.removeprefix("token_id:"))
