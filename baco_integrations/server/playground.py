"""The playground: one static page at ``/`` that talks to this server's own API.

The page (``static/index.html``, ``app.js``, ``style.css``; no build step, no CDN, so it works
offline) streams ``n`` samples side by side, each word coloured by the model that wrote it,
and can run the aligned model alone beside BACO. It asks for token log-probs: each sample shows
the aligned model's mean log-prob per token (``baco.aligned_mean_logprob``), each group its
mean beside the diversity figures, and hovering a word shows its token's log-prob, its most
likely alternatives and its writer. ``POST /v1/baco/diversity`` scores a set of
samples with cheap lexical figures; it sits under ``/v1`` so it needs the API key when the
server has one. The page itself is open (it holds no data; it asks for the key).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from ..ngrams import distinct_n, word_ngrams
from .errors import APIError

STATIC_DIR = Path(__file__).with_name("static")
#: The files served under /static/ (nothing else in the folder is reachable).
STATIC_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
#: Same tokenizer as baco_integrations.evaluation.lexical (kept here so that the server extra
#: needs no nltk): lowercased words and single punctuation marks.

router = APIRouter()


class DiversityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    samples: list[str] = Field(min_length=1, max_length=64)


def pairwise_similarity(samples: list[str]) -> float:
    """Mean over pairs of samples of the Jaccard similarity of their word-bigram sets (two
    empty samples are identical: 1.0); 0.0 with a single sample."""
    scores = []
    for a, b in combinations([set(word_ngrams(s, 2)) for s in samples], 2):
        union = a | b
        scores.append(len(a & b) / len(union) if union else 1.0)
    return sum(scores) / len(scores) if scores else 0.0


def diversity(samples: list[str]) -> dict[str, Any]:
    """The playground's figures, counted as the evaluation suite counts them."""
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
