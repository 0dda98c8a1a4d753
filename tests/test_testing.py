"""The tiny local model pairs of ``baco_integrations.testing``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from baco_integrations.testing import (
    CHATML_TEMPLATE,
    CORPUS,
    EOS_TOKEN,
    IM_END_TOKEN,
    IM_START_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    TinyPair,
    build_tiny_model,
    make_tiny_pair,
    train_tokenizer,
)

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Give me three ideas for a party."},
]


@pytest.fixture(scope="session")
def tokenizer_512(tmp_path_factory: pytest.TempPathFactory):
    return train_tokenizer(tmp_path_factory.mktemp("tok512"), vocab_size=512)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


# --- tokenizer -------------------------------------------------------------------------------


def test_tokenizer_has_requested_size_and_special_tokens(tokenizer_512) -> None:
    tok = tokenizer_512
    assert len(tok) == 512
    assert tok.eos_token == EOS_TOKEN
    assert tok.pad_token == PAD_TOKEN
    assert tok.bos_token is None
    # the specials come last, in a fixed order, as in Qwen
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [508, 509, 510, 511]
    assert tok.eos_token_id == 508 and tok.pad_token_id == 511
    assert {EOS_TOKEN, PAD_TOKEN, IM_START_TOKEN, IM_END_TOKEN} <= set(tok.all_special_tokens)
    # no BOS is prepended, and specials are single tokens
    assert tok("hello")["input_ids"][0] != tok.eos_token_id
    assert tok.tokenize(f"{IM_START_TOKEN}user")[0] == IM_START_TOKEN


def test_byte_level_markers(tokenizer_512) -> None:
    tok = tokenizer_512
    tokens = tok.tokenize(" the")
    assert tokens == ["Ġthe"]
    assert tok.tokenize("a\nb") == ["a", "Ċ", "b"]
    # the common function words are single space-marked tokens, even at 512 tokens
    words = " the of and to a in is"
    assert tok.tokenize(words) == ["Ġ" + w for w in words.split()]
    assert tok.convert_tokens_to_string(["Ġthe", "Ċ"]) == " the\n"


def test_round_trip_any_text(tokenizer_512) -> None:
    tok = tokenizer_512
    for text in ["Hello, world!\n", "  two spaces", "naïve café ☕ 12345", "tabs\tand\r\nlines"]:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids) == text
        assert tok.unk_token_id is None or tok.unk_token_id not in ids


def test_vocab_size_changes_vocabulary(tmp_path: Path, tokenizer_512) -> None:
    small = train_tokenizer(tmp_path / "small", vocab_size=300)
    large = train_tokenizer(tmp_path / "large", vocab_size=1000)
    assert len(small) == 300 and len(large) == 1000
    assert small.get_vocab() != tokenizer_512.get_vocab() != large.get_vocab()
    # a larger vocabulary spells the corpus in fewer tokens
    text = CORPUS[0]
    assert len(large(text)["input_ids"]) < len(small(text)["input_ids"])


def test_training_is_deterministic(tmp_path: Path, tokenizer_512) -> None:
    again = train_tokenizer(tmp_path, vocab_size=512)
    assert again.get_vocab() == tokenizer_512.get_vocab()


def test_large_vocabularies_do_not_crash(tmp_path: Path) -> None:
    tok = train_tokenizer(tmp_path / "8k", vocab_size=8000)
    assert len(tok) == 8000
    capped = train_tokenizer(tmp_path / "huge", vocab_size=50_000)
    assert 8000 < len(capped) < 50_000  # BPE runs out of merges on the built-in corpus
    assert capped.tokenize(" the")[0] == "Ġthe"


def test_too_small_vocab_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(tmp_path, vocab_size=100)
    with pytest.raises(ValueError, match="empty"):
        train_tokenizer(tmp_path, seed_corpus=[])


def test_custom_corpus_and_chat_template(tmp_path: Path) -> None:
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    tok = train_tokenizer(
        tmp_path, vocab_size=300, seed_corpus=["zebra zebra zebra"], chat_template=template
    )
    assert "Ġzebra" in tok.get_vocab()
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert rendered == "user: hi\n"


def test_chat_template_renders_chatml(tokenizer_512) -> None:
    tok = tokenizer_512
    assert tok.chat_template == CHATML_TEMPLATE
    text = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nGive me three ideas for a party.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    without_system = tok.apply_chat_template(MESSAGES[1:], tokenize=False)
    assert without_system == "<|im_start|>user\nGive me three ideas for a party.<|im_end|>\n"
    ids = tok.apply_chat_template(
        MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    assert tok.decode(ids) == text
    assert ids.count(tok.convert_tokens_to_ids(IM_START_TOKEN)) == 3


# --- models ----------------------------------------------------------------------------------


def test_pair_loads_back(tiny_pair: TinyPair) -> None:
    for directory in (tiny_pair.base_dir, tiny_pair.aligned_dir):
        assert directory.is_dir()
        tok = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory)
        assert model.config.model_type == "llama"
        assert model.dtype == torch.float32
        assert model.config.vocab_size == len(tok) == 512
        assert model.config.tie_word_embeddings is False
        assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
        assert model.config.bos_token_id is None
        assert model.config.pad_token_id == tok.pad_token_id
        assert tok.chat_template  # both sides carry one, like real base checkpoints


def test_generation_configs(tiny_pair: TinyPair) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_pair.aligned_dir)
    im_end = tok.convert_tokens_to_ids(IM_END_TOKEN)
    base = GenerationConfig.from_pretrained(tiny_pair.base_dir)
    aligned = GenerationConfig.from_pretrained(tiny_pair.aligned_dir)
    assert base.eos_token_id in (tok.eos_token_id, [tok.eos_token_id])
    assert aligned.eos_token_id == [tok.eos_token_id, im_end]
    assert base.pad_token_id == aligned.pad_token_id == tok.pad_token_id


def test_default_pair_shares_vocabulary(tiny_pair: TinyPair) -> None:
    base = AutoTokenizer.from_pretrained(tiny_pair.base_dir)
    aligned = AutoTokenizer.from_pretrained(tiny_pair.aligned_dir)
    assert base.get_vocab() == aligned.get_vocab()
    assert base.chat_template == aligned.chat_template


def test_cross_pair_has_different_vocabularies(tiny_cross_pair: TinyPair) -> None:
    base = AutoTokenizer.from_pretrained(tiny_cross_pair.base_dir)
    aligned = AutoTokenizer.from_pretrained(tiny_cross_pair.aligned_dir)
    assert len(base) == 512 and len(aligned) == 640
    assert base.get_vocab() != aligned.get_vocab()
    assert base.eos_token_id != aligned.eos_token_id  # specials sit at the end of each vocab
    aligned_model = AutoModelForCausalLM.from_pretrained(tiny_cross_pair.aligned_dir)
    assert aligned_model.config.vocab_size == 640
    assert aligned_model.generation_config.eos_token_id == [
        aligned.eos_token_id,
        aligned.convert_tokens_to_ids(IM_END_TOKEN),
    ]
    for tok in (base, aligned):
        assert tok.tokenize(" the")[0].startswith("Ġ")
        assert tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)


def test_greedy_generate_runs(tiny_pair: TinyPair) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_pair.aligned_dir)
    for directory in (tiny_pair.base_dir, tiny_pair.aligned_dir):
        model = AutoModelForCausalLM.from_pretrained(directory)
        inputs = tok(["Ideas for a party:", "The"], return_tensors="pt", padding=True)
        out = model.generate(**inputs, do_sample=False, max_new_tokens=8)
        assert out.shape[0] == 2
        assert inputs["input_ids"].shape[1] < out.shape[1] <= inputs["input_ids"].shape[1] + 8
        again = model.generate(**inputs, do_sample=False, max_new_tokens=8)
        assert torch.equal(out, again)


def test_chat_prompt_generates(tiny_pair: TinyPair) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_pair.aligned_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_pair.aligned_dir)
    inputs = tok.apply_chat_template(
        MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**inputs, do_sample=False, max_new_tokens=8)
    assert 0 < out.shape[1] - inputs["input_ids"].shape[1] <= 8


def test_pair_sides_are_different_models(tiny_pair: TinyPair) -> None:
    base = _state(AutoModelForCausalLM.from_pretrained(tiny_pair.base_dir))
    aligned = _state(AutoModelForCausalLM.from_pretrained(tiny_pair.aligned_dir))
    assert base.keys() == aligned.keys()
    assert not torch.equal(base["lm_head.weight"], aligned["lm_head.weight"])
    assert not torch.equal(base["model.embed_tokens.weight"], aligned["model.embed_tokens.weight"])


def test_seed_controls_weights(tmp_path: Path, tokenizer_512) -> None:
    first = _state(build_tiny_model(tmp_path / "a", tokenizer_512, seed=3))
    same = _state(build_tiny_model(tmp_path / "b", tokenizer_512, seed=3))
    other = _state(build_tiny_model(tmp_path / "c", tokenizer_512, seed=4))
    assert all(torch.equal(first[name], same[name]) for name in first)
    differing = [name for name in first if not torch.equal(first[name], other[name])]
    # everything drawn at random differs; only the norms (initialised to one) agree
    assert all("norm" not in name for name in differing)
    assert "lm_head.weight" in differing and "model.embed_tokens.weight" in differing


def test_loaded_weights_match_built_model(tmp_path: Path, tokenizer_512) -> None:
    model = build_tiny_model(tmp_path, tokenizer_512, seed=0)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert not model.training
    state, again = _state(model), _state(reloaded)
    assert all(torch.equal(state[name], again[name]) for name in state)


def test_build_options(tmp_path: Path, tokenizer_512) -> None:
    model = build_tiny_model(
        tmp_path,
        tokenizer_512,
        arch="qwen2",
        hidden_size=32,
        num_layers=3,
        num_heads=4,
        num_kv_heads=1,
        intermediate_size=48,
        max_position_embeddings=128,
        eos_token_ids=[
            tokenizer_512.eos_token_id,
            tokenizer_512.convert_tokens_to_ids("<|im_end|>"),
        ],
    )
    config = model.config
    assert config.model_type == "qwen2"
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (32, 3, 48)
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, 1)
    assert config.max_position_embeddings == 128
    assert model.generation_config.eos_token_id == [508, 510]
    with pytest.raises(ValueError, match="arch"):
        build_tiny_model(tmp_path / "x", tokenizer_512, arch="gpt2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_heads"):
        build_tiny_model(tmp_path / "y", tokenizer_512, hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        build_tiny_model(tmp_path / "z", tokenizer_512, eos_token_ids=[10_000])


def test_qwen2_pair(tmp_path: Path) -> None:
    pair = make_tiny_pair(tmp_path, arch="qwen2", hidden_size=32, num_layers=1, seed=5)
    model = AutoModelForCausalLM.from_pretrained(pair.aligned_dir)
    assert model.config.model_type == "qwen2"
    tok = AutoTokenizer.from_pretrained(pair.aligned_dir)
    out = model.generate(**tok("Hello", return_tensors="pt"), do_sample=False, max_new_tokens=8)
    assert out.shape[1] > 1


def test_next_token_distributions_are_not_flat(tiny_pair: TinyPair) -> None:
    """Top-1 probabilities vary widely across steps: some confident, some not."""
    tok = AutoTokenizer.from_pretrained(tiny_pair.base_dir)
    for directory in (tiny_pair.base_dir, tiny_pair.aligned_dir):
        model = AutoModelForCausalLM.from_pretrained(directory)
        top1 = []
        with torch.no_grad():
            for text in CORPUS[:40]:
                ids = tok(text, return_tensors="pt")["input_ids"]
                top1.append(model(ids).logits.softmax(-1).amax(-1)[0])
        probs = torch.cat(top1)
        assert probs.numel() > 300
        assert (probs > 0.5).float().mean() > 0.1
        assert (probs < 0.15).float().mean() > 0.02
        assert 0.15 < probs.median() < 0.6
