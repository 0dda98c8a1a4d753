"""Quality scorers on tiny local Llama models with a freshly trained word-level tokenizer."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

from baco_integrations.evaluation import QUALITY_METRICS, LogProbScorer, RewardModelScorer

CORPUS = [
    "hello world the cat sat on the mat",
    "a dog ran in the park and the bird sang",
    "user assistant : tell me a story about a fox",
    "why is the sky blue ? because of light",
]
SPECIALS = ["[PAD]", "<s>", "</s>", "[UNK]"]
# Minimal chat template: every turn is "<s>role : content </s>".
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }} : {{ m['content'] }} </s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant :{% endif %}"
)

PROMPTS = ["hello world", "tell me a story", "why is the sky blue ?", "a dog", "hello"]
RESPONSES = [
    "the cat sat",
    "a fox ran in the park and the bird sang",
    "because of light",
    "ran",
    "the dog sat on the mat and the cat sat on the dog",
]


def _tokenizer(chat_template: str | None = None) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=SPECIALS))
    # BOS on every encoding that asks for special tokens, like Llama tokenizers.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="[PAD]",
        unk_token="[UNK]",
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


def _config(tok: PreTrainedTokenizerFast, **kwargs: object) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        # Large init so that logits are far from uniform and positions matter.
        initializer_range=0.5,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **kwargs,
    )


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return _tokenizer()


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory, tok: PreTrainedTokenizerFast) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lm")
    LlamaForCausalLM(_config(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory: pytest.TempPathFactory, tok: PreTrainedTokenizerFast) -> Path:
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("rm")
    LlamaForSequenceClassification(_config(tok, num_labels=1)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _ids(tok: PreTrainedTokenizerFast, words: str) -> list[int]:
    """Ids looked up word by word in the vocabulary (independent of the scorers)."""
    return [tok.convert_tokens_to_ids(w) for w in words.split()]


# ---------------------------------------------------------------------- log-prob judge


def test_logprob_matches_hand_computation(lm_dir: Path, tok: PreTrainedTokenizerFast) -> None:
    scorer = LogProbScorer(lm_dir, batch_size=4)
    # No chat template: "{prompt}\n\n" with BOS, then the response without special tokens.
    prompt_ids = _ids(tok, "<s> hello world")
    response_ids = _ids(tok, "the cat sat")
    assert scorer.prompt_ids("hello world") == prompt_ids
    assert scorer.response_ids("the cat sat") == response_ids
    full = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logp = torch.log_softmax(scorer.model(full).logits[0].float(), dim=-1)
    # Position t's logits predict token t + 1: response tokens are at 3, 4, 5.
    expected = (logp[2, full[0, 3]] + logp[3, full[0, 4]] + logp[4, full[0, 5]]) / 3
    assert scorer.score(["hello world"], ["the cat sat"])[0] == pytest.approx(
        float(expected), abs=1e-6
    )


def test_logprob_batched_equals_one_at_a_time(lm_dir: Path) -> None:
    batched = LogProbScorer(lm_dir, batch_size=3)
    single = LogProbScorer(batched.model, batched.tokenizer, batch_size=1)
    many = batched.score(PROMPTS, RESPONSES)
    one_by_one = np.array(
        [single.score([p], [r])[0] for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    )
    np.testing.assert_allclose(many, one_by_one, atol=1e-5, rtol=0)
    assert many.dtype == np.float64 and many.shape == (5,)
    assert np.all(many < 0)
    # Distinct pairs give distinct scores (the order of the outputs is the input order).
    assert len(np.unique(np.round(many, 6))) == 5


def test_logprob_empty_response_is_nan_with_warning(lm_dir: Path) -> None:
    scorer = LogProbScorer(lm_dir, batch_size=2)
    with pytest.warns(RuntimeWarning, match="empty"):
        out = scorer.score(["hello", "hello world"], ["", "the cat sat"])
    assert np.isnan(out[0])
    assert out[1] == pytest.approx(scorer.score(["hello world"], ["the cat sat"])[0], abs=1e-6)


def test_logprob_chat_template_prompt(lm_dir: Path) -> None:
    chat_tok = _tokenizer(CHAT_TEMPLATE)
    scorer = LogProbScorer(lm_dir, tokenizer=chat_tok)
    # rendered: "<s>user : hello world </s><s>assistant :", no extra BOS
    assert scorer.prompt_ids("hello world") == _ids(
        chat_tok, "<s> user : hello world </s> <s> assistant :"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(scorer.score(["hello world"], ["the cat sat"])).all()


def test_logprob_checks_inputs(lm_dir: Path) -> None:
    scorer = LogProbScorer(lm_dir)
    with pytest.raises(ValueError):
        scorer.score(["a", "b"], ["c"])
    with pytest.raises(TypeError):
        scorer.score("a", "b")
    with pytest.raises(ValueError):
        LogProbScorer(scorer.model, scorer.tokenizer, batch_size=0)


# ---------------------------------------------------------------------- reward model


def test_reward_matches_plain_forward(rm_dir: Path, tok: PreTrainedTokenizerFast) -> None:
    scorer = RewardModelScorer(rm_dir, batch_size=4)
    assert scorer.render("hello world", "the cat sat") == "hello world\n\nthe cat sat"
    ids = torch.tensor([_ids(tok, "<s> hello world the cat sat")])
    with torch.no_grad():
        expected = float(scorer.model(ids).logits[0, 0])
    assert scorer.score(["hello world"], ["the cat sat"])[0] == pytest.approx(expected, abs=1e-6)


def test_reward_batched_equals_one_at_a_time(rm_dir: Path) -> None:
    batched = RewardModelScorer(rm_dir, batch_size=4)
    single = RewardModelScorer(batched.model, batched.tokenizer, batch_size=1)
    many = batched.score(PROMPTS, RESPONSES)
    one_by_one = np.array(
        [single.score([p], [r])[0] for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    )
    np.testing.assert_allclose(many, one_by_one, atol=1e-5, rtol=0)
    assert len(np.unique(np.round(many, 6))) == 5


def test_reward_chat_template(rm_dir: Path) -> None:
    chat_tok = _tokenizer(CHAT_TEMPLATE)
    scorer = RewardModelScorer(rm_dir, tokenizer=chat_tok)
    assert scorer.render("hi", "yo") == "<s>user : hi </s><s>assistant : yo </s>"
    ids = torch.tensor([_ids(chat_tok, "<s> user : hello </s> <s> assistant : the cat </s>")])
    with torch.no_grad():
        expected = float(scorer.model(ids).logits[0, 0])
    assert scorer.score(["hello"], ["the cat"])[0] == pytest.approx(expected, abs=1e-6)


def test_reward_multi_label_needs_label_index(tmp_path: Path, tok: PreTrainedTokenizerFast) -> None:
    torch.manual_seed(2)
    model = LlamaForSequenceClassification(_config(tok, num_labels=2))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="label_index"):
        RewardModelScorer(tmp_path)
    scorer = RewardModelScorer(tmp_path, label_index=1)
    ids = torch.tensor([_ids(tok, "<s> hello the cat")])
    with torch.no_grad():
        expected = float(scorer.model(ids).logits[0, 1])
    assert scorer.score(["hello"], ["the cat"])[0] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError):
        RewardModelScorer(scorer.model, tok, label_index=2)


def test_quality_registry() -> None:
    assert set(QUALITY_METRICS) == {"reward", "logprob", "recorded_logprob"}
    assert QUALITY_METRICS["reward"].fn is RewardModelScorer
    assert QUALITY_METRICS["logprob"].fn is LogProbScorer
    assert all(spec.group == "quality" for spec in QUALITY_METRICS.values())
    # the recorded log-prob is read from the stored samples, not scored from pairs
    assert [n for n, s in QUALITY_METRICS.items() if s.input == "records"] == ["recorded_logprob"]
