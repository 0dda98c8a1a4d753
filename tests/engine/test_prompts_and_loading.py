"""Loading, prompt rendering, and the errors raised before any model runs."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from baco_integrations import BacoEngine, GenerationSettings, RouterConfig
from baco_integrations.loading import resolve_dtype
from baco_integrations.runners.model_calls import cache_argument


def test_encode_prompts_uses_chat_template_and_plain_template(engine: BacoEngine) -> None:
    encoded = engine.encode_prompts("Name three colours.", system_prompt="Be brief.")
    tok = engine.aligned_tokenizer
    expected_aligned = tok.apply_chat_template(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name three colours."},
        ],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert tok.decode(encoded["aligned"]) == expected_aligned
    assert encoded["base"] == engine.base_tokenizer("Name three colours.\n")["input_ids"]


def test_base_template_is_overridable(engine: BacoEngine) -> None:
    encoded = engine.encode_prompts("cats", base_template="Q: {prompt}\nA:")
    assert engine.base_tokenizer.decode(encoded["base"]) == "Q: cats\nA:"
    with pytest.raises(ValueError, match="base_template"):
        engine.encode_prompts("cats", base_template="no placeholder")


def test_conversation_prompt_renders_transcript_for_base(engine: BacoEngine) -> None:
    conversation = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Ideas?"},
    ]
    encoded = engine.encode_prompts(conversation)
    assert engine.base_tokenizer.decode(encoded["base"]) == (
        "User: Hi\n\nAssistant: Hello\n\nUser: Ideas?\n\nAssistant:"
    )
    aligned_text = engine.aligned_tokenizer.decode(encoded["aligned"])
    assert aligned_text.startswith("<|im_start|>system\nBe kind.")
    assert aligned_text.endswith("<|im_start|>assistant\n")
    out = engine.generate([conversation], max_new_tokens=4, seed=0)
    assert len(out) == 1 and len(out[0]) == 1


def test_from_pretrained_accepts_dtype_and_loaded_models(tiny_pair) -> None:
    engine = BacoEngine.from_pretrained(tiny_pair.base_dir, tiny_pair.aligned_dir, dtype="bfloat16")
    assert engine.base_model.dtype == torch.bfloat16
    assert engine.aligned_model.dtype == torch.bfloat16
    out = engine.generate("hello", max_new_tokens=3, seed=0)[0][0]
    assert out.num_tokens <= 3

    base = AutoModelForCausalLM.from_pretrained(tiny_pair.base_dir)
    aligned = AutoModelForCausalLM.from_pretrained(tiny_pair.aligned_dir)
    tok = AutoTokenizer.from_pretrained(tiny_pair.aligned_dir)
    preloaded = BacoEngine(base, aligned, tok, tok)
    assert preloaded.pair.aligned.vocab_size == len(tok)


def test_resolve_dtype() -> None:
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda:1") == torch.bfloat16
    assert resolve_dtype("float16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("int8", "cpu")
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("nonsense", "cpu")


def test_tokenizer_sharing_is_detected(tiny_pair, tiny_cross_pair) -> None:
    same = BacoEngine.from_pretrained(tiny_pair.base_dir, tiny_pair.aligned_dir)
    cross = BacoEngine.from_pretrained(tiny_cross_pair.base_dir, tiny_cross_pair.aligned_dir)
    assert same.shares_tokenizer and not cross.shares_tokenizer
    assert same.pair.base.masks is same.pair.aligned.masks
    assert cross.pair.base.masks.vocab_size == 512
    assert cross.pair.aligned.masks.vocab_size == 640


@pytest.fixture
def forward_counter(engine: BacoEngine):
    calls: list[int] = []
    hooks = [
        m.register_forward_hook(lambda *_: calls.append(1))
        for m in (engine.base_model, engine.aligned_model)
    ]
    yield calls
    for hook in hooks:
        hook.remove()


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"router": "nope"}, "router"),
        ({"router": 3}, "router"),
        ({"router": "P", "gamma": 1.5}, "gamma"),
        ({"router": "random", "gamma": -0.1}, "gamma"),
        ({"router": "H", "gamma": -1.0}, "gamma"),
        ({"router": "P", "gamma": float("nan")}, "gamma"),
        ({"n": 0}, "n"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"min_p": 2.0}, "min_p"),
        ({"stop": [""]}, "stop"),
        ({"stop": 5}, "stop"),
        ({"gate": "judge"}, "gate"),
        ({"frobnicate": 1}, "frobnicate"),
    ],
)
def test_bad_settings_raise_before_any_model_runs(
    engine: BacoEngine, forward_counter: list[int], kwargs: dict, setting: str
) -> None:
    with pytest.raises(ValueError, match=setting):
        engine.generate("hello", **kwargs)
    with pytest.raises(ValueError, match=setting):
        engine.stream("hello", **kwargs)
    assert forward_counter == []


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ([], "empty"),
        (123, "prompts"),
        ([1, 2], "prompts\\[0\\]"),
        ([[{"role": "user"}]], "content"),
    ],
)
def test_bad_prompts_raise_before_any_model_runs(
    engine: BacoEngine, forward_counter: list[int], prompts: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        engine.generate(prompts)  # type: ignore[arg-type]
    assert forward_counter == []


def test_prompt_longer_than_context_is_refused(
    engine: BacoEngine, forward_counter: list[int]
) -> None:
    assert engine.context_window is not None
    long_prompt = " the" * (engine.context_window + 10)
    with pytest.raises(ValueError, match="prompt is too long"):
        engine.generate(["short", long_prompt])
    assert forward_counter == []


def test_router_names_are_case_insensitive_and_router_config_accepted(engine: BacoEngine) -> None:
    a = engine.generate("hi", router="p-punc", gamma=0.4, max_new_tokens=6, seed=3)
    b = engine.generate(
        "hi", router=RouterConfig(strategy="P-PUNC", gamma=0.4), max_new_tokens=6, seed=3
    )
    assert a[0][0].token_ids == b[0][0].token_ids
    settings = GenerationSettings(router=RouterConfig(strategy="P", gamma=0.2), gamma=0.9)
    assert settings.router_config().gamma == 0.9  # a call-level gamma overrides the config's


def test_rejected_assignment_leaves_settings_unchanged() -> None:
    settings = GenerationSettings(router="P", gamma=0.4)
    with pytest.raises(ValueError, match="gamma"):
        settings.gamma = 5.0
    assert settings.gamma == 0.4
    assert settings.router_config().gamma == 0.4


def test_cache_argument_follows_the_forward_signature() -> None:
    class Renamed(torch.nn.Module):  # transformers >= 5.24
        def forward(self, input_ids=None, cache=None, use_cache=None):  # type: ignore[no-untyped-def]
            return input_ids

    class Older(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):  # type: ignore[no-untyped-def]
            return input_ids

    assert cache_argument(Renamed()) == "cache"  # type: ignore[arg-type]
    assert cache_argument(Older()) == "past_key_values"  # type: ignore[arg-type]


def test_decoding_raises_no_deprecation_warning(engine, tiny_cross_pair) -> None:
    """The installed transformers' current calling convention is used (its deprecated
    names warn on every forward, which would reach every user's terminal)."""
    cross = BacoEngine.from_pretrained(tiny_cross_pair.base_dir, tiny_cross_pair.aligned_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        for pair in (engine, cross):
            for lazy in (True, False):
                pair.generate("Hi", router="random", gamma=0.5, n=2, max_new_tokens=8, lazy=lazy)
