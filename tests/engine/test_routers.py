"""Every router's rule, on hand-made distributions and inside the decoding loop."""

from __future__ import annotations

import math

import pytest
import torch

from baco_integrations import ROUTER_NAMES, BacoEngine, RouterConfig, RouterInputs, build_router
from baco_integrations.vocab import VocabMasks

PROMPTS = ["Write a poem about the sea.", "Ideas for a coffee shop"]


def _masks(vocab: int = 4) -> VocabMasks:
    # token 0: punctuation, token 1: function word, tokens 2-3: content words
    punctuation = torch.tensor([True, False, False, False])[:vocab]
    function_word = torch.tensor([False, True, False, False])[:vocab]
    word_start = torch.tensor([False, True, True, False])[:vocab]
    special = torch.zeros(vocab, dtype=torch.bool)
    return VocabMasks(word_start, punctuation, function_word, special, ~(word_start | punctuation))


def _inputs(base: list[list[float]], aligned: list[list[float]]) -> RouterInputs:
    return RouterInputs(
        base_probs=torch.tensor(base),
        aligned_probs=torch.tensor(aligned),
        prev_sources=torch.zeros(len(base), dtype=torch.long),
        step=1,
        masks=_masks(),
        generator=torch.Generator().manual_seed(0),
    )


PEAKED = [0.9, 0.05, 0.03, 0.02]
FLAT = [0.25, 0.25, 0.25, 0.25]
TOP_FUNCTION = [0.1, 0.6, 0.2, 0.1]
TOP_CONTENT = [0.1, 0.1, 0.7, 0.1]


def route(name: str, gamma: float | None, base, aligned, gate: str = "base") -> list[bool]:
    router = build_router(RouterConfig(strategy=name, gamma=gamma, gate=gate))
    return router(_inputs(base, aligned)).tolist()


def test_probability_rule() -> None:
    # base where max P_base < gamma
    assert route("P", 0.5, [PEAKED, FLAT], [PEAKED, PEAKED]) == [False, True]
    assert route("P", 0.0, [PEAKED, FLAT], [FLAT, FLAT]) == [False, False]
    assert route("P", 0.95, [PEAKED, FLAT], [FLAT, FLAT]) == [True, True]
    # gate=aligned reads the aligned distribution instead
    assert route("P", 0.5, [PEAKED, FLAT], [FLAT, PEAKED], gate="aligned") == [True, False]


def test_entropy_rule() -> None:
    flat_entropy = math.log(4)
    assert route("H", flat_entropy - 0.01, [PEAKED, FLAT], [FLAT, FLAT]) == [False, True]
    assert route("H", 0.0, [PEAKED, FLAT], [FLAT, FLAT]) == [True, True]
    assert route("H", 10.0, [PEAKED, FLAT], [FLAT, FLAT]) == [False, False]
    assert route("H", 1.0, [PEAKED, PEAKED], [FLAT, PEAKED], gate="aligned") == [True, False]


def test_content_rules_read_the_aligned_top1() -> None:
    # aligned top-1: punctuation, function word, content word
    aligned = [PEAKED, TOP_FUNCTION, TOP_CONTENT]
    base = [FLAT, FLAT, FLAT]
    assert route("PUNC", None, base, aligned) == [False, True, True]
    assert route("FC", None, base, aligned) == [True, False, True]


def test_locked_rules_apply_content_lock_then_logit_rule() -> None:
    aligned = [PEAKED, TOP_FUNCTION, TOP_CONTENT, TOP_CONTENT]
    base = [FLAT, FLAT, FLAT, PEAKED]
    # P-PUNC: row 0 locked (punctuation), rows 1-2 flat base -> base, row 3 peaked base -> aligned
    assert route("P-PUNC", 0.5, base, aligned) == [False, True, True, False]
    assert route("P-FC", 0.5, base, aligned) == [True, False, True, False]
    assert route("H-PUNC", 1.0, base, aligned) == [False, True, True, False]
    assert route("H-FC", 1.0, base, aligned) == [True, False, True, False]


def test_nudging_gives_the_word_to_aligned_when_base_is_unsure() -> None:
    assert route("nudging", 0.5, [PEAKED, FLAT], [FLAT, FLAT]) == [True, False]


def test_random_router_rate() -> None:
    router = build_router(RouterConfig(strategy="random", gamma=0.3))
    inputs = _inputs([FLAT] * 4000, [FLAT] * 4000)
    assert abs(router(inputs).float().mean().item() - 0.3) < 0.03
    assert not build_router(RouterConfig(strategy="random", gamma=0.0))(inputs).any()
    assert build_router(RouterConfig(strategy="random", gamma=1.0))(inputs).all()


def _boundaries(engine: BacoEngine, token_ids: tuple[int, ...]) -> list[bool]:
    """Which positions of an output sit at a word boundary (the first always does)."""
    continuation = engine.pair.aligned.masks.continuation
    return [i == 0 or not bool(continuation[t]) for i, t in enumerate(token_ids)]


@pytest.mark.parametrize("router", ROUTER_NAMES)
def test_no_word_is_split_between_models(engine: BacoEngine, router: str) -> None:
    outs = engine.generate(PROMPTS, router=router, n=3, max_new_tokens=40, seed=0)
    continuation = engine.pair.aligned.masks.continuation
    checked = 0
    for row in outs:
        for out in row:
            for i in range(1, len(out.token_ids)):
                if continuation[out.token_ids[i]]:
                    checked += 1
                    assert out.sources[i] == out.sources[i - 1], (router, out.token_ids, i)
    assert checked > 0


@pytest.mark.parametrize("router", ["P", "H", "P-PUNC", "H-FC", "nudging", "PUNC", "FC"])
@pytest.mark.parametrize("gate", ["base", "aligned"])
def test_engine_follows_the_router_at_every_boundary(
    engine: BacoEngine, spy, router: str, gate: str
) -> None:
    """Re-derive each decision from the distributions the router saw, independently."""
    gamma = {"H": 2.0, "H-FC": 2.0}.get(router, 0.5)
    recorder = spy(build_router(RouterConfig(strategy=router, gamma=gamma, gate=gate)))
    outs = engine.generate(PROMPTS[0], router=recorder, n=4, max_new_tokens=30, seed=1)
    masks = engine.pair.aligned.masks
    # the router is called only at steps where some row is at a word boundary
    calls = {inputs.step: i for i, inputs in enumerate(recorder.seen)}
    # a finished sample leaves the batch: at each step the router sees the live ones, in order
    steps_run = [o.num_tokens + (o.finish_reason == "stop") for o in outs[0]]
    saw_base = saw_aligned = False
    for sample, out in enumerate(outs[0]):
        for step, is_boundary in enumerate(_boundaries(engine, out.token_ids)):
            if not is_boundary and step not in calls:
                continue
            inputs = recorder.seen[calls[step]]
            row = [j for j, ran in enumerate(steps_run) if ran > step].index(sample)
            gate_probs = inputs.probs(
                "aligned" if gate == "aligned" and router != "nudging" else "base"
            )
            p_max = gate_probs[row].max().item()
            entropy = -(gate_probs[row] * gate_probs[row].clamp_min(1e-30).log()).sum().item()
            aligned_top1 = int(inputs.aligned_probs[row].argmax())
            logit_rule = {"P": p_max < gamma, "H": entropy > gamma, "nudging": p_max >= gamma}
            lock = {"PUNC": masks.punctuation, "FC": masks.function_word}
            expected = True
            for part in router.split("-"):
                if part in logit_rule:
                    expected &= logit_rule[part]
                else:
                    expected &= not bool(lock[part][aligned_top1])
            assert bool(recorder.decisions[calls[step]][row]) == expected
            if is_boundary:
                assert out.sources[step] == ("base" if expected else "aligned")
                saw_base |= expected
                saw_aligned |= not expected
    assert saw_base or saw_aligned


def test_p_router_extremes(engine: BacoEngine) -> None:
    never = engine.generate(PROMPTS, router="P", gamma=0.0, n=2, max_new_tokens=20, seed=0)
    always = engine.generate(PROMPTS, router="P", gamma=1.0, n=2, max_new_tokens=20, seed=0)
    assert all(o.base_fraction == 0.0 for row in never for o in row)
    assert all(o.base_fraction == 1.0 for row in always for o in row if o.num_tokens)


def test_h_router_extremes(engine: BacoEngine) -> None:
    always = engine.generate(PROMPTS, router="H", gamma=0.0, n=2, max_new_tokens=20, seed=0)
    never = engine.generate(PROMPTS, router="H", gamma=100.0, n=2, max_new_tokens=20, seed=0)
    assert all(o.base_fraction == 1.0 for row in always for o in row if o.num_tokens)
    assert all(o.base_fraction == 0.0 for row in never for o in row)


def test_higher_gamma_routes_more_to_base(engine: BacoEngine) -> None:
    def fraction(gamma: float) -> float:
        outs = engine.generate(PROMPTS, router="P", gamma=gamma, n=4, max_new_tokens=30, seed=0)
        return sum(o.base_fraction for row in outs for o in row) / 8

    low, mid, high = fraction(0.1), fraction(0.4), fraction(0.9)
    assert low <= mid <= high
    assert low < high


# ----------------------------------------------------------------- malformed routers (issue 13)


def _base_when_unsure(inputs: RouterInputs) -> torch.Tensor:
    return inputs.probs("base").amax(dim=-1) < 0.5


class _Declared:
    """A router whose ``needs`` is set per test."""

    def __init__(self, needs: object, answer=_base_when_unsure) -> None:  # type: ignore[no-untyped-def]
        self.needs = needs
        self.answer = answer
        self.seen: list[RouterInputs] = []

    def __call__(self, inputs: RouterInputs) -> torch.Tensor:
        self.seen.append(inputs)
        return self.answer(inputs)


@pytest.mark.parametrize("engine_name", ["engine", "cross_engine"])
def test_needs_as_one_source_name_means_that_source(
    request: pytest.FixtureRequest, engine_name: str
) -> None:
    from baco_integrations.routers import router_needs

    engine = request.getfixturevalue(engine_name)
    as_string = _Declared("base")
    as_set = _Declared(frozenset({"base"}))
    a = engine.generate(PROMPTS, router=as_string, n=2, max_new_tokens=12, seed=4)
    b = engine.generate(PROMPTS, router=as_set, n=2, max_new_tokens=12, seed=4)
    assert [[o.token_ids for o in row] for row in a] == [[o.token_ids for o in row] for row in b]
    assert as_string.seen and all(i.base_probs is not None for i in as_string.seen)
    assert router_needs(as_string) == frozenset({"base"})  # not frozenset("base")


@pytest.mark.parametrize(
    ("needs", "match"),
    [
        ("a", r"router.needs names unknown source\(s\) \[\"'a'\"\]; allowed values: 'base'"),
        ({"base", "judge"}, "unknown source.*'judge'"),
        (5, "router.needs must be a collection of source names"),
        (None, "router.needs must be a collection"),
        ([["base"]], "router.needs must be a collection"),
    ],
)
@pytest.mark.parametrize("engine_name", ["engine", "cross_engine"])
def test_malformed_needs_is_refused_before_decoding(
    request: pytest.FixtureRequest, engine_name: str, needs: object, match: str
) -> None:
    engine = request.getfixturevalue(engine_name)
    router = _Declared(needs)
    with pytest.raises(ValueError, match=match):
        engine.generate("hi", router=router, max_new_tokens=4)
    with pytest.raises(ValueError, match=match):
        engine.stream("hi", router=router, max_new_tokens=4)  # at the call, not at next()
    assert router.seen == []


def _full(value: object, dtype: torch.dtype):  # type: ignore[no-untyped-def]
    return lambda inputs: torch.full((inputs.batch_size,), value, dtype=dtype)


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (_full(float("nan"), torch.float32), "boolean tensor .*got dtype torch.float32"),
        (_full(0.7, torch.float64), "got dtype torch.float64"),
        (_full(1, torch.long), "got dtype torch.int64"),
        (lambda inputs: [True] * inputs.batch_size, "boolean tensor of shape.*got list"),
        (lambda inputs: torch.ones(inputs.batch_size, 1, dtype=torch.bool), "got shape"),
        (lambda inputs: torch.tensor(True), r"got shape \(\)"),
    ],
)
@pytest.mark.parametrize("engine_name", ["engine", "cross_engine"])
def test_a_router_answer_that_is_not_a_bool_tensor_is_refused(
    request: pytest.FixtureRequest, engine_name: str, answer, match: str
) -> None:
    engine = request.getfixturevalue(engine_name)
    with pytest.raises(ValueError, match=f"router must return a .*{match}"):
        engine.generate("hi", router=_Declared(frozenset(), answer), max_new_tokens=4)
    assert engine.generate("hi", max_new_tokens=2)[0][0].finish_reason in ("stop", "length")


def test_reading_an_undeclared_distribution_is_a_value_error_naming_router(
    engine: BacoEngine,
) -> None:
    with pytest.raises(ValueError, match="router read the base distribution without declaring"):
        engine.generate("hi", router=_Declared(frozenset({"aligned"})), max_new_tokens=4)
