"""Lazy catch-up gives the same tokens as lock-step decoding, with fewer forward passes."""

from __future__ import annotations

import pytest

from baco_integrations import ROUTER_NAMES, BacoEngine

PROMPTS = ["Write a poem about the sea.", "Ideas for a coffee shop", "Why?"]


def _run(engine: BacoEngine, lazy: bool, **kwargs):
    outs = engine.generate(lazy=lazy, **kwargs)
    return outs, engine.last_stats


@pytest.mark.parametrize("router", ROUTER_NAMES)
@pytest.mark.parametrize(
    ("prompts", "n", "temperature"),
    [(PROMPTS[0], 1, 1.0), (PROMPTS, 1, 1.0), (PROMPTS[1], 4, 1.0), (PROMPTS[:2], 3, 0.0)],
)
def test_lazy_equals_lock_step(
    engine: BacoEngine, router: str, prompts, n: int, temperature: float
) -> None:
    kwargs = {
        "prompts": prompts,
        "router": router,
        "gamma": 1.5 if router.startswith("H") else 0.5,
        "n": n,
        "temperature": temperature,
        "max_new_tokens": 24,
        "seed": 3,
        "top_k": 50,
    }
    lazy, lazy_stats = _run(engine, True, **kwargs)
    eager, eager_stats = _run(engine, False, **kwargs)
    assert [[o.token_ids for o in row] for row in lazy] == [
        [o.token_ids for o in row] for row in eager
    ]
    assert [[o.sources for o in row] for row in lazy] == [[o.sources for o in row] for row in eager]
    assert [[o.text for o in row] for row in lazy] == [[o.text for o in row] for row in eager]
    # lock-step runs each model once per step after the prefill
    assert eager_stats.base_forward_passes == eager_stats.steps
    assert eager_stats.aligned_forward_passes == eager_stats.steps
    assert lazy_stats.base_forward_passes <= eager_stats.base_forward_passes
    assert lazy_stats.aligned_forward_passes <= eager_stats.aligned_forward_passes


@pytest.mark.parametrize("side", ["aligned", "base"])
def test_single_model_routers_never_run_the_other_model(engine: BacoEngine, side: str) -> None:
    engine.generate(PROMPTS[0], router=side, max_new_tokens=16, seed=0)
    stats = engine.last_stats
    other = stats.base_forward_passes if side == "aligned" else stats.aligned_forward_passes
    assert other == 1  # the prefill only


def test_catch_up_runs_pending_tokens_in_one_forward(engine: BacoEngine) -> None:
    engine.generate(PROMPTS[1], router="random", gamma=0.5, max_new_tokens=30, seed=1)
    stats = engine.last_stats
    prompt = engine.encode_prompts(PROMPTS[1])
    # every generated token (but the last) is run through each model exactly once
    assert stats.base_forward_tokens <= len(prompt["base"]) + stats.steps - 1
    assert stats.aligned_forward_tokens <= len(prompt["aligned"]) + stats.steps - 1
    # and catching up batched several tokens at least once
    assert stats.base_forward_passes + stats.aligned_forward_passes < 2 * stats.steps


@pytest.fixture(scope="module")
def static_engine(tiny_pair) -> BacoEngine:
    return BacoEngine.from_pretrained(
        tiny_pair.base_dir, tiny_pair.aligned_dir, cache_implementation="static"
    )


@pytest.mark.parametrize("router", ["random", "P-PUNC", "nudging", "aligned"])
@pytest.mark.parametrize("lazy", [True, False])
def test_static_cache_equals_dynamic_cache(
    engine: BacoEngine, static_engine: BacoEngine, router: str, lazy: bool
) -> None:
    kwargs = {"router": router, "gamma": 0.5, "n": 3, "max_new_tokens": 20, "seed": 5}
    dynamic = engine.generate(PROMPTS, lazy=lazy, **kwargs)
    dynamic_stats = engine.last_stats
    static = static_engine.generate(PROMPTS, lazy=lazy, **kwargs)
    assert [[o.token_ids for o in r] for r in static] == [[o.token_ids for o in r] for r in dynamic]
    assert [[o.sources for o in r] for r in static] == [[o.sources for o in r] for r in dynamic]
    assert static_engine.last_stats == dynamic_stats  # one shared prefill, same catch-ups


def test_static_cache_is_preallocated(static_engine: BacoEngine, monkeypatch) -> None:
    """The static cache is sized once (prompt + max_new_tokens) and written in place."""
    from transformers import StaticCache

    sizes: list[int] = []
    original = StaticCache.__init__

    def spy(self, *args, **kwargs):
        sizes.append(kwargs["max_cache_len"])
        original(self, *args, **kwargs)

    static_engine.share_calibration()  # the default base share's one-off decode, not spied
    monkeypatch.setattr(StaticCache, "__init__", spy)
    static_engine.generate(PROMPTS[0], router="random", max_new_tokens=12, seed=0)
    prompt = static_engine.encode_prompts(PROMPTS[0])
    assert sorted(sizes) == sorted([len(prompt["base"]) + 12, len(prompt["aligned"]) + 12])


def test_unknown_cache_implementation_is_refused(tiny_pair) -> None:
    with pytest.raises(ValueError, match=r"cache_implementation='paged'.*'dynamic', 'static'"):
        BacoEngine.from_pretrained(
            tiny_pair.base_dir, tiny_pair.aligned_dir, cache_implementation="paged"
        )


def test_compiled_steps_give_the_eager_tokens(
    tiny_pair, static_engine: BacoEngine, monkeypatch
) -> None:
    """compile=True runs single-token steps through torch.compile (catch-ups stay eager)."""
    compiled = BacoEngine.from_pretrained(
        tiny_pair.base_dir, tiny_pair.aligned_dir, cache_implementation="static", compile=True
    )
    calls: list[int] = []
    for model in (compiled.base_model, compiled.aligned_model):
        real = model.get_compiled_call

        def counting(config, real=real):  # type: ignore[no-untyped-def]
            step = real(config)

            def call(**kwargs):  # type: ignore[no-untyped-def]
                calls.append(kwargs["input_ids"].shape[1])
                return step(**kwargs)

            return call

        monkeypatch.setattr(model, "get_compiled_call", counting)
    kwargs = {"router": "random", "gamma": 0.5, "n": 2, "max_new_tokens": 10, "seed": 3}
    eager = static_engine.generate(PROMPTS[:2], **kwargs)
    out = compiled.generate(PROMPTS[:2], **kwargs)
    assert [[o.token_ids for o in r] for r in out] == [[o.token_ids for o in r] for r in eager]
    assert compiled.last_stats == static_engine.last_stats
    assert calls and set(calls) == {1}  # only single-token steps are compiled


def test_compile_needs_the_static_cache(tiny_pair) -> None:
    with pytest.raises(ValueError, match=r"compile=True needs cache_implementation='static'"):
        BacoEngine.from_pretrained(tiny_pair.base_dir, tiny_pair.aligned_dir, compile=True)
