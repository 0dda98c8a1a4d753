"""Fuzz (issue 13): every public call, random settings and prompts, both kinds of pair.

Each call either returns valid outputs or raises a ``ValueError`` (pydantic's
``ValidationError`` is one) whose message names a setting or the prompt, and the engine works
afterwards. Settings mix valid values with out-of-range ones and wrong types; prompts mix
ordinary text with lone surrogates, empty and huge strings and malformed messages.

Bounded to run in about a minute on two cores: ``BACO_FUZZ_EXAMPLES`` raises the number of
examples per test (``BACO_FUZZ_EXAMPLES=2000`` for a long hunt), ``BACO_FUZZ_RANDOM=1`` draws
new examples instead of the fixed, reproducible ones. The tally (tried / refused / ok) is
printed at the end of the session.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from baco_integrations import BacoEngine, GenerationSettings, RouterConfig, RouterInputs
from baco_integrations.config import SETTING_NAMES

EXAMPLES = int(os.environ.get("BACO_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=EXAMPLES or 350,
    deadline=None,
    derandomize=not os.environ.get("BACO_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: What a refusal may name: a setting (``frobnicate`` is the fuzzer's unknown one), or the
#: prompt (LangChain and LlamaIndex call it the input or the messages).
NAMED = (*SETTING_NAMES, "frobnicate", "settings", "cancel", "max_tokens", "prompt", "prompts")
NAMED += ("input", "messages", "message", "content", "role", "text")
_NAMED = re.compile(
    r"(?<![A-Za-z0-9])(?:n(?==)|" + "|".join(sorted(map(re.escape, NAMED), key=len)[::-1]) + r")"
    r"(?![A-Za-z])"
)

#: (surface, "tried" | "refused" | "ok") -> calls; what was tried and is neither crashed.
TALLY: Counter[tuple[str, str]] = Counter()


# ----------------------------------------------------------------- strategies

HUGE = "x" * 3_000_000  # past EngineLimits.max_prompt_chars: refused before tokenizing
SURROGATES = ("a\ud800b", "\udcff", "ok \udc80 ok")
TEXTS = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "hello",
            "Write a poem about the sea.",
            "Café ☕ 😀 日本語",
            "\x00\n\t",
            "{prompt} {} {{",
            "the " * 400,  # longer than the tiny pair's 512-token window
            *SURROGATES,
            HUGE,
        ]
    ),
    st.text(max_size=30),
    st.text(st.characters(codec=None, categories=["Cs", "Ll", "Zs"]), max_size=8),
)
ROLES = st.sampled_from(["user", "assistant", "system", "tool", "weird", "", "us\ud800er"])


@st.composite
def messages(draw: st.DrawFn) -> Any:
    """A conversation: mostly well formed, sometimes with a broken message."""
    good = st.fixed_dictionaries({"role": ROLES, "content": TEXTS})
    bad = st.sampled_from(
        [{"role": "user"}, {"content": "hi"}, {"role": "user", "content": 5}, {"role": None}]
    )
    items = draw(st.lists(st.one_of(good, good, good, bad, st.just("text")), max_size=4))
    return items


PROMPT = st.one_of(TEXTS, TEXTS, messages(), st.sampled_from([None, 5, b"bytes", [], [[]]]))
BATCH = st.one_of(PROMPT, st.lists(PROMPT, min_size=0, max_size=3))


def _base_when_unsure(inputs: RouterInputs) -> torch.Tensor:
    return inputs.probs("base").amax(dim=-1) < 0.5


class _Router:
    """A callable router with a given ``needs`` and answer."""

    def __init__(self, needs: Any, answer: Callable[[RouterInputs], Any]) -> None:
        self.needs = needs
        self.answer = answer

    def __call__(self, inputs: RouterInputs) -> Any:
        return self.answer(inputs)

    def __repr__(self) -> str:
        return f"_Router(needs={self.needs!r})"


def _floats(inputs: RouterInputs) -> torch.Tensor:
    return torch.full((inputs.batch_size,), float("nan"))


ROUTERS = st.sampled_from(
    [
        "P-PUNC",
        "p",
        "H",
        "random",
        "nudging",
        "aligned",
        "base",
        "FC",
        "h-fc",
        " P-PUNC ",
        "nope",
        "",
        "a\ud800",
        3,
        None,
        RouterConfig(strategy="P", gamma=0.4, gate="aligned"),
        _Router("base", _base_when_unsure),
        _Router(frozenset({"base"}), _base_when_unsure),
        _Router("a", _base_when_unsure),  # unknown source name
        _Router(5, _base_when_unsure),  # not a collection
        _Router(frozenset(), _base_when_unsure),  # reads what it did not declare
        _Router(frozenset(), _floats),  # NaN floats
        _Router(frozenset(), lambda i: torch.ones(i.batch_size, 2, dtype=torch.bool)),
        _Router(frozenset(), lambda i: [True] * i.batch_size),
    ]
)

BIG = [10**5, 10**9, 10**30, 2**63, 2**64, 2**70]
WRONG = [None, "2", "hot", True, 1.5, [1], {"a": 1}, float("nan"), float("inf")]

#: Per setting: values that are valid, then values that are not (out of range, wrong type).
FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "router": (
        st.sampled_from(["P-PUNC", "p", "H", "random", "nudging", "aligned", "base", "h-fc"]),
        ROUTERS,
    ),
    "gamma": (st.one_of(st.none(), st.floats(0, 1)), st.sampled_from([-1.0, "0.3", *WRONG])),
    "gate": (st.sampled_from([None, "base", "aligned"]), st.sampled_from(["judge", 5, ""])),
    "n": (st.integers(1, 3), st.sampled_from([0, -5, *BIG, *WRONG])),
    "max_new_tokens": (st.integers(1, 6), st.sampled_from([0, -1, 32_769, *BIG, *WRONG])),
    "temperature": (
        st.one_of(st.floats(0, 3), st.sampled_from([0.0, 5e-324, 1e-300, 1e-38, 1e-6, 1e300])),
        st.sampled_from([-1.0, -1e-300, *WRONG]),
    ),
    "top_p": (
        st.one_of(st.floats(1e-300, 1), st.just(1.0)),
        st.sampled_from([0.0, 1.5, -0.1, *WRONG]),
    ),
    "top_k": (st.one_of(st.integers(0, 8), st.just(10**20)), st.sampled_from([-1, *WRONG])),
    "min_p": (st.floats(0, 1), st.sampled_from([-0.1, 1.1, *WRONG])),
    "stop": (
        st.sampled_from([None, "a", ["e", " t"], (".",), []]),
        st.sampled_from([[""], 5, [5], ["a\ud800"], ["s" * 20_000]]),
    ),
    "seed": (
        st.one_of(st.none(), st.integers(0, 2**64 - 1)),
        st.sampled_from([-1, 1.5, "7", 2**64, 2**70]),
    ),
    "system_prompt": (st.one_of(st.none(), TEXTS), st.just(5)),
    "base_template": (
        st.sampled_from(["{prompt}\n", "Q: {prompt}\nA:", "{prompt}", "{{x}} {prompt}"]),
        st.sampled_from(
            [
                "{{prompt}}",
                "{prompt:>999999999}",
                "{x} {prompt}",
                "{prompt}" * 40,
                "{prompt",
                "",
                "a\ud800 {prompt}",
                None,
                5,
            ]
        ),
    ),
    "lazy": (st.booleans(), st.sampled_from(["maybe", None, 2])),
}
VALID_SETTINGS = st.fixed_dictionaries({}, optional={k: v for k, (v, _) in FIELDS.items()})
ANY_SETTINGS = st.fixed_dictionaries(
    {},
    optional={
        **{k: st.one_of(valid, invalid) for k, (valid, invalid) in FIELDS.items()},
        "frobnicate": st.just(1),
    },
)
SETTINGS = st.one_of(VALID_SETTINGS, ANY_SETTINGS)


# ----------------------------------------------------------------- checks


def names_what_is_wrong(exc: ValueError) -> bool:
    if isinstance(exc, ValidationError):  # names the field in each error's location
        return all(
            any(str(part) in NAMED for part in error["loc"]) or _NAMED.search(error["msg"])
            for error in exc.errors()
        )
    return bool(_NAMED.search(str(exc)))


def outcome(surface: str, call: Callable[[], Any], check: Callable[[Any], None]) -> None:
    """Run one fuzzed call: valid output, or a ValueError that says what is wrong."""
    TALLY[surface, "tried"] += 1
    try:
        result = call()
    except ValueError as exc:
        assert names_what_is_wrong(exc), f"a ValueError that names nothing: {exc!r}"
        TALLY[surface, "refused"] += 1
        return
    check(result)
    TALLY[surface, "ok"] += 1


def check_outputs(outputs: Any) -> None:
    assert isinstance(outputs, list) and outputs
    for row in outputs:
        assert isinstance(row, list) and row
        for out in row:
            assert isinstance(out.text, str)
            assert len(out.token_ids) == len(out.sources)
            assert set(out.sources) <= {"base", "aligned"}
            assert out.finish_reason in ("stop", "length")


def check_chunks(chunks: list[Any]) -> None:
    assert chunks and chunks[-1].finish_reason in ("stop", "length")
    for chunk in chunks:
        assert isinstance(chunk.text, str)
        assert len(chunk.token_ids) == len(chunk.sources)


def still_works(engine: BacoEngine) -> None:
    (out,) = engine.generate("hello", max_new_tokens=2, seed=0)
    assert out[0].finish_reason in ("stop", "length")


@pytest.fixture(scope="module")
def engines(engine: BacoEngine, cross_engine: BacoEngine) -> dict[str, BacoEngine]:
    return {"shared": engine, "cross": cross_engine}


@pytest.fixture(scope="module", autouse=True)
def _report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    surfaces = sorted({surface for surface, _ in TALLY})
    lines = []
    for surface in [*surfaces, "all"]:
        count = {
            kind: sum(v for (s, k), v in TALLY.items() if k == kind and surface in (s, "all"))
            for kind in ("tried", "refused", "ok")
        }
        crashed = count["tried"] - count["refused"] - count["ok"]
        lines.append(
            f"fuzz {surface}: {count['tried']} calls tried, {count['refused']} refused "
            f"clearly, {count['ok']} ok, {crashed} crashed"
        )
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            for line in lines:
                reporter.write_line(line)


PAIRS = st.sampled_from(["shared", "cross"])


# ----------------------------------------------------------------- the engine


@FUZZ
@given(
    pair=PAIRS,
    prompts=BATCH,
    overrides=SETTINGS,
    mode=st.sampled_from(["kwargs", "object", "mapping", "garbage"]),
    cancel=st.sampled_from([None, None, "event", "x", 1]),
)
# The issue's own inputs, always tried.
@example(pair="shared", prompts="a\ud800b", overrides={}, mode="kwargs", cancel=None)
@example(pair="cross", prompts="hi", overrides={"n": 10**5}, mode="kwargs", cancel=None)
@example(pair="shared", prompts=HUGE, overrides={}, mode="kwargs", cancel=None)
@example(pair="shared", prompts="hi", overrides={"n": 2}, mode="garbage", cancel=None)
@example(pair="shared", prompts="hi", overrides={"n": 2}, mode="mapping", cancel="x")
@example(pair="cross", prompts="hi", overrides={"seed": 2**70}, mode="kwargs", cancel=None)
@example(pair="cross", prompts="hi", overrides={"temperature": 1e-300}, mode="kwargs", cancel=None)
@example(pair="shared", prompts="hi", overrides={"temperature": 1e-39}, mode="object", cancel=None)
@example(
    pair="shared",
    prompts="hi",
    overrides={"base_template": "{{prompt}}"},
    mode="kwargs",
    cancel=None,
)
@example(
    pair="cross",
    prompts="hi",
    overrides={"router": _Router("base", _base_when_unsure)},
    mode="kwargs",
    cancel=None,
)
@example(
    pair="shared",
    prompts="hi",
    overrides={"router": _Router(frozenset(), _floats)},
    mode="kwargs",
    cancel=None,
)
def test_fuzz_engine_generate(
    engines: dict[str, BacoEngine], pair: str, prompts: Any, overrides: dict, mode: str, cancel: Any
) -> None:
    engine = engines[pair]
    event = threading.Event() if cancel == "event" else cancel

    def call() -> Any:
        if mode == "kwargs":
            return engine.generate(prompts, cancel=event, **overrides)
        if mode == "object":
            return engine.generate(prompts, settings=GenerationSettings(**overrides), cancel=event)
        return engine.generate(
            prompts, settings=overrides if mode == "mapping" else "n=2", cancel=event
        )

    outcome("engine.generate", call, check_outputs)
    still_works(engine)


@FUZZ
@given(pair=PAIRS, prompt=PROMPT, overrides=SETTINGS, close_early=st.booleans())
def test_fuzz_engine_stream(
    engines: dict[str, BacoEngine], pair: str, prompt: Any, overrides: dict, close_early: bool
) -> None:
    engine = engines[pair]

    def call() -> list[Any]:
        chunks = engine.stream(prompt, **overrides)  # validated here, before iteration
        if close_early:
            next(iter(chunks), None)
            chunks.close()  # type: ignore[attr-defined]
            return []
        return list(chunks)

    outcome("engine.stream", call, lambda chunks: close_early or check_chunks(chunks))
    still_works(engine)


@FUZZ
@given(pair=PAIRS, prompt=PROMPT, overrides=SETTINGS, streaming=st.booleans())
def test_fuzz_engine_async(
    engines: dict[str, BacoEngine], pair: str, prompt: Any, overrides: dict, streaming: bool
) -> None:
    """``agenerate`` / ``astream``: the same checks through the asyncio entry points."""
    engine = engines[pair]

    async def collect() -> Any:
        if streaming:
            return [chunk async for chunk in engine.astream(prompt, **overrides)]
        return await engine.agenerate(prompt, **overrides)

    check = check_chunks if streaming else check_outputs
    outcome(
        f"engine.{'astream' if streaming else 'agenerate'}", lambda: asyncio.run(collect()), check
    )
    still_works(engine)


@FUZZ
@given(pair=PAIRS, prompt=PROMPT, system_prompt=st.one_of(st.none(), TEXTS))
def test_fuzz_encode_prompts(
    engines: dict[str, BacoEngine], pair: str, prompt: Any, system_prompt: Any
) -> None:
    engine = engines[pair]

    def check(ids: dict[str, list[int]]) -> None:
        assert set(ids) == {"base", "aligned"}

    outcome("engine.encode_prompts", lambda: engine.encode_prompts(prompt, system_prompt), check)


# ----------------------------------------------------------------- the adapters

LC_SETTINGS = SETTINGS.map(lambda s: {k: v for k, v in s.items() if k != "stop"})
LC_STOP = st.sampled_from(
    [None, ["e"], ["a", " t"], ["a\ud800"], [""], ["s" * 20_000], "abc", 5, ("x",)]
)


def lc_messages(prompt: Any) -> Any:
    """A LangChain chat input: the conversation as (role, content) pairs, or a plain text."""
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        roles = {"user": "human", "assistant": "ai", "system": "system"}
        return [
            (roles.get(str(m.get("role")), "human"), m.get("content", ""))
            for m in prompt
            if isinstance(m.get("content", ""), str)
        ] or "hello"
    return prompt if isinstance(prompt, str) else "hello"


@FUZZ
@given(
    pair=PAIRS,
    prompt=PROMPT,
    overrides=LC_SETTINGS,
    stop=LC_STOP,
    kind=st.sampled_from(["llm", "chat"]),
    method=st.sampled_from(["invoke", "stream", "batch", "ainvoke"]),
    at=st.sampled_from(["call", "construction"]),
)
def test_fuzz_langchain(
    engines: dict[str, BacoEngine],
    pair: str,
    prompt: Any,
    overrides: dict,
    stop: Any,
    kind: str,
    method: str,
    at: str,
) -> None:
    from langchain_core.messages import AIMessage, AIMessageChunk

    from baco_integrations.langchain import BacoLLM, ChatBaco

    engine = engines[pair]
    text_input = prompt if isinstance(prompt, str) else "hello"
    model_input = lc_messages(prompt) if kind == "chat" else text_input

    def call() -> Any:
        cls = ChatBaco if kind == "chat" else BacoLLM
        if at == "construction":
            model, kwargs = cls(engine=engine, **overrides), {}
        else:
            model, kwargs = cls(engine=engine), overrides
        if method == "invoke":
            return [model.invoke(model_input, stop=stop, **kwargs)]
        if method == "batch":
            return model.batch([model_input, model_input], stop=stop, **kwargs)
        if method == "ainvoke":
            return [asyncio.run(model.ainvoke(model_input, stop=stop, **kwargs))]
        return list(model.stream(model_input, stop=stop, **kwargs))

    def check(results: list[Any]) -> None:
        for result in results:
            if kind == "chat":
                assert isinstance(result, AIMessage | AIMessageChunk)
                assert isinstance(result.content, str)
            else:
                assert isinstance(result, str)

    outcome(f"langchain.{'ChatBaco' if kind == 'chat' else 'BacoLLM'}.{method}", call, check)
    still_works(engine)


def li_messages(prompt: Any) -> Any:
    from llama_index.core.llms import ChatMessage

    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        roles = {"user", "assistant", "system", "tool"}
        return [
            ChatMessage(
                role=m["role"] if m.get("role") in roles else "user",
                content=m["content"] if isinstance(m.get("content"), str) else "",
            )
            for m in prompt
        ] or [ChatMessage(role="user", content="hello")]
    return [ChatMessage(role="user", content=prompt if isinstance(prompt, str) else "hello")]


@FUZZ
@given(
    pair=PAIRS,
    prompt=PROMPT,
    overrides=SETTINGS,
    method=st.sampled_from(["complete", "chat", "stream_complete", "stream_chat", "acomplete"]),
    at=st.sampled_from(["call", "construction"]),
)
def test_fuzz_llama_index(
    engines: dict[str, BacoEngine], pair: str, prompt: Any, overrides: dict, method: str, at: str
) -> None:
    from baco_integrations.llama_index import BacoLLM

    engine = engines[pair]

    def call() -> Any:
        if at == "construction":
            llm, kwargs = BacoLLM(engine=engine, **overrides), {}
        else:
            llm, kwargs = BacoLLM(engine=engine), overrides
        if method == "chat":
            return [llm.chat(li_messages(prompt), **kwargs)]
        if method == "stream_chat":
            return list(llm.stream_chat(li_messages(prompt), **kwargs))
        text = prompt if isinstance(prompt, str) else "hello"
        if method == "complete":
            return [llm.complete(text, **kwargs)]
        if method == "acomplete":
            return [asyncio.run(llm.acomplete(text, **kwargs))]
        return list(llm.stream_complete(text, **kwargs))

    def check(responses: list[Any]) -> None:
        assert responses
        for response in responses:
            text = response.message.content if "chat" in method else response.text
            assert isinstance(text, str)

    outcome(f"llama_index.BacoLLM.{method}", call, check)
    still_works(engine)


# ----------------------------------------------------------------- token counting

#: Any text, lone surrogates and huge strings included: counting checks it like a prompt.
COUNTABLE = TEXTS


@FUZZ
@given(pair=PAIRS, text=COUNTABLE, how=st.sampled_from(["engine", "langchain"]))
def test_fuzz_token_counting(
    engines: dict[str, BacoEngine], pair: str, text: str, how: str
) -> None:
    from baco_integrations.langchain import BacoLLM

    engine = engines[pair]

    def call() -> int:
        if how == "engine":
            return engine.count_tokens(text)
        return BacoLLM(engine=engine).get_num_tokens(text)

    def check(count: int) -> None:
        assert isinstance(count, int) and count >= 0

    outcome(f"{how}.count_tokens", call, check)
