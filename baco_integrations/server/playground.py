"""The playground: one static page at ``/`` that talks to this server's own API.

The page (``static/index.html``, ``app.js``, ``style.css``; no build step, no CDN, so it works
offline) streams ``n`` samples side by side, each word coloured by the model that wrote it,
and can run the aligned model alone beside BACO. ``POST /v1/baco/diversity`` scores a set of
samples with cheap lexical figures; it sits under ``/v1`` so it needs the API key when the
server has one. The page itself is open (it holds no data; it asks for the key).
"""

from __future__ import annotations

import re
from itertools import combinations
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from .errors import APIError

STATIC_DIR = Path(__file__).with_name("static")
#: The files served under /static/ (nothing else in the folder is reachable).
STATIC_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
#: Same tokenizer as baco_integrations.evaluation.lexical (kept here so that the server extra
#: needs no nltk): lowercased words and single punctuation marks.
_TOKEN = re.compile(r"\w+|[^\w\s]")

router = APIRouter()


class DiversityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    samples: list[str] = Field(min_length=1, max_length=64)


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _bigrams(text: str) -> set[tuple[str, str]]:
    words = _tokens(text)
    return set(zip(words, words[1:], strict=False))


def distinct(samples: list[str], n: int) -> float:
    """Unique n-grams over all n-grams, pooled over the samples (0.0 when there are none)."""
    pooled = []
    for text in samples:
        words = _tokens(text)
        pooled += [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(pooled)) / len(pooled) if pooled else 0.0


def pairwise_similarity(samples: list[str]) -> float:
    """Mean over pairs of samples of the Jaccard similarity of their word-bigram sets (two
    empty samples are identical: 1.0); 0.0 with a single sample."""
    scores = []
    for a, b in combinations([_bigrams(s) for s in samples], 2):
        union = a | b
        scores.append(len(a & b) / len(union) if union else 1.0)
    return sum(scores) / len(scores) if scores else 0.0


def diversity(samples: list[str]) -> dict[str, Any]:
    """The playground's figures; distinct-n from :mod:`baco_integrations.evaluation` when its
    extra is installed (the same numbers as the local fallback)."""
    try:
        from ..evaluation.lexical import distinct_n
    except ImportError:  # the server extra alone: no nltk
        distinct_n = distinct  # type: ignore[assignment]
    return {
        "samples": len(samples),
        "distinct_1": distinct_n(samples, 1),
        "distinct_2": distinct_n(samples, 2),
        "pairwise_similarity": pairwise_similarity(samples),
    }


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> FileResponse:
    if name not in STATIC_FILES:
        raise APIError(404, f"no static file {name!r}", code="not_found")
    return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name])


@router.post("/v1/baco/diversity")
async def score(body: DiversityRequest) -> dict[str, Any]:
    return diversity(body.samples)
