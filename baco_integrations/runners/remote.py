"""A model served elsewhere: an OpenAI-compatible ``/v1/completions`` endpoint that returns
log-probs (llama.cpp's ``llama-server``, vLLM, SGLang's OpenAI route).

The runner keeps each row's token ids (prompt, then response) here and, when the loop asks
for a row's distribution, sends the row as a token-id prompt for one token with its top-k
log-probs (each engine reuses its prefix cache across the calls of a row). Rows are sent
concurrently, so the engine batches them. The loop routes and samples within those k tokens
(``Distributions.from_top_k``): exact at temperature 0, an approximation of the full
distribution otherwise (docs/remote.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import httpx
import torch
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from transformers import PreTrainedTokenizerBase

from .base import Distributions, ModelFacts, ModelRunner, RunnerCounters

#: How an engine spells the top-k log-probs: llama.cpp's ``n_probs`` (ids in each entry), or
#: OpenAI's legacy ``logprobs`` (vLLM and SGLang, token ids as ``"token_id:N"`` keys).
Dialect = Literal["llama.cpp", "openai"]
#: Engines that say who they are in ``GET /models`` (``owned_by``).
_OWNERS: dict[str, Dialect] = {"llamacpp": "llama.cpp", "vllm": "openai", "sglang": "openai"}
#: Statuses after which the same request may be sent again: it changes nothing on the server.
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


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

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        return url.rstrip("/")


class EndpointRunner(ModelRunner):
    """Rows decoded by a remote ``/v1/completions`` endpoint (module docstring)."""

    def __init__(
        self,
        endpoint: Endpoint,
        tokenizer: PreTrainedTokenizerBase,
        *,
        context_window: int | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.tokenizer = tokenizer
        key = endpoint.api_key
        self._client = httpx.Client(
            base_url=endpoint.url,
            headers={"authorization": f"Bearer {key.get_secret_value()}"} if key else {},
            timeout=endpoint.timeout_s,
            transport=transport,  # e.g. a proxy's, or httpx.MockTransport in tests
        )
        self.dialect, model = self._describe()
        self.model = endpoint.model or model
        self._facts = ModelFacts(
            vocab_size=len(tokenizer),
            eos_ids=frozenset(),
            context_window=context_window,
            device=torch.device("cpu"),
            name=self.model,
        )
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.tokens: list[list[int]] = []  # per row: prompt, then response
        self.prompt_length: list[int] = []
        self.fresh: list[bool] = []
        self._top: list[tuple[list[int], list[float]]] = []  # per row: its last top-k
        self.requests = 0
        self.tokens_sent = 0

    def __repr__(self) -> str:
        return f"EndpointRunner({self.endpoint.url!r}, model={self.model!r})"

    @property
    def facts(self) -> ModelFacts:
        return self._facts

    @property
    def rows(self) -> int:
        return len(self.tokens)

    def counters(self) -> RunnerCounters:
        return RunnerCounters(forward_passes=self.requests, forward_tokens=self.tokens_sent)

    # ------------------------------------------------------------- rows

    def add_rows(self, prompts: Sequence[list[int]], repeats: Sequence[int], capacity: int) -> None:
        # Once per prompt (its samples share it), before any row is added: a failure adds none.
        per_prompt = self._fetch([list(p) for p in prompts])
        added = [list(p) for p, k in zip(prompts, repeats, strict=True) for _ in range(k)]
        top = [t for t, k in zip(per_prompt, repeats, strict=True) for _ in range(k)]
        self.tokens += added
        self.prompt_length += [len(p) for p in added]
        self.fresh += [True] * len(added)
        self._top += top

    def append(self, row: int, tokens: Sequence[int]) -> None:
        if tokens:
            self.tokens[row].extend(tokens)
            self.fresh[row] = False

    def rewind(self, row: int, length: int) -> None:
        del self.tokens[row][self.prompt_length[row] + length :]
        self.fresh[row] = False

    def distributions(self, rows: Sequence[int]) -> Distributions:
        stale = [r for r in dict.fromkeys(rows) if not self.fresh[r]]
        if stale:
            for row, top in zip(stale, self._fetch([self.tokens[r] for r in stale]), strict=True):
                self._top[row], self.fresh[row] = top, True
        width = max(len(ids) for ids, _ in self._top)
        ids = torch.zeros((len(self._top), width), dtype=torch.long)
        logprobs = torch.full((len(self._top), width), float("-inf"))
        for row, (row_ids, row_logprobs) in enumerate(self._top):
            ids[row, : len(row_ids)] = torch.tensor(row_ids)
            logprobs[row, : len(row_logprobs)] = torch.tensor(row_logprobs)
        return Distributions.from_top_k(ids, logprobs, self._facts.vocab_size)

    def select(self, keep: Sequence[int]) -> None:
        for name in ("tokens", "prompt_length", "fresh", "_top"):
            values = getattr(self, name)
            setattr(self, name, [values[r] for r in keep])

    def release(self) -> None:
        self.tokens, self.prompt_length, self.fresh, self._top = [], [], [], []
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)  # an idle engine holds no thread

    def close(self) -> None:
        """Release the rows and the HTTP connections."""
        self.release()
        self._client.close()

    # ------------------------------------------------------------- HTTP

    def _fetch(self, sequences: list[list[int]]) -> list[tuple[list[int], list[float]]]:
        """Each sequence's next-token top-k (ids, log-probs), the sequences sent at once."""
        if len(sequences) == 1:
            return [self._next_token_top_k(sequences[0])]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.endpoint.max_concurrency, thread_name_prefix="baco-endpoint"
                )
            pool = self._pool
        return list(pool.map(self._next_token_top_k, sequences))

    def _next_token_top_k(self, ids: list[int]) -> tuple[list[int], list[float]]:
        k = self.endpoint.top_logprobs
        body: dict[str, Any] = {"model": self.model, "prompt": ids, "max_tokens": 1}
        # Greedy: the one token is the argmax, and the log-probs are the plain softmax.
        body["temperature"] = 0.0
        if self.dialect == "llama.cpp":
            body.update(n_probs=k, cache_prompt=True)
        else:
            body.update(logprobs=k, return_tokens_as_token_ids=True)
        reply = self._post("/completions", body)
        self.requests += 1
        self.tokens_sent += len(ids)
        return self._parse_top_k(reply, k)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        where = f"{self.endpoint.url}{path}"
        for attempt in range(self.endpoint.max_retries + 1):
            last = attempt == self.endpoint.max_retries
            try:
                response = self._client.post(path, json=body)
            except httpx.TimeoutException as exc:
                if last:
                    raise EndpointError(
                        f"{where} did not answer within {self.endpoint.timeout_s:g} s "
                        f"(Endpoint.timeout_s): {exc}"
                    ) from exc
            except httpx.TransportError as exc:
                if last:
                    raise EndpointError(f"{where} cannot be reached: {exc}") from exc
            else:
                if response.status_code < 400:
                    return _json(response, where)
                if response.status_code not in _RETRY_STATUSES or last:
                    raise EndpointError(
                        f"{where} answered {response.status_code}: {response.text[:500]}"
                    )
            time.sleep(min(0.25 * 2**attempt, 4.0))  # backoff before the same request again
        raise AssertionError("unreachable")

    def _parse_top_k(self, reply: Any, k: int) -> tuple[list[int], list[float]]:
        where = f"{self.endpoint.url}/completions"
        try:
            logprobs = reply["choices"][0]["logprobs"]
            if self.dialect == "llama.cpp":
                entries = logprobs["content"][0]["top_logprobs"]
                pairs = [(int(e["id"]), float(e["logprob"])) for e in entries]
            else:
                pairs = [
                    (_token_id(key, where), float(value))
                    for key, value in logprobs["top_logprobs"][0].items()
                ]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise EndpointError(
                f"{where} returned no next-token log-probs in the expected shape "
                f"({type(exc).__name__}: {exc}); asked for {k}: {str(reply)[:300]}"
            ) from exc
        if not pairs:
            raise EndpointError(f"{where} returned no log-probs (asked for {k})")
        vocab = self._facts.vocab_size
        if any(not 0 <= token < vocab for token, _ in pairs):
            raise EndpointError(
                f"{where} returned token ids outside the local tokenizer's {vocab} ids: the "
                "endpoint serves another vocabulary than the tokenizer given for it"
            )
        return [t for t, _ in pairs], [lp for _, lp in pairs]

    def _describe(self) -> tuple[Dialect, str]:
        """The endpoint's dialect and its first model (``GET /models``)."""
        where = f"{self.endpoint.url}/models"
        try:
            response = self._client.get("/models")
        except httpx.HTTPError as exc:
            raise EndpointError(f"{where} cannot be reached: {exc}") from exc
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
