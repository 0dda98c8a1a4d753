"""Issue 13, hardening: every bad input is refused with a ValueError naming what is wrong,
before any tokenization, allocation or forward pass; degenerate settings never emit garbage."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from baco_integrations import BacoEngine, GenerationSettings
from baco_integrations.config import MIN_TEMPERATURE
from baco_integrations.limits import EngineLimits


@pytest.fixture
def no_work(any_engine: BacoEngine, monkeypatch: pytest.MonkeyPatch) -> Iterator[BacoEngine]:
    """The engine, whose tokenizers and models fail the test if anything reaches them."""

    def untouchable(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("reached a tokenizer")

    for tokenizer in (any_engine.base_tokenizer, any_engine.aligned_tokenizer):
        for method in ("__call__", "encode", "apply_chat_template"):
            monkeypatch.setattr(type(tokenizer), method, untouchable)

    def forward(*args: Any) -> None:
        raise AssertionError("reached a model")

    hooks = [
        model.register_forward_pre_hook(forward)
        for model in (any_engine.base_model, any_engine.aligned_model)
    ]
    yield any_engine
    for hook in hooks:
        hook.remove()


def refused(engine: BacoEngine, match: str, prompt: Any = "hello", **kwargs: Any) -> None:
    """``generate`` and ``stream`` (at the call, not at the first ``next``) both refuse."""
    with pytest.raises(ValueError, match=match):
        engine.generate(prompt, **kwargs)
    with pytest.raises(ValueError, match=match):
        engine.stream(prompt, **kwargs)


# ----------------------------------------------------------------- text that is not Unicode


@pytest.mark.parametrize(
    ("prompt", "kwargs", "where"),
    [
        ("a\ud800b", {}, r"prompts\[0\] is not valid Unicode"),
        ([{"role": "user", "content": "a\udcffb"}], {}, r"prompts\[0\]\[0\]\['content'\]"),
        (
            [{"role": "system", "content": "ok"}, {"role": "us\ud800er", "content": "hi"}],
            {},
            r"prompts\[0\]\[1\]\['role'\]",
        ),
        ("hello", {"system_prompt": "be \udc80 brief"}, "system_prompt is not valid Unicode"),
        ("hello", {"stop": ["ok", "x\ud800"]}, r"stop\[1\] is not valid Unicode"),
        ("hello", {"base_template": "Q: {prompt}\ud800"}, "base_template is not valid Unicode"),
    ],
)
def test_lone_surrogates_are_refused_naming_where(
    no_work: BacoEngine, prompt: Any, kwargs: dict[str, Any], where: str
) -> None:
    refused(no_work, where, prompt, **kwargs)


def test_lone_surrogate_in_a_batch_names_its_prompt(no_work: BacoEngine) -> None:
    with pytest.raises(ValueError, match=r"prompts\[1\] is not valid Unicode.*index 4"):
        no_work.generate(["fine", "bad \ud800"])
    with pytest.raises(ValueError, match=r"prompts\[0\]"):
        no_work.encode_prompts("bad \ud800")


def test_valid_non_ascii_text_is_accepted(any_engine: BacoEngine) -> None:
    (out,) = any_engine.generate("Café ☕ 😀 日本", system_prompt="Sé breve.", max_new_tokens=3)
    assert isinstance(out[0].text, str)


# ----------------------------------------------------------------- limits before work


def test_default_limits() -> None:
    limits = EngineLimits()
    assert (limits.max_n, limits.max_rows) == (256, 1024)
    assert limits.max_prompt_chars == 2_000_000
    assert (limits.max_new_tokens, limits.max_stop_chars) == (32_768, 10_000)
    with pytest.raises(ValueError, match="max_n"):
        EngineLimits(max_n=0)
    with pytest.raises(ValueError, match="max_rows"):
        EngineLimits(max_rows=True)


@pytest.mark.parametrize(
    ("prompt", "kwargs", "match"),
    [
        ("hello", {"n": 10**5}, r"n=100000 is out of range: allowed values are 1\.\.256"),
        ("hello", {"n": 10**30}, "n=.* is out of range.*EngineLimits.max_n"),
        (["a"] * 8, {"n": 200}, r"1600 rows, more than the 1024 allowed"),
        ("x" * 3_000_000, {}, r"prompts\[0\] is too long: about 3000001 characters"),
        (["x" * 900_000] * 3, {}, "prompts are too long together"),
        ([[{"role": "user", "content": "x" * 2_100_000}]], {}, r"prompts\[0\] is too long"),
        ("hello", {"system_prompt": "s" * 2_100_000}, "system_prompt is too long"),
        # Each field repeats the prompt: the rendering, not the input, is what is tokenized.
        ("x" * 100_000, {"base_template": "{prompt}" * 30}, r"prompts\[0\] is too long"),
        ("hello", {"max_new_tokens": 10**9}, r"max_new_tokens=1000000000 is out of range"),
        ("hello", {"stop": ["s" * 6000, "t" * 6000]}, "stop: 12000 characters"),
    ],
)
def test_sizes_are_refused_before_tokenizing(
    no_work: BacoEngine, prompt: Any, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        no_work.generate(prompt, **kwargs)
    if isinstance(prompt, str):
        with pytest.raises(ValueError, match=match):
            no_work.stream(prompt, **kwargs)


def test_limits_are_configurable(tiny_pair: Any) -> None:
    limits = EngineLimits(max_n=2, max_rows=3, max_prompt_chars=50, max_new_tokens=4)
    engine = BacoEngine.from_pretrained(tiny_pair.base_dir, tiny_pair.aligned_dir, limits=limits)
    assert engine.limits is limits
    assert len(engine.generate("hi", n=2, max_new_tokens=4)[0]) == 2
    with pytest.raises(ValueError, match=r"n=3 is out of range: allowed values are 1\.\.2"):
        engine.generate("hi", n=3)
    with pytest.raises(ValueError, match="4 rows, more than the 3 allowed"):
        engine.generate(["a", "b"], n=2, max_new_tokens=4)
    with pytest.raises(ValueError, match=r"max_new_tokens=5 is out of range.*1\.\.4"):
        engine.generate("hi", max_new_tokens=5)
    with pytest.raises(ValueError, match="max_prompt_chars"):
        engine.generate("x" * 60, max_new_tokens=4)
    with pytest.raises(ValueError, match="limits must be an EngineLimits"):
        BacoEngine(
            engine.base_model,
            engine.aligned_model,
            engine.base_tokenizer,
            limits={"max_n": 2},  # type: ignore[arg-type]
        )


def test_without_a_context_window_max_new_tokens_is_capped_before_allocating(
    tiny_pair: Any,
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    models = [
        AutoModelForCausalLM.from_pretrained(d) for d in (tiny_pair.base_dir, tiny_pair.aligned_dir)
    ]
    for model in models:
        model.config.max_position_embeddings = 0  # a config that declares no window
    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.aligned_dir)
    engine = BacoEngine(*models, tokenizer, limits=EngineLimits(max_new_tokens=300))
    assert engine.context_window is None
    with pytest.raises(ValueError, match=r"max_new_tokens=1000000000000 is out of range.*300"):
        engine.generate("hello", max_new_tokens=10**12)
    (out,) = engine.generate("hello", max_new_tokens=300, seed=0)
    assert out[0].num_tokens <= 300


# ----------------------------------------------------------------- wrong types


def test_settings_may_be_a_mapping_and_nothing_else(any_engine: BacoEngine) -> None:
    as_kwargs = any_engine.generate("hi", n=2, max_new_tokens=4, seed=5)
    as_mapping = any_engine.generate("hi", settings={"n": 2, "max_new_tokens": 4, "seed": 5})
    assert [o.token_ids for o in as_mapping[0]] == [o.token_ids for o in as_kwargs[0]]
    for bad in (5, "n=2", [("n", 2)]):
        refused(any_engine, "settings must be a GenerationSettings or a mapping", settings=bad)
    refused(any_engine, "frobnicate", settings={"frobnicate": 1})
    refused(any_engine, "n", settings={"n": 0})


def test_cancel_must_be_an_event(no_work: BacoEngine) -> None:
    for bad in ("x", 1, True, object()):
        with pytest.raises(ValueError, match="cancel must be a threading.Event"):
            no_work.generate("hi", cancel=bad)  # type: ignore[arg-type]


def test_cancel_accepts_an_event_and_anything_with_is_set(engine: BacoEngine) -> None:
    class Flag:
        def is_set(self) -> bool:
            return False

    for cancel in (threading.Event(), Flag()):
        assert engine.generate("hi", max_new_tokens=2, cancel=cancel)[0][0].num_tokens <= 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed": 2**70}, r"seed=1180591620717411303424 is out of range.*\[0, 2\*\*64 - 1\]"),
        ({"seed": 2**64}, "seed=.* is out of range"),
        ({"seed": -1}, "seed=-1 is out of range"),
        ({"seed": 1.5}, "seed"),
        ({"seed": "7"}, "seed"),
        ({"n": True}, "n"),
        ({"n": "2"}, "n"),
        ({"max_new_tokens": 2.5}, "max_new_tokens"),
        ({"temperature": True}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": float("nan")}, "top_p"),
        ({"min_p": float("inf")}, "min_p"),
        ({"top_k": "5"}, "top_k"),
        ({"gamma": "0.3"}, "gamma"),
        ({"gamma": float("inf")}, "gamma"),
        ({"system_prompt": 5}, "system_prompt"),
        ({"stop": 5}, "stop"),
        ({"stop": [5]}, "stop"),
        ({"base_template": None}, "base_template"),
        ({"lazy": "maybe"}, "lazy"),
    ],
)
def test_wrong_types_and_ranges_are_refused_at_the_call(
    no_work: BacoEngine, kwargs: dict[str, Any], match: str
) -> None:
    refused(no_work, match, **kwargs)


def test_the_largest_seed_works(any_engine: BacoEngine) -> None:
    first = any_engine.generate("hi", seed=2**64 - 1, max_new_tokens=4)
    again = any_engine.generate("hi", seed=2**64 - 1, max_new_tokens=4)
    assert first[0][0].token_ids == again[0][0].token_ids


def test_stream_validates_everything_before_returning(no_work: BacoEngine) -> None:
    # Not a generator function: the error comes from the call itself.
    with pytest.raises(ValueError, match="seed"):
        no_work.stream("hi", seed=2**70)
    with pytest.raises(ValueError, match=r"prompts\[0\]"):
        no_work.stream("bad \ud800")
    with pytest.raises(ValueError, match="stream takes one prompt"):
        no_work.stream(["a", "b"])  # type: ignore[arg-type]


# ----------------------------------------------------------------- degenerate temperatures


@pytest.mark.parametrize("temperature", [5e-324, 1e-300, 1e-38, 1e-20, MIN_TEMPERATURE / 2])
@pytest.mark.parametrize("router", ["P-PUNC", "random", "H"])
def test_tiny_temperatures_decode_exactly_as_greedy(
    any_engine: BacoEngine, temperature: float, router: str
) -> None:
    prompts = ["Write a poem about the sea.", "Ideas for a coffee shop"]
    greedy = any_engine.generate(prompts, router=router, temperature=0.0, max_new_tokens=12, seed=1)
    tiny = any_engine.generate(
        prompts, router=router, temperature=temperature, max_new_tokens=12, seed=1
    )
    for g, t in zip(greedy, tiny, strict=True):
        assert [o.token_ids for o in t] == [o.token_ids for o in g]
        assert [o.sources for o in t] == [o.sources for o in g]
        assert [o.text for o in t] == [o.text for o in g]


def test_tiny_temperature_is_not_token_zero_over_and_over(engine: BacoEngine) -> None:
    (out,) = engine.generate("Ideas for a coffee shop", temperature=1e-39, max_new_tokens=12)
    assert set(out[0].token_ids) != {0}


# ----------------------------------------------------------------- templates


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ("{{prompt}}", "has no '{prompt}' field"),
        ("Q: {{prompt}} A:", "has no '{prompt}' field"),
        ("no field", "has no '{prompt}' field"),
        ("{prompt:>999999999}", r"found '\{prompt:>999999999\}'"),
        ("{prompt!r}", r"found '\{prompt!r\}'"),
        ("{x} {prompt}", r"found '\{x\}'"),
        ("{} {prompt}", r"found '\{\}'"),
        ("{prompt.upper}", r"found '\{prompt.upper\}'"),
        ("{prompt", "not a valid format string"),
        ("{prompt}}", "not a valid format string"),
    ],
)
def test_base_template_needs_a_real_prompt_field(template: str, match: str) -> None:
    with pytest.raises(ValueError, match=f"base_template.*{match}|{match}"):
        GenerationSettings(base_template=template)


def test_base_template_with_literal_braces_renders_them(engine: BacoEngine) -> None:
    encoded = engine.encode_prompts("cats", base_template="{{Q}}: {prompt} / {prompt}")
    assert engine.base_tokenizer.decode(encoded["base"]) == "{Q}: cats / cats"


# ----------------------------------------------------------------- prompts that render empty


def test_a_prompt_that_renders_to_no_tokens_is_refused(any_engine: BacoEngine) -> None:
    if any_engine.base_tokenizer("", add_special_tokens=True)["input_ids"]:
        pytest.skip("this tokenizer adds a BOS token: an empty prompt is still a prompt")
    refused(
        any_engine,
        r"prompts\[0\] renders to no tokens for the base model",
        "",
        **{"base_template": "{prompt}"},
    )
    assert any_engine.generate("", max_new_tokens=2)[0][0].finish_reason in ("stop", "length")


def test_a_chat_template_that_refuses_the_conversation_is_a_value_error(
    any_engine: BacoEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
    monkeypatch.setattr(any_engine.aligned_tokenizer, "chat_template", template)
    refused(any_engine, "chat template refused this conversation: Conversation roles must")


# ----------------------------------------------------------------- the engine still works


def test_the_engine_works_after_every_refusal(any_engine: BacoEngine) -> None:
    for kwargs in ({"seed": 2**70}, {"n": 10**6}, {"temperature": float("nan")}):
        with pytest.raises(ValueError):
            any_engine.generate("hi", **kwargs)
    (out,) = any_engine.generate("hi", max_new_tokens=3, seed=0)
    assert out[0].finish_reason in ("stop", "length")
