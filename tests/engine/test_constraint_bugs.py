"""Regressions of constrained decoding (issue 27).

* A pair whose tokenizer llguidance cannot read (a Metaspace decoder without byte fallback, as
  T5's) refuses a constraint when the call is prepared, with a ValueError that names the
  setting, the model and what to do, not llguidance's own message from inside a step.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llguidance.hf
import pytest
from pydantic import BaseModel, Field
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from baco_integrations import BacoEngine
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
