"""Token log-probs (``logprobs=True``): each generated token's log-prob under the distribution
it was drawn from, read from the forwards the loop already runs (docs/logprobs.md)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from baco_integrations import BacoEngine
from baco_integrations.outputs import TokenLogProb
from baco_integrations.testing import TinyPair

PROMPTS = ["Write a poem about the sea.", "Ideas for a coffee shop"]


def _without_models(entry: TokenLogProb) -> TokenLogProb:
    return dataclasses.replace(entry, aligned_logprob=None, base_logprob=None)


def _spelled(entries) -> str:
    return b"".join(bytes(e.bytes) for e in entries).decode("utf-8", errors="replace")


def _own_logprobs(model_dir, prompt_ids: list[int], tokens: list[int]) -> list[float]:
    """The model's own log_softmax of each token given the prompt and the tokens before it,
    computed here with transformers, apart from the engine."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.tensor([prompt_ids + tokens])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    start = len(prompt_ids) - 1
    return [logprobs[start + i, t].item() for i, t in enumerate(tokens)]


@pytest.mark.parametrize(("router", "side"), [("aligned", "aligned"), ("base", "base")])
def test_logprobs_equal_the_writers_own_at_temperature_one(
    engine: BacoEngine, tiny_pair: TinyPair, router: str, side: str
) -> None:
    ((out,),) = engine.generate(
        PROMPTS[0],
        router=router,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        max_new_tokens=20,
        seed=4,
        logprobs=True,
    )
    assert out.logprobs is not None and len(out.logprobs) == out.num_tokens
    assert [e.token_id for e in out.logprobs] == list(out.token_ids)
    assert {e.source for e in out.logprobs} == {side}
    prompt_ids = engine.encode_prompts(PROMPTS[0])[side]
    model_dir = tiny_pair.aligned_dir if side == "aligned" else tiny_pair.base_dir
    expected = _own_logprobs(model_dir, prompt_ids, list(out.token_ids))
    assert [e.logprob for e in out.logprobs] == pytest.approx(expected, abs=1e-4)


def test_temperature_and_truncation_are_what_the_draw_saw(engine: BacoEngine) -> None:
    ((out,),) = engine.generate(
        PROMPTS[1],
        router="aligned",
        temperature=0.7,
        top_k=5,
        max_new_tokens=16,
        seed=1,
        logprobs=True,
        top_logprobs=8,
    )
    assert out.logprobs
    for entry in out.logprobs:
        # top-k 5 leaves five tokens: the alternatives stop there and their mass is one
        assert len(entry.top_logprobs) == 5
        assert math.fsum(math.exp(t.logprob) for t in entry.top_logprobs) == pytest.approx(1.0)
        assert entry.token_id in {t.token_id for t in entry.top_logprobs}


def test_top_logprobs_are_sorted_and_hold_the_drawn_token(engine: BacoEngine) -> None:
    outs = engine.generate(
        PROMPTS,
        router="P-PUNC",
        gamma=0.5,
        n=2,
        max_new_tokens=20,
        seed=2,
        logprobs=True,
        top_logprobs=5,
    )
    for out in (o for row in outs for o in row):
        assert out.logprobs is not None and len(out.logprobs) == out.num_tokens
        for entry in out.logprobs:
            values = [t.logprob for t in entry.top_logprobs]
            assert len(values) == 5 and values == sorted(values, reverse=True)
            if entry.logprob >= values[-1]:  # among the five most likely
                assert entry.token_id in {t.token_id for t in entry.top_logprobs}
            assert entry.logprob <= values[0] + 1e-6
        assert _spelled(out.logprobs) == out.text  # a token's bytes may hold part of a character
        assert [e.source for e in out.logprobs] == list(out.sources)


def test_off_by_default_and_top_logprobs_zero_lists_none(engine: BacoEngine) -> None:
    ((plain,),) = engine.generate(PROMPTS[0], max_new_tokens=8, seed=0)
    assert plain.logprobs is None
    ((out,),) = engine.generate(PROMPTS[0], max_new_tokens=8, seed=0, logprobs=True)
    assert out.token_ids == plain.token_ids  # recording does not change the draw
    assert out.logprobs is not None and all(e.top_logprobs == () for e in out.logprobs)


@pytest.mark.parametrize("router", ["P-PUNC", "H", "nudging", "random"])
def test_lazy_and_lock_step_record_the_same(engine: BacoEngine, router: str) -> None:
    kwargs = dict(
        prompts=PROMPTS,
        router=router,
        gamma=1.5 if router == "H" else 0.4,
        n=2,
        max_new_tokens=16,
        seed=5,
        logprobs=True,
        top_logprobs=3,
    )
    lazy = engine.generate(lazy=True, **kwargs)
    eager = engine.generate(lazy=False, **kwargs)
    for a, b in zip((o for r in lazy for o in r), (o for r in eager for o in r), strict=True):
        assert a.logprobs is not None and b.logprobs is not None
        assert [(e.token_id, e.source) for e in a.logprobs] == [
            (e.token_id, e.source) for e in b.logprobs
        ]
        assert [e.logprob for e in a.logprobs] == pytest.approx(
            [e.logprob for e in b.logprobs], abs=1e-4
        )


def test_stream_chunks_carry_their_tokens_entries(engine: BacoEngine) -> None:
    kwargs = dict(
        router="P-PUNC", gamma=0.5, max_new_tokens=20, seed=3, logprobs=True, top_logprobs=2
    )
    ((whole,),) = engine.generate(PROMPTS[1], **kwargs)
    streamed: list[TokenLogProb] = []
    for chunk in engine.stream(PROMPTS[1], **kwargs):
        assert chunk.logprobs is not None
        streamed.extend(chunk.logprobs)
    assert whole.logprobs is not None
    # both models' own values are known once the sample finished: in the last chunk only
    assert [_without_models(e) for e in streamed] == [_without_models(e) for e in whole.logprobs]
    assert streamed[-1] == whole.logprobs[-1]


def test_stop_string_cuts_the_entries_with_the_text(engine: BacoEngine) -> None:
    ((free,),) = engine.generate(PROMPTS[0], max_new_tokens=24, seed=6, router="aligned")
    stop = free.text[len(free.text) // 2 :][:3]
    if not stop.strip():
        pytest.skip("the sample has no stop string to cut at")
    ((cut,),) = engine.generate(
        PROMPTS[0], max_new_tokens=24, seed=6, router="aligned", stop=[stop], logprobs=True
    )
    assert cut.logprobs is not None and len(cut.logprobs) == cut.num_tokens


def test_cross_family_entries_are_in_the_writers_tokens(cross_engine: BacoEngine) -> None:
    outs = cross_engine.generate(
        PROMPTS,
        router="P",
        gamma=0.5,
        n=2,
        max_new_tokens=24,
        seed=1,
        logprobs=True,
        top_logprobs=2,
    )
    for out in (o for row in outs for o in row):
        assert out.logprobs is not None
        assert _spelled(out.logprobs) == out.text
        for entry in out.logprobs:
            tokenizer = (
                cross_engine.base_tokenizer
                if entry.source == "base"
                else cross_engine.aligned_tokenizer
            )
            assert entry.token == tokenizer.decode([entry.token_id], skip_special_tokens=True)
            assert entry.logprob <= 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_logprobs": 3}, "top_logprobs=3 needs logprobs=True"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    ],
)
def test_bad_settings_are_refused(engine: BacoEngine, kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        engine.generate(PROMPTS[0], max_new_tokens=4, **kwargs)


# ----------------------------------------------------------------- each model's mean log-prob


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.mark.parametrize("lazy", [True, False])
@pytest.mark.parametrize("router", ["P-PUNC", "random", "aligned"])
def test_mean_logprobs_are_each_models_own(
    engine: BacoEngine, tiny_pair: TinyPair, router: str, lazy: bool
) -> None:
    outs = engine.generate(
        PROMPTS,
        router=router,
        gamma=0.5,
        n=2,
        max_new_tokens=16,
        seed=7,
        lazy=lazy,
        logprobs=True,
    )
    for i, row in enumerate(outs):
        ids = engine.encode_prompts(PROMPTS[i])
        for out in row:
            tokens = list(out.token_ids)
            for side, model_dir, got in (
                ("base", tiny_pair.base_dir, out.base_mean_logprob),
                ("aligned", tiny_pair.aligned_dir, out.aligned_mean_logprob),
            ):
                expected = _mean(_own_logprobs(model_dir, ids[side], tokens))
                assert got == pytest.approx(expected, abs=1e-4), side


def test_means_are_absent_unless_asked(engine: BacoEngine) -> None:
    ((out,),) = engine.generate(PROMPTS[0], max_new_tokens=6, seed=0)
    assert out.base_mean_logprob is None and out.aligned_mean_logprob is None


def test_cross_family_means_score_each_models_view(
    cross_engine: BacoEngine, tiny_cross_pair: TinyPair
) -> None:
    """A model that did not write the end re-tokenizes the text once, at the end, and its
    mean is over those tokens; where a stop string cut the text, both models score their
    tokenization of what was kept."""
    from baco_integrations.decoding.encoding import encode_text

    ids = cross_engine.encode_prompts(PROMPTS[0])
    kwargs = dict(router="aligned", max_new_tokens=16, seed=2, logprobs=True)
    ((free,),) = cross_engine.generate(PROMPTS[0], **kwargs)
    base = encode_text(cross_engine.base_tokenizer, free.text)
    expected = _mean(_own_logprobs(tiny_cross_pair.base_dir, ids["base"], base))
    assert free.base_mean_logprob == pytest.approx(expected, abs=1e-4)

    stop = free.text[len(free.text) // 2 :][:2]
    ((cut,),) = cross_engine.generate(PROMPTS[0], stop=[stop], **kwargs)
    assert cut.finish_reason == "stop" and cut.text
    for side, model_dir, got in (
        ("base", tiny_cross_pair.base_dir, cut.base_mean_logprob),
        ("aligned", tiny_cross_pair.aligned_dir, cut.aligned_mean_logprob),
    ):
        tokenizer = getattr(cross_engine, f"{side}_tokenizer")
        tokens = encode_text(tokenizer, cut.text)
        assert got == pytest.approx(_mean(_own_logprobs(model_dir, ids[side], tokens)), abs=1e-4)


def test_runner_scores_survive_rewinds_and_joins(tiny_pair: TinyPair) -> None:
    """The in-process runner's recorded log-probs equal a fresh forward's, whatever mix of
    appends, catch-ups, rewinds (dropping run tokens, or to nothing) and joins came before."""
    from baco_integrations.runners import RowSettings
    from baco_integrations.runners.in_process import TransformersRunner

    model = AutoModelForCausalLM.from_pretrained(tiny_pair.base_dir).eval()
    runner = TransformersRunner(model, pad_id=0)
    prompts = [[5, 6, 7, 8], [9, 10]]
    runner.add_rows(prompts, [1, 1], 64, [RowSettings(score=True), RowSettings()])
    generator = torch.Generator().manual_seed(0)
    responses: list[list[int]] = [[], []]

    def some(count: int) -> list[int]:
        return torch.randint(20, 500, (count,), generator=generator).tolist()

    for row, (op, count) in enumerate(
        [
            ("append", 3),
            ("run", 0),
            ("append", 2),
            ("rewind", 4),
            ("append", 3),
            ("run", 0),
            ("rewind", 0),
            ("append", 4),
            ("run", 0),
            ("append", 1),
            ("rewind", 2),
            ("append", 2),
        ]
    ):
        for r in (0, 1):
            if op == "append":
                tokens = some(count)
                runner.append(r, tokens)
                responses[r] += tokens
            elif op == "rewind":
                runner.rewind(r, min(count, len(responses[r])))
                del responses[r][count:]
            else:
                runner.distributions([0, 1])
        if row == 5:  # a third row joins the running ones
            runner.add_rows([[11, 12, 13]], [1], 64, [RowSettings(score=True)])
            prompts.append([11, 12, 13])
            responses.append([])
            runner.append(2, tokens := some(3))
            responses[2] += tokens
    scores = runner.response_logprobs([0, 1, 2])
    assert scores[1] is None
    for r in (0, 2):
        expected = _own_logprobs(tiny_pair.base_dir, prompts[r], responses[r])
        assert scores[r] == pytest.approx(expected, abs=1e-4)


def test_entries_carry_both_models_own_logprobs(engine: BacoEngine, tiny_pair: TinyPair) -> None:
    outs = engine.generate(
        PROMPTS[1], router="P-PUNC", gamma=0.5, n=2, max_new_tokens=16, seed=8, logprobs=True
    )
    ids = engine.encode_prompts(PROMPTS[1])
    for out in outs[0]:
        assert out.logprobs is not None
        for side, model_dir in (("base", tiny_pair.base_dir), ("aligned", tiny_pair.aligned_dir)):
            own = _own_logprobs(model_dir, ids[side], list(out.token_ids))
            got = [getattr(e, f"{side}_logprob") for e in out.logprobs]
            assert got == pytest.approx(own, abs=1e-4)
        # at temperature 1 without truncation the writer's entry is its own log-prob, but
        # where it took the row over (its distribution was restricted to word starts)
        for before, entry in zip((None, *out.logprobs), out.logprobs, strict=False):
            if before is None or before.source == entry.source:
                own = getattr(entry, f"{entry.source}_logprob")
                assert entry.logprob == pytest.approx(own, abs=1e-4)


def test_cross_family_words_sum_each_models_tokens(cross_engine: BacoEngine) -> None:
    """Each model's tokens are split among the writer's entries: the entries' values add up
    to the model's whole log-prob of the text (its mean times its token count)."""
    from baco_integrations.decoding.encoding import encode_text

    ((out,),) = cross_engine.generate(
        PROMPTS[0], router="aligned", max_new_tokens=20, seed=3, logprobs=True
    )
    assert out.logprobs is not None and out.base_mean_logprob is not None
    base = [e.base_logprob for e in out.logprobs]
    assert all(v is not None and v <= 0.0 for v in base)
    count = len(encode_text(cross_engine.base_tokenizer, out.text))
    assert sum(v for v in base if v is not None) == pytest.approx(
        out.base_mean_logprob * count, abs=1e-3
    )
    # the writer's own view is its tokens: one each
    for entry in out.logprobs:
        assert entry.aligned_logprob is not None
        assert entry.logprob == pytest.approx(entry.aligned_logprob, abs=1e-4)
