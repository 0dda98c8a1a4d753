"""Decoding: equivalence with transformers' generate, batching, seeds, stopping, streaming."""

from __future__ import annotations

import threading

import pytest
import torch

from baco_integrations import BacoEngine, RouterInputs

PROMPTS = ["Write a poem about the sea.", "Ideas for a coffee shop", "Why?"]


def _greedy_reference(model, ids: list[int], max_new_tokens: int) -> list[int]:
    out = model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        do_sample=False,
        max_new_tokens=max_new_tokens,
    )
    return out[0, len(ids) :].tolist()


@pytest.mark.parametrize("side", ["aligned", "base"])
def test_single_model_router_matches_transformers_generate(engine: BacoEngine, side: str) -> None:
    model = engine.aligned_model if side == "aligned" else engine.base_model
    for prompt in PROMPTS:
        ids = engine.encode_prompts(prompt)[side]
        reference = _greedy_reference(model, ids, max_new_tokens=24)
        out = engine.generate(prompt, router=side, temperature=0, max_new_tokens=24)[0][0]
        # generate() keeps the EOS token (and pads after it); BACO outputs stop before it
        ends = [i for i, t in enumerate(reference) if t in engine.pair.aligned.eos_ids]
        expected = reference[: ends[0]] if ends else reference
        assert list(out.token_ids) == expected
        assert set(out.sources) <= {side}


@pytest.mark.parametrize("router", ["aligned", "P-PUNC", "H", "random"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_batch_of_prompts_matches_each_prompt_alone(
    any_engine: BacoEngine, router: str, temperature: float
) -> None:
    """Greedy or sampled: a seeded prompt's samples are the same alone or in a batch."""
    settings = {"router": router, "gamma": 0.5, "temperature": temperature, "seed": 0}
    batched = any_engine.generate(PROMPTS, max_new_tokens=16, n=2, **settings)
    for i, prompt in enumerate(PROMPTS):
        alone = any_engine.generate(prompt, max_new_tokens=16, n=2, **settings)[0]
        assert [o.token_ids for o in batched[i]] == [o.token_ids for o in alone]
        assert [o.sources for o in batched[i]] == [o.sources for o in alone]
        assert [o.text for o in batched[i]] == [o.text for o in alone]


def test_samples_of_a_prompt_share_one_prefill(engine: BacoEngine) -> None:
    out = engine.generate("Ideas for a coffee shop", n=4, max_new_tokens=8, seed=1, router="P")
    stats = engine.last_stats
    prompt_len = {k: len(v) for k, v in engine.encode_prompts("Ideas for a coffee shop").items()}
    # one prefill of the prompt, then one token per row per further step
    assert stats.aligned_forward_tokens == prompt_len["aligned"] + 4 * (stats.steps - 1)
    assert stats.base_forward_tokens == prompt_len["base"] + 4 * (stats.steps - 1)
    assert len(out[0]) == 4
    assert [o.sample_index for o in out[0]] == [0, 1, 2, 3]


def test_same_seed_same_samples_different_seed_different(engine: BacoEngine) -> None:
    kwargs = {"router": "P-PUNC", "gamma": 0.5, "n": 3, "max_new_tokens": 20}
    a = engine.generate(PROMPTS[:2], seed=7, **kwargs)
    b = engine.generate(PROMPTS[:2], seed=7, **kwargs)
    c = engine.generate(PROMPTS[:2], seed=8, **kwargs)
    ids = lambda outs: [o.token_ids for row in outs for o in row]  # noqa: E731
    assert ids(a) == ids(b)
    assert [o.sources for row in a for o in row] == [o.sources for row in b for o in row]
    assert ids(a) != ids(c)
    # the n samples of one prompt differ from each other
    assert len({o.token_ids for o in a[0]}) > 1


def test_sampling_settings_are_applied(engine: BacoEngine) -> None:
    # top_k=1 is greedy whatever the temperature
    greedy = engine.generate(PROMPTS[0], router="P", gamma=0.5, temperature=0, max_new_tokens=12)
    top1 = engine.generate(
        PROMPTS[0], router="P", gamma=0.5, temperature=1.0, top_k=1, max_new_tokens=12, seed=3
    )
    assert greedy[0][0].token_ids == top1[0][0].token_ids
    tiny_p = engine.generate(
        PROMPTS[0], router="P", gamma=0.5, top_p=1e-6, max_new_tokens=12, seed=4
    )
    assert tiny_p[0][0].token_ids == greedy[0][0].token_ids
    high_min_p = engine.generate(
        PROMPTS[0], router="P", gamma=0.5, min_p=1.0, max_new_tokens=12, seed=5
    )
    assert high_min_p[0][0].token_ids == greedy[0][0].token_ids


def test_stop_string_cuts_output_before_it(engine: BacoEngine) -> None:
    full = engine.generate(PROMPTS[1], router="P-PUNC", temperature=0, max_new_tokens=40)[0][0]
    text = full.text
    assert len(text) > 8
    stop = text[len(text) // 2 : len(text) // 2 + 3]  # usually spans a token boundary
    cut = text.index(stop)
    out = engine.generate(
        PROMPTS[1], router="P-PUNC", temperature=0, max_new_tokens=40, stop=[stop, "\x00never"]
    )[0][0]
    assert out.text == text[:cut]
    assert out.finish_reason == "stop"
    assert out.token_ids == full.token_ids[: len(out.token_ids)]
    assert len(out.sources) == len(out.token_ids)
    # streaming never shows any part of the stop string
    streamed = "".join(
        c.text
        for c in engine.stream(
            PROMPTS[1], router="P-PUNC", temperature=0, max_new_tokens=40, stop=stop
        )
    )
    assert streamed == text[:cut]


def test_length_limit(engine: BacoEngine) -> None:
    out = engine.generate(PROMPTS, router="P", max_new_tokens=5, seed=0, n=2)
    for row in out:
        for o in row:
            if o.finish_reason == "length":
                assert o.num_tokens == 5
            assert o.num_tokens <= 5


@pytest.mark.parametrize("side", ["aligned", "base"])
def test_either_models_eos_ends_the_sample(tiny_pair, side: str) -> None:
    engine = BacoEngine.from_pretrained(tiny_pair.base_dir, tiny_pair.aligned_dir)
    model = engine.aligned_model if side == "aligned" else engine.base_model
    eos = engine.aligned_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    head = model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[eos] = 1e4  # this model now always ends the sequence
    model.lm_head = biased
    out = engine.generate(PROMPTS[0], router=side, max_new_tokens=10, seed=0)[0][0]
    assert out.finish_reason == "stop"
    assert out.token_ids == () and out.text == ""
    other = "base" if side == "aligned" else "aligned"
    assert engine.generate(PROMPTS[0], router=other, max_new_tokens=4, seed=0)[0][0].num_tokens > 0


def test_aligned_end_of_turn_token_stops(engine: BacoEngine) -> None:
    im_end = engine.aligned_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in engine.pair.aligned.eos_ids


def test_stream_matches_generate_and_tags_sources(any_engine: BacoEngine) -> None:
    kwargs = {"router": "P-PUNC", "gamma": 0.5, "max_new_tokens": 24, "seed": 11, "n": 2}
    full = any_engine.generate(PROMPTS[0], **kwargs)[0]
    chunks = list(any_engine.stream(PROMPTS[0], **kwargs))
    for j in range(2):
        mine = [c for c in chunks if c.sample_index == j]
        assert "".join(c.text for c in mine) == full[j].text
        assert [t for c in mine for t in c.token_ids] == list(full[j].token_ids)
        assert [s for c in mine for s in c.sources] == list(full[j].sources)
        assert mine[-1].output == full[j]
        assert mine[-1].finish_reason == full[j].finish_reason
        assert all(c.finish_reason is None for c in mine[:-1])
        assert all(c.source in ("base", "aligned") for c in mine[:-1] if c.text)
        # each chunk's source is the source of its last token
        position = 0
        for c in mine:
            position += len(c.token_ids)
            if c.text and c.token_ids:
                assert c.source == full[j].sources[position - 1]


def test_closing_a_stream_early_frees_the_engine(engine: BacoEngine) -> None:
    stream = engine.stream(PROMPTS[0], max_new_tokens=50, seed=0)
    next(stream)
    stream.close()
    done = threading.Event()

    def other_call() -> None:
        engine.generate("hi", max_new_tokens=2)
        done.set()

    worker = threading.Thread(target=other_call)
    worker.start()
    worker.join(timeout=60)
    assert done.is_set()


def test_threads_share_one_engine(engine: BacoEngine) -> None:
    kwargs = {"router": "P", "gamma": 0.5, "max_new_tokens": 10, "seed": 5}
    expected = engine.generate(PROMPTS, **kwargs)
    results: dict[int, object] = {}

    def call(i: int) -> None:
        results[i] = engine.generate(PROMPTS, **kwargs)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(results[i] == expected for i in range(4))


def test_callable_router(engine: BacoEngine) -> None:
    def every_other_step(inputs: RouterInputs) -> torch.Tensor:
        return torch.full((inputs.batch_size,), inputs.step % 2 == 0, dtype=torch.bool)

    out = engine.generate(PROMPTS, router=every_other_step, max_new_tokens=20, seed=2)
    assert any("base" in o.sources for row in out for o in row)

    def bad(inputs: RouterInputs) -> torch.Tensor:
        return torch.ones(inputs.batch_size + 1, dtype=torch.bool)

    with pytest.raises(ValueError, match="router must return"):
        engine.generate("hi", router=bad, max_new_tokens=3)


def test_stream_chunks_carry_one_source_per_token(engine: BacoEngine) -> None:
    chunks = list(engine.stream(PROMPTS[2], router="random", gamma=0.5, max_new_tokens=30, seed=4))
    full = engine.generate(PROMPTS[2], router="random", gamma=0.5, max_new_tokens=30, seed=4)[0][0]
    assert all(len(c.sources) == len(c.token_ids) for c in chunks)
    assert tuple(s for c in chunks for s in c.sources) == full.sources
    assert all(c.prompt_tokens == full.prompt_tokens for c in chunks)


def test_generate_can_be_cancelled_from_another_thread(engine: BacoEngine) -> None:
    from baco_integrations import DecodingCancelled

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DecodingCancelled):
        engine.generate(PROMPTS[0], max_new_tokens=200, cancel=cancel)
    # the call left the batch; the engine goes on serving
    assert engine.scheduler.live_rows == 0
    assert engine.generate("hi", max_new_tokens=2)[0][0].num_tokens <= 2
