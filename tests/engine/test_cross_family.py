"""Cross-family pairs: two tiny models whose tokenizers differ (512 and 640 tokens)."""

from __future__ import annotations

import pytest
import torch

from baco_integrations import ROUTER_NAMES, BacoEngine
from baco_integrations.decoding import TextModelState, encode_text

PROMPTS = ["Write a poem about the sea.", "Ideas for a coffee shop", "Why?"]


def _decode(tokenizer, ids) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def test_the_pair_really_differs(cross_engine: BacoEngine) -> None:
    assert not cross_engine.shares_tokenizer
    assert (cross_engine.pair.base.vocab_size, cross_engine.pair.aligned.vocab_size) == (512, 640)
    text = "Ideas for a coffee shop"
    assert encode_text(cross_engine.base_tokenizer, text) != encode_text(
        cross_engine.aligned_tokenizer, text
    )


@pytest.mark.parametrize("router", ROUTER_NAMES)
def test_every_router_runs_and_ids_spell_the_text(cross_engine: BacoEngine, router: str) -> None:
    outs = cross_engine.generate(
        PROMPTS,
        router=router,
        gamma=1.5 if router.startswith("H") else 0.5,
        n=2,
        max_new_tokens=24,
        seed=1,
    )
    assert [len(row) for row in outs] == [2, 2, 2]
    for row in outs:
        for out in row:
            assert out.num_tokens > 0 or out.finish_reason == "stop"
            assert len(out.sources) == len(out.token_ids)
            # token_ids are aligned-vocabulary ids that spell the text exactly
            assert max(out.token_ids, default=0) < 640
            assert _decode(cross_engine.aligned_tokenizer, out.token_ids) == out.text
    if router in ("aligned", "base"):
        assert {s for row in outs for o in row for s in o.sources} <= {router}


def test_aligned_router_greedy_equals_the_aligned_model_alone(cross_engine: BacoEngine) -> None:
    model, tokenizer = cross_engine.aligned_model, cross_engine.aligned_tokenizer
    for prompt in PROMPTS:
        ids = cross_engine.encode_prompts(prompt)["aligned"]
        reference = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=24,
        )[0, len(ids) :].tolist()
        ends = [i for i, t in enumerate(reference) if t in cross_engine.pair.aligned.eos_ids]
        expected = _decode(tokenizer, reference[: ends[0]] if ends else reference)
        (out,) = cross_engine.generate(prompt, router="aligned", temperature=0, max_new_tokens=24)[
            0
        ]
        # The limit counts the reported (re-tokenized) aligned ids, which may spell the text
        # with more ids than the model wrote: the output is the reference, cut there.
        assert out.num_tokens <= 24
        if out.finish_reason == "stop":
            assert out.text == expected
        else:
            assert expected.startswith(out.text) and out.num_tokens >= 24 - 2
        assert cross_engine.last_stats.base_forward_passes == 1  # its prefill only


@pytest.mark.parametrize("router", ["random", "P", "P-PUNC", "H-FC", "nudging"])
def test_lazy_equals_lock_step(cross_engine: BacoEngine, router: str) -> None:
    kwargs = {
        "router": router,
        "gamma": 1.5 if "H" in router else 0.5,
        "n": 3,
        "max_new_tokens": 20,
        "seed": 4,
        "top_k": 50,
    }
    lazy = cross_engine.generate(PROMPTS[:2], lazy=True, **kwargs)
    lazy_stats = cross_engine.last_stats
    eager = cross_engine.generate(PROMPTS[:2], lazy=False, **kwargs)
    eager_stats = cross_engine.last_stats
    assert [[o.text for o in r] for r in lazy] == [[o.text for o in r] for r in eager]
    assert [[o.sources for o in r] for r in lazy] == [[o.sources for o in r] for r in eager]
    assert (
        lazy_stats.base_forward_passes + lazy_stats.aligned_forward_passes
        <= eager_stats.base_forward_passes + eager_stats.aligned_forward_passes
    )
    # a boundary, or a row handed over, shares the step's forward: at most one per model per
    # step (plus the prefill), however the rows' words fall
    for stats in (lazy_stats, eager_stats):
        assert stats.base_forward_passes <= stats.steps + 1
        assert stats.aligned_forward_passes <= stats.steps + 1


class _Recorder:
    """Wraps TextModelState.sync / catch_up to check every re-tokenization and catch-up."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, prompt_ids: dict[int, list[int]]):
        self.syncs: list[tuple[list[int], list[int], int, int, int]] = []
        self.checked_logits = 0
        recorder = self
        sync, catch_up = TextModelState.sync, TextModelState.catch_up

        def spy_sync(state: TextModelState, row: int, target: list[int]) -> None:
            before = state.view(row)
            cached = len(state.cached[row])
            sync(state, row, target)
            if before != target:
                kept, ran = state.last_sync[1:]
                recorder.syncs.append((before, target, cached, kept, ran))

        def spy_catch_up(state: TextModelState) -> None:
            rows = [r for r, p in enumerate(state.pending) if p]
            catch_up(state)
            # each caught-up row's logits equal a fresh forward over prompt + its view
            for row in rows:
                ids = prompt_ids[id(state)][row] + state.view(row)
                with torch.inference_mode():
                    ref = state.model(torch.tensor([ids])).logits[0, -1, : state.vocab_size]
                torch.testing.assert_close(state._logits[row], ref.float(), atol=2e-4, rtol=1e-4)
                recorder.checked_logits += 1

        monkeypatch.setattr(TextModelState, "sync", spy_sync)
        monkeypatch.setattr(TextModelState, "catch_up", spy_catch_up)


def test_retokenization_reuses_the_cache_and_loses_no_text(
    cross_engine: BacoEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt_ids: dict[int, list[int]] = {}
    prefill = TextModelState.prefill

    def spy_prefill(state, prompts, repeats, capacity):  # remember each row's prompt
        prompt_ids[id(state)] = [
            list(p) for p, k in zip(prompts, repeats, strict=True) for _ in range(k)
        ]
        prefill(state, prompts, repeats, capacity)

    select = TextModelState.select

    def spy_select(state, keep):  # finished rows leave: follow the prompts of those that stay
        prompt_ids[id(state)] = [prompt_ids[id(state)][r] for r in keep.tolist()]
        select(state, keep)

    monkeypatch.setattr(TextModelState, "prefill", spy_prefill)
    monkeypatch.setattr(TextModelState, "select", spy_select)
    recorder = _Recorder(monkeypatch, prompt_ids)
    outs = cross_engine.generate(
        PROMPTS, router="random", gamma=0.5, n=2, max_new_tokens=32, seed=2
    )
    stats = cross_engine.last_stats
    assert recorder.syncs and recorder.checked_logits
    for before, target, cached, kept, ran in recorder.syncs:
        common = 0
        while common < min(len(before), len(target)) and before[common] == target[common]:
            common += 1
        # the cache is kept up to the longest common prefix and only the differing suffix
        # runs (plus the last token when the new text ends inside the cache)
        assert kept == min(common, cached, len(target) - 1)
        assert ran == len(target) - kept
    assert stats.base_reused_tokens + stats.aligned_reused_tokens > 0
    assert (stats.base_synced_tokens + stats.aligned_synced_tokens) < sum(
        len(t) for _, t, _, _, _ in recorder.syncs
    )
    for row in outs:
        for out in row:
            assert _decode(cross_engine.aligned_tokenizer, out.token_ids) == out.text


def test_sync_keeps_the_longest_common_prefix(cross_engine: BacoEngine) -> None:
    """A direct check of one re-tokenization: 5 of 7 tokens match, so 2 run."""
    state = TextModelState(cross_engine.pair.base, torch.device("cpu"))
    state.prefill([[1, 2, 3]], [1], capacity=16)
    for token in [10, 11, 12, 13, 14, 15]:
        state.append(0, token)
    state.catch_up()
    state.sync(0, [10, 11, 12, 13, 14, 20, 21])
    assert state.last_sync == (0, 5, 2)
    assert state.pending[0] == [20, 21]
    state.catch_up()
    assert state.view(0) == [10, 11, 12, 13, 14, 20, 21]
    with torch.inference_mode():
        ref = state.model(torch.tensor([[1, 2, 3, 10, 11, 12, 13, 14, 20, 21]])).logits[0, -1]
    torch.testing.assert_close(state._logits[0], ref[:512].float(), atol=2e-4, rtol=1e-4)
    # a target that is a prefix of the cache re-runs only its last token
    state.sync(0, [10, 11, 12])
    assert state.last_sync == (0, 2, 1)


def test_stop_strings_cut_text_and_ids(cross_engine: BacoEngine) -> None:
    kwargs = {"router": "random", "gamma": 0.5, "max_new_tokens": 40, "seed": 3}
    (full,) = cross_engine.generate(PROMPTS[1], **kwargs)[0]
    words = full.text.split()
    assert len(words) > 3
    stop = words[2][:2] if len(words[2]) >= 2 else words[2]
    cut = full.text.find(stop)
    (out,) = cross_engine.generate(PROMPTS[1], stop=[stop], **kwargs)[0]
    assert out.finish_reason == "stop"
    assert out.text == full.text[:cut]
    assert _decode(cross_engine.aligned_tokenizer, out.token_ids) == out.text
    chunks = list(cross_engine.stream(PROMPTS[1], stop=[stop], **kwargs))
    assert "".join(c.text for c in chunks) == out.text
    assert tuple(t for c in chunks for t in c.token_ids) == out.token_ids


def test_static_cache_is_refused_for_a_cross_family_pair(tiny_cross_pair) -> None:
    with pytest.raises(ValueError, match="cache_implementation='static' needs a shared"):
        BacoEngine.from_pretrained(
            tiny_cross_pair.base_dir, tiny_cross_pair.aligned_dir, cache_implementation="static"
        )
