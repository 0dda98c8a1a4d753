"""Regressions of constrained decoding (issue 27).

* A pair whose tokenizer llguidance cannot read (a Metaspace decoder without byte fallback, as
  T5's) refuses a constraint when the call is prepared, with a ValueError that names the
  setting, the model and what to do, not llguidance's own message from inside a step.
* An integer or number that its schema leaves unbounded is bounded in the grammar (15 digits;
  at most 9 decimals), so that a model cannot write digits until the token budget ends; a
  schema's own bounds win.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llguidance.hf
import pytest
from pydantic import BaseModel, Field
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from baco_integrations import BacoEngine
from baco_integrations.constraints import NUMBER_LIMIT, Constraint
from baco_integrations.decoding.grammar import ll_tokenizer
from baco_integrations.langchain import ChatBaco
from baco_integrations.testing import (
    CHATML_TEMPLATE,
    CORPUS,
    EOS_TOKEN,
    IM_END_TOKEN,
    IM_START_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    build_tiny_model,
    make_tiny_pair,
)

PROMPT = [{"role": "user", "content": "A dish for tonight."}]


class Dish(BaseModel):
    name: str = Field(max_length=12)
    minutes: int = Field(ge=1, le=300)


# ------------------------------------------------------------------ unreadable tokenizers


def metaspace_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    """A SentencePiece-like BPE tokenizer (Metaspace pre-tokenizer and decoder, no byte
    fallback, as T5's): transformers reads it, llguidance does not."""
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", *SPECIAL_TOKENS], show_progress=False
    )
    backend.train_from_iterator([*CORPUS, '{"": [], 0123456789.-}'] * 5, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token="<unk>",
        additional_special_tokens=[IM_START_TOKEN, IM_END_TOKEN],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(directory)
    return tokenizer


@pytest.fixture(scope="module", params=["cross", "shared"])
def metaspace_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BacoEngine, str, Path]]:
    """An engine whose base model (cross: the aligned one reads a byte-level tokenizer) or
    both models (shared) read a Metaspace tokenizer; with the side and the directory the
    refusal must name."""
    root = tmp_path_factory.mktemp(f"metaspace_{request.param}")
    pair = make_tiny_pair(root, aligned_vocab_size=640)
    tokenizer = metaspace_tokenizer(root / "metaspace")
    build_tiny_model(pair.base_dir, tokenizer, seed=0)  # replaces the base model
    side, directory = "base", pair.base_dir
    if request.param == "shared":
        im_end = tokenizer.convert_tokens_to_ids(IM_END_TOKEN)
        eos = [tokenizer.eos_token_id, im_end]
        build_tiny_model(pair.aligned_dir, tokenizer, seed=1, eos_token_ids=eos)
        side, directory = "aligned", pair.aligned_dir
    engine = BacoEngine.from_pretrained(pair.base_dir, pair.aligned_dir)
    assert engine.pair.shares_tokenizer == (request.param == "shared")
    yield engine, side, directory
    engine.shutdown()


def test_an_unreadable_tokenizer_refuses_a_constraint_when_the_call_is_prepared(
    metaspace_engine: tuple[BacoEngine, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, side, directory = metaspace_engine
    readings: list[Any] = []
    from_tokenizer = llguidance.hf.from_tokenizer

    def counted(tokenizer: Any, **kwargs: Any) -> Any:
        readings.append(tokenizer)
        return from_tokenizer(tokenizer, **kwargs)

    monkeypatch.setattr(llguidance.hf, "from_tokenizer", counted)
    steps = engine.scheduler.steps
    expected = (
        rf"the constraint setting \(constraint=, structured output\) is not supported on this "
        rf"pair: .*cannot read .*the {side} model's tokenizer \({directory};.*"
        r"can't determine decoder type.*ByteLevel.*ByteFallback.*Use a pair whose tokenizers "
        r"llguidance reads, or call without a constraint"
    )
    with pytest.raises(ValueError, match=expected):
        engine.generate([PROMPT], constraint=Dish, max_new_tokens=16)
    read_once = len(readings)
    assert 1 <= read_once <= 2  # each tokenizer once (the aligned one may be read fine)
    # the stream refuses when it is made, before the first chunk is asked for
    with pytest.raises(ValueError, match=expected):
        engine.stream(PROMPT, constraint={"json_object": True}, max_new_tokens=16)
    # LangChain's structured output: the same error, from the engine's preparation
    structured = ChatBaco(engine=engine, max_new_tokens=16).with_structured_output(Dish)
    with pytest.raises(ValueError, match=expected):
        structured.invoke("A dish.")
    assert engine.scheduler.steps == steps  # nothing was decoded
    assert len(readings) == read_once  # the failure is cached like a success
    # the pair still decodes without a constraint
    (free,) = engine.generate([PROMPT], max_new_tokens=8, seed=0)[0]
    assert free.finish_reason in {"stop", "length"}
    assert engine.scheduler.steps > steps


# ------------------------------------------------------------------ unbounded numbers

MINUTES = {"type": "object", "properties": {"minutes": {"type": "integer"}}}


def _accepts(engine: BacoEngine, schema: dict[str, Any], text: str) -> bool:
    """Whether the grammar of ``schema`` accepts the whole of ``text`` (llguidance's matcher
    over the aligned model's tokens)."""
    tokenizer = ll_tokenizer(engine.pair.aligned)
    matcher = llguidance.LLMatcher(tokenizer, Constraint(json_schema=schema).grammar())
    tokens = tokenizer.tokenize_str(text)
    if matcher.validate_tokens(tokens) < len(tokens):
        return False
    assert matcher.consume_tokens(tokens), matcher.get_error()
    return bool(matcher.is_accepting())


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ('{"minutes": 123456}', True),
        ('{"minutes": 12345678901234567890}', False),  # 20 digits
        ('{"minutes": 999999999999999}', True),  # 15 digits: NUMBER_LIMIT
        ('{"minutes": -999999999999999}', True),
        ('{"minutes": 1000000000000000}', False),  # 16 digits
        ('{"minutes": -1000000000000000}', False),
        ("{}", True),
    ],
)
def test_an_unbounded_integer_gets_fifteen_digits(
    engine: BacoEngine, text: str, accepted: bool
) -> None:
    assert _accepts(engine, MINUTES, text) is accepted


def test_an_unbounded_number_gets_fifteen_digits_and_nine_decimals(engine: BacoEngine) -> None:
    schema = {"type": "object", "properties": {"ratio": {"type": "number"}}}
    for value, accepted in [
        ("0.5", True),
        ("-3.141592653", True),  # 9 decimals
        ("3.1415926535", False),  # 10
        ("3.0000000000", False),  # trailing zeros count too
        ("999999999999999.999999999", False),  # above NUMBER_LIMIT
        ("123456789012345.5", True),
        ("12345678901234567890", False),
    ]:
        assert _accepts(engine, schema, f'{{"ratio": {value}}}') is accepted, value


def test_a_schemas_own_bounds_win(engine: BacoEngine) -> None:
    def accepts(field: dict[str, Any], value: str) -> bool:
        schema = {"type": "object", "properties": {"x": field}, "required": ["x"]}
        return _accepts(engine, schema, f'{{"x": {value}}}')

    wide = {"type": "integer", "minimum": 0, "maximum": 10**18}
    assert accepts(wide, "999999999999999999") and not accepts(wide, "-1")
    low_only = {"type": "integer", "minimum": 1}  # only the open side is filled
    assert accepts(low_only, "999999999999999") and not accepts(low_only, "0")
    assert not accepts(low_only, "1000000000000000")
    high_only = {"type": "integer", "exclusiveMaximum": 0}
    assert accepts(high_only, "-999999999999999") and not accepts(high_only, "0")
    assert not accepts(high_only, "-1000000000000000")
    huge = {"type": "integer", "minimum": 10**16}  # a bound past the limit: left as it is
    assert accepts(huge, "12345678901234567890")
    quarter = {"type": "number", "multipleOf": 0.25}  # its own step, not 9 decimals
    assert accepts(quarter, "2.75") and not accepts(quarter, "2.7")
    narrow = {"type": "number", "minimum": 0.123456789012, "maximum": 0.123456789013}
    assert accepts(narrow, "0.1234567890125")  # narrower than 1e-9: keeps its decimals
    nullable = {"anyOf": [{"type": "integer"}, {"type": "null"}]}  # pydantic's int | None
    assert accepts(nullable, "null") and not accepts(nullable, "10000000000000000")
    # a property called "default" is a schema; a default value is data, left as it is
    named = {"type": "object", "properties": {"default": {"type": "integer"}}, "default": {}}
    assert not accepts(named, '{"default": 10000000000000000}')
    # the constraint keeps the schema it was given; only its grammar bounds it
    assert Constraint(json_schema=MINUTES).json_schema == MINUTES


@pytest.mark.parametrize("router", ["aligned", "P-PUNC"])
def test_an_unbounded_integer_ends_well_within_the_budget(engine: BacoEngine, router: str) -> None:
    """A random model writes long numbers (20 digits before the bound); each sample now ends
    by itself, its integer within NUMBER_LIMIT, far from the token budget."""
    schema = {**MINUTES, "required": ["minutes"]}
    for seed in range(3):
        outs = engine.generate(
            [PROMPT],
            constraint={"json_schema": schema},
            n=8,
            seed=seed,
            router=router,
            gamma=0.5,
            max_new_tokens=64,
        )[0]
        for out in outs:
            assert out.finish_reason == "stop", out.text
            assert abs(json.loads(out.text)["minutes"]) <= NUMBER_LIMIT, out.text
            assert len(out.token_ids) <= 32, out.text  # '{"minutes": ', 15 digits, '}'


def test_an_unreadable_tokenizer_refuses_the_guard_across_families(
    metaspace_engine: tuple[BacoEngine, str, Path],
) -> None:
    """Across families the guard compares token bytes, read by llguidance: a tokenizer it
    cannot read refuses the guard, naming it (one tokenizer needs no bytes: the guard runs)."""
    engine, side, directory = metaspace_engine
    if engine.pair.shares_tokenizer:
        outs = engine.generate([PROMPT], guard=0.3, max_new_tokens=8, seed=0)
        assert outs[0][0].num_tokens > 0
        return
    with pytest.raises(ValueError, match=rf"guard=0.3: .*the {side} model's tokenizer .*guard=0"):
        engine.generate([PROMPT], guard=0.3, max_new_tokens=8)
