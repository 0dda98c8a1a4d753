"""A llama.cpp-shaped ``/v1/completions`` engine inside the test process (an
``httpx.MockTransport`` handler over a transformers model): it drafts tokens with the
request's temperature and seed and answers top-k log-probs as llama-server does, so the remote
runner's protocol is tested in CI without a server."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class FakeEngine:
    """Serves one model; ``fail`` says, for a prompt's ids, what to answer instead (a status
    code, or "hang" to wait until the request is cancelled)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str = "fake"
    fail: Callable[[list[int]], int | str | None] = lambda ids: None
    prompts: list[list[int]] = field(default_factory=list)
    #: Set when a request hangs; ``cancelled`` when a hanging request was cancelled.
    hanging: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": self.name, "owned_by": "llamacpp"}]})
        body = json.loads(request.content)
        if path == "/tokenize":
            ids = self.tokenizer.encode(body["content"], add_special_tokens=False)
            return httpx.Response(200, json={"tokens": ids})
        ids = [int(t) for t in body["prompt"]]
        self.prompts.append(ids)
        failure = self.fail(ids)
        if failure == "hang":
            self.hanging.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if isinstance(failure, int):
            return httpx.Response(failure, text="injected failure")
        return httpx.Response(200, json=self.complete(ids, body))

    @torch.inference_mode()
    def complete(self, ids: list[int], body: dict[str, Any]) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(int(body.get("seed", 0)))
        temperature = float(body.get("temperature", 1.0))
        content = []
        tokens = list(ids)
        for _ in range(int(body["max_tokens"])):
            logits = self.model(torch.tensor([tokens])).logits[0, -1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            if temperature == 0:
                drawn = int(logits.argmax())
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                drawn = int(torch.multinomial(probs, 1, generator=generator))
            top = torch.topk(logprobs, int(body["n_probs"]))
            content.append(
                {
                    "id": drawn,
                    "logprob": float(logprobs[drawn]),
                    "top_logprobs": [
                        {"id": int(i), "logprob": float(v)}
                        for v, i in zip(top.values, top.indices, strict=True)
                    ],
                }
            )
            tokens.append(drawn)
            if drawn == self.tokenizer.eos_token_id:
                break
        return {"choices": [{"text": "", "logprobs": {"content": content}}]}
