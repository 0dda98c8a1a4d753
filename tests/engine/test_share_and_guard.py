"""``base_share`` (a target share of base-written tokens, tracked per sample) and ``guard``
(a base token the aligned model finds implausible is not kept)."""

from __future__ import annotations

import statistics

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from baco_integrations import BacoEngine, BacoOutput
from baco_integrations.testing import TinyPair

PROMPTS = ["Write a poem about the sea.", "Ideas for a coffee shop", "Why?", "Tell me a story"]
#: The guard's checks: a coin sends many words to base, so the guard has tokens to judge.
GUARDED = dict(router="random", gamma=0.6, n=2, max_new_tokens=24, seed=3)


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


@pytest.mark.parametrize(("pair", "guard"), [("shared", 0.01), ("cross", 0.005)])
def test_lazy_equals_lock_step_with_base_share_and_guard(
    engine: BacoEngine, cross_engine: BacoEngine, pair: str, guard: float
) -> None:
    decoder = engine if pair == "shared" else cross_engine
    kwargs = dict(router="random", base_share=0.4, guard=guard, n=2, max_new_tokens=24, seed=5)
    lazy = decoder.generate(PROMPTS, lazy=True, **kwargs)
    eager = decoder.generate(PROMPTS, lazy=False, **kwargs)
    assert [[o.token_ids for o in r] for r in lazy] == [[o.token_ids for o in r] for r in eager]
    assert [[o.sources for o in r] for r in lazy] == [[o.sources for o in r] for r in eager]
    assert any("base" in o.sources for r in lazy for o in r)  # the guard kept some base words


@pytest.mark.parametrize("guard", [0.2, 0.6])
def test_the_guard_never_keeps_a_base_token_below_its_threshold(
    engine: BacoEngine, tiny_pair: TinyPair, guard: float
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_pair.aligned_dir).eval()
    outs = engine.generate(PROMPTS, guard=guard, temperature=1.0, **GUARDED)
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


def _opens_a_word(out: BacoOutput, i: int, base_continues: list[bool]) -> bool:
    """Whether the engine met sample token ``i`` (a base token) at a word boundary."""
    return i == 0 or out.sources[i - 1] != "base" or not base_continues[out.token_ids[i]]


# Two random tiny models of different vocabularies rarely agree: a base word opening passes a
# guard of 0.05 almost never, so the check uses small guards that keep some.
@pytest.mark.parametrize("guard", [0.005, 0.02])
def test_across_families_the_guard_keeps_only_word_openings_the_aligned_model_allows(
    cross_engine: BacoEngine, tiny_cross_pair: TinyPair, guard: float
) -> None:
    """Each base word's opening token: the aligned model's total probability of its tokens
    whose bytes are a prefix of the token's bytes or start with them (read here from the
    aligned tokenizer's byte-level vocabulary) is at least guard x its top probability."""
    model = AutoModelForCausalLM.from_pretrained(tiny_cross_pair.aligned_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_cross_pair.aligned_dir)
    to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
    vocab = {
        v: bytes(to_byte[c] for c in token)
        for token, v in tokenizer.get_vocab().items()
        if v not in set(tokenizer.all_special_ids)
    }
    base_continues = cross_engine.pair.base.masks.continuation.tolist()
    outs = cross_engine.generate(PROMPTS, guard=guard, logprobs=True, **GUARDED)
    checked = 0
    for prompt, row in zip(PROMPTS, outs, strict=True):
        prompt_ids = cross_engine.encode_prompts(prompt)["aligned"]
        for out in row:
            pieces = [bytes(lp.bytes) for lp in out.logprobs or ()]
            for i, source in enumerate(out.sources):
                if source != "base" or not _opens_a_word(out, i, base_continues):
                    continue
                try:
                    text = b"".join(pieces[:i]).decode()
                except UnicodeDecodeError:
                    continue  # the text so far ends inside a character: no clean check
                written = tokenizer.encode(text, add_special_tokens=False)
                with torch.inference_mode():
                    logits = model(input_ids=torch.tensor([prompt_ids + written])).logits
                probs = torch.softmax(logits[0, -1].float(), dim=-1)
                piece = pieces[i]
                mass = sum(
                    float(probs[v])
                    for v, b in vocab.items()
                    if b and (b.startswith(piece) or piece.startswith(b))
                )
                assert mass >= guard * float(probs.max()) - 1e-5, (piece, mass)
                checked += 1
    assert checked > 0  # the base model did open words under the guard


def test_across_families_the_guard_sends_words_back_to_the_aligned_model(
    cross_engine: BacoEngine,
) -> None:
    kwargs = dict(router="random", gamma=0.6, n=4, max_new_tokens=32, seed=3)
    free = [o.base_fraction for r in cross_engine.generate(PROMPTS, **kwargs) for o in r]
    guarded = [
        o.base_fraction for r in cross_engine.generate(PROMPTS, guard=0.9, **kwargs) for o in r
    ]
    assert statistics.mean(guarded) < statistics.mean(free)


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


def test_asyncio_callers_calibrate_off_the_event_loop(tiny_pair: TinyPair) -> None:
    """The default base share needs the pair's calibration on the first call; agenerate and
    astream run it in a worker thread, never on the event loop's own thread."""
    import asyncio
    import threading

    engine = BacoEngine.from_pretrained(tiny_pair.base_dir, tiny_pair.aligned_dir)
    calibrated_on: list[threading.Thread] = []
    calibrate = engine.share_calibration

    def spy() -> object:
        calibrated_on.append(threading.current_thread())
        return calibrate()

    engine.share_calibration = spy  # type: ignore[method-assign]

    async def calls() -> threading.Thread:
        await engine.agenerate(PROMPTS[0], max_new_tokens=4, seed=0)
        async for _ in engine.astream(PROMPTS[1], max_new_tokens=4, seed=0):
            pass
        return threading.current_thread()

    loop_thread = asyncio.run(calls())
    # the first call decodes the calibration; later ones only read it back
    assert calibrated_on and calibrated_on[0] is not loop_thread
    engine.shutdown()
