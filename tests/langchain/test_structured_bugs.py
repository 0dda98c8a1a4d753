"""Regressions of ChatBaco.with_structured_output (issue 27).

A call's keyword arguments (``invoke(prompt, seed=11)``) are settings of that call: they reach
the engine whatever the runnable's shape (one sample or ``n``, with or without
``include_raw``) and whatever the entry point (invoke, batch, stream and their async forms).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, Field

from baco_integrations import BacoEngine
from baco_integrations.config import GenerationSettings
from baco_integrations.langchain import ChatBaco

PROMPT = "A dish for tonight."


class Dish(BaseModel):
    """A dish."""

    name: str = Field(max_length=12)
    minutes: int = Field(ge=1, le=300)


@pytest.fixture
def seen(engine: BacoEngine, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[GenerationSettings]]:
    """The settings of every engine call, whichever entry point LangChain took."""
    calls: list[GenerationSettings] = []
    for name in ("generate", "agenerate", "stream", "astream"):
        method = getattr(engine, name)

        def spy(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
            if "settings" in kwargs:  # LangChain's calls (a test's own pass settings as kwargs)
                calls.append(kwargs["settings"])
            return _method(*args, **kwargs)

        monkeypatch.setattr(engine, name, spy)
    yield calls


def _structured(engine: BacoEngine, n: int, include_raw: bool) -> Any:
    return ChatBaco(engine=engine, n=n, max_new_tokens=80).with_structured_output(
        Dish, include_raw=include_raw
    )


def _dishes(result: Any, n: int, include_raw: bool) -> list[Dish]:
    """The parsed samples of one call's result (raw messages differ in their run ids)."""
    samples = result if n > 1 else [result]
    assert isinstance(samples, list) and len(samples) == n
    if include_raw:
        assert all(set(sample) == {"raw", "parsed", "parsing_error"} for sample in samples)
        samples = [sample["parsed"] for sample in samples]
    assert all(isinstance(sample, Dish) for sample in samples)
    return samples


def _per_call(settings: list[GenerationSettings], before: int) -> int:
    """Check that engine calls were made since ``before`` (a batch may be one engine call for
    its inputs, or one each) and that every call had the call's settings; the new count."""
    assert len(settings) > before
    assert all(s.seed == 11 and s.temperature == 0.7 for s in settings), settings
    return len(settings)


@pytest.mark.parametrize("include_raw", [False, True], ids=["parsed", "include_raw"])
@pytest.mark.parametrize("n", [1, 4])
def test_call_kwargs_reach_the_engine(
    engine: BacoEngine, seen: list[GenerationSettings], n: int, include_raw: bool
) -> None:
    structured = _structured(engine, n, include_raw)
    first = _dishes(structured.invoke(PROMPT, seed=11, temperature=0.7), n, include_raw)
    calls = _per_call(seen, 0)

    batched = structured.batch([PROMPT, PROMPT], seed=11, temperature=0.7)
    assert [_dishes(result, n, include_raw) for result in batched] == [first, first]
    calls = _per_call(seen, calls)

    chunks = list(structured.stream(PROMPT, seed=11, temperature=0.7))
    _per_call(seen, calls)
    if not include_raw:  # streamed partial objects: the last is the whole
        assert _dishes(chunks[-1], n, include_raw) == first

    # the seed took effect: the same samples as the engine's own n samples with that seed
    outputs = engine.generate(
        [[{"role": "user", "content": PROMPT}]],
        constraint=Dish,
        n=n,
        max_new_tokens=80,
        seed=11,
        temperature=0.7,
    )[0]
    assert [Dish.model_validate_json(o.text) for o in outputs] == first


@pytest.mark.parametrize("include_raw", [False, True], ids=["parsed", "include_raw"])
@pytest.mark.parametrize("n", [1, 4])
async def test_call_kwargs_reach_the_engine_async(
    engine: BacoEngine, seen: list[GenerationSettings], n: int, include_raw: bool
) -> None:
    structured = _structured(engine, n, include_raw)
    first = _dishes(await structured.ainvoke(PROMPT, seed=11, temperature=0.7), n, include_raw)
    calls = _per_call(seen, 0)

    batched = await structured.abatch([PROMPT, PROMPT], seed=11, temperature=0.7)
    assert [_dishes(result, n, include_raw) for result in batched] == [first, first]
    calls = _per_call(seen, calls)

    chunks = [chunk async for chunk in structured.astream(PROMPT, seed=11, temperature=0.7)]
    _per_call(seen, calls)
    if not include_raw:
        assert _dishes(chunks[-1], n, include_raw) == first
    # the same samples as the sync call with that seed
    sync = structured.invoke(PROMPT, seed=11, temperature=0.7)
    assert _dishes(sync, n, include_raw) == first


def test_call_kwargs_override_bound_settings(
    engine: BacoEngine, seen: list[GenerationSettings]
) -> None:
    """A call's settings win over those given to with_structured_output, as on model.bind."""
    structured = ChatBaco(engine=engine, n=2, max_new_tokens=80).with_structured_output(
        Dish, include_raw=True, seed=3, temperature=0.5
    )
    structured.invoke(PROMPT, seed=11, temperature=0.7)
    structured.invoke(PROMPT)
    assert [(s.seed, s.temperature) for s in seen] == [(11, 0.7), (3, 0.5)]
    assert all(s.constraint is not None for s in seen)
    # an unknown per-call setting is an error, as on the model itself
    with pytest.raises(ValueError, match="gama"):
        structured.invoke(PROMPT, gama=0.3)
