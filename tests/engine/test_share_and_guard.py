"""``base_share`` (a target share of base-written tokens, tracked per sample) and ``guard``
(a base token the aligned model finds implausible is not kept)."""

from __future__ import annotations

import statistics

import pytest
import torch
from transformers import AutoModelForCausalLM

from baco_integrations import BacoEngine
from baco_integrations.testing import TinyPair

PROMPTS = ["Write a poem about the sea.", "Ideas for a coffee shop", "Why?", "Tell me a story"]


@pytest.mark.parametrize("router", ["P", "H", "nudging", "random"])
@pytest.mark.parametrize("target", [0.2, 0.5])
def test_each_sample_lands_near_the_target(engine: BacoEngine, router: str, target: float) -> None:
    outs = engine.generate(
        PROMPTS, router=router, base_share=target, n=4, max_new_tokens=64, seed=1
    )
    full = [o for row in outs for o in row if o.num_tokens == 64]
    assert len(full) >= 8
    assert abs(statistics.mean(o.base_fraction for o in full) - target) <= 0.05
    continuation = engine.pair.aligned.masks.continuation.tolist()
    for out in full:
        # within 0.1, give or take the sample's longest word: a word is never split, and a
        # random tiny model writes words of many tokens
        starts = [i for i, t in enumerate(out.token_ids) if i == 0 or not continuation[t]]
        longest = max(b - a for a, b in zip(starts, [*starts[1:], 64], strict=True))
        assert abs(out.base_fraction - target) <= 0.1 + longest / 64, out.sources


def test_base_share_beats_a_fixed_gamma_at_the_same_mean(engine: BacoEngine) -> None:
    """Samples at one γ spread widely; at a base_share with the same mean they bunch up."""
    kwargs = dict(router="P", n=4, max_new_tokens=64, seed=2)
    fixed = [o.base_fraction for r in engine.generate(PROMPTS, gamma=0.5, **kwargs) for o in r]
    target = statistics.mean(fixed)
    tracked = [
        o.base_fraction for r in engine.generate(PROMPTS, base_share=target, **kwargs) for o in r
    ]
    assert statistics.pstdev(tracked) < statistics.pstdev(fixed)


def test_seeded_base_share_is_reproducible_and_alone_equals_batched(engine: BacoEngine) -> None:
    kwargs = dict(router="P-PUNC", base_share=0.3, max_new_tokens=32, seed=4)
    alone = engine.generate(PROMPTS[0], **kwargs)[0][0]
    batched = engine.generate(PROMPTS, **kwargs)[0][0]
    again = engine.generate(PROMPTS[0], **kwargs)[0][0]
    assert alone.token_ids == batched.token_ids == again.token_ids
    assert alone.sources == batched.sources


def test_lazy_equals_lock_step_with_base_share_and_guard(engine: BacoEngine) -> None:
    kwargs = dict(router="P-PUNC", base_share=0.4, guard=0.3, n=2, max_new_tokens=24, seed=5)
    lazy = engine.generate(PROMPTS, lazy=True, **kwargs)
    eager = engine.generate(PROMPTS, lazy=False, **kwargs)
    assert [[o.token_ids for o in r] for r in lazy] == [[o.token_ids for o in r] for r in eager]
    assert [[o.sources for o in r] for r in lazy] == [[o.sources for o in r] for r in eager]


@pytest.mark.parametrize("guard", [0.2, 0.6])
def test_the_guard_never_keeps_a_base_token_below_its_threshold(
    engine: BacoEngine, tiny_pair: TinyPair, guard: float
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_pair.aligned_dir).eval()
    outs = engine.generate(
        PROMPTS,
        router="random",
        gamma=0.6,
        guard=guard,
        n=2,
        max_new_tokens=24,
        seed=3,
        temperature=1.0,
    )
    checked = 0
    for prompt, row in zip(PROMPTS, outs, strict=True):
        prompt_ids = engine.encode_prompts(prompt)["aligned"]
        for out in row:
            ids = torch.tensor([prompt_ids + list(out.token_ids)])
            with torch.inference_mode():
                probs = torch.softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            for i, (token, source) in enumerate(zip(out.token_ids, out.sources, strict=True)):
                if source != "base":
                    continue
                at = probs[len(prompt_ids) - 1 + i]
                assert at[token] >= guard * at.max() - 1e-6
                checked += 1
    assert checked > 0  # the base model did write under the guard


def test_the_guard_sends_words_back_to_the_aligned_model(engine: BacoEngine) -> None:
    kwargs = dict(router="random", gamma=0.6, n=4, max_new_tokens=32, seed=3)
    free = [o.base_fraction for r in engine.generate(PROMPTS, **kwargs) for o in r]
    guarded = [o.base_fraction for r in engine.generate(PROMPTS, guard=0.9, **kwargs) for o in r]
    assert statistics.mean(guarded) < statistics.mean(free)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_share": 1.5}, "base_share"),
        ({"base_share": -0.1}, "base_share"),
        ({"base_share": 0.3, "gamma": 0.5}, "both given"),
        ({"base_share": 0.3, "router": "aligned"}, "router 'aligned' has none"),
        ({"base_share": 0.3, "router": "PUNC"}, "allowed: P, H"),
        ({"guard": 1.2}, "guard"),
        ({"guard": -0.5}, "guard"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(
    engine: BacoEngine, kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        engine.generate(PROMPTS[0], max_new_tokens=4, **kwargs)


def test_the_guard_is_refused_across_families(cross_engine: BacoEngine) -> None:
    with pytest.raises(ValueError, match="guard=0.5.*one tokenizer"):
        cross_engine.generate(PROMPTS[0], guard=0.5, max_new_tokens=4)


def test_base_share_across_families(cross_engine: BacoEngine) -> None:
    outs = cross_engine.generate(
        PROMPTS, router="P", base_share=0.3, n=2, max_new_tokens=48, seed=1
    )
    shares = [o.base_fraction for r in outs for o in r]
    assert abs(statistics.mean(shares) - 0.3) <= 0.1


def test_a_target_out_of_reach_is_reported(engine: BacoEngine) -> None:
    with pytest.warns(RuntimeWarning, match=r"base_share=0.95: the samples reached"):
        engine.generate(PROMPTS, router="P-FC", base_share=0.95, max_new_tokens=24, seed=1)


def test_a_reachable_target_is_not_warned_about(engine: BacoEngine) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        engine.generate(PROMPTS, router="P", base_share=0.3, max_new_tokens=24, seed=1)
