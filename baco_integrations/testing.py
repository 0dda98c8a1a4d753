"""Tiny local base/aligned model pairs for tests and benchmarks, built without any download.

Everything here runs offline in seconds on a CPU:

* :func:`train_tokenizer` trains a GPT-2/Qwen-style byte-level BPE tokenizer (``Ġ`` marks a
  leading space, ``Ċ`` a newline) on a built-in English corpus, adds the ChatML special
  tokens and a Qwen-style chat template, saves it and loads it back with ``AutoTokenizer``.
* :func:`build_tiny_model` creates a randomly initialised Llama or Qwen2 causal LM sized for
  a tokenizer, saves it and loads it back with ``AutoModelForCausalLM``.
* :func:`make_tiny_pair` lays out a base and an aligned checkpoint directory side by side,
  either sharing one tokenizer or (``aligned_vocab_size``) with two different vocabularies.

Randomly initialised tiny models (``initializer_range=0.02``) are close to uniform over the
vocabulary, which would make every confidence-based router look the same.
:func:`build_tiny_model` therefore initialises with a large, width-scaled
``initializer_range`` (:data:`DEFAULT_INIT_SCALE` ``/ sqrt(hidden_size)``: 0.5 at width 64)
and redraws the output head so that the logits have a fixed spread whatever the width, with a
log-normal per-token scale (:data:`DEFAULT_LOGIT_SCALE`, :data:`DEFAULT_LOGIT_SCALE_SPREAD`).
The next-token distributions are then peaked at some steps and flat at others, the way a real
model's are; see :func:`build_tiny_model` for the measured ranges.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
)
from transformers.utils import logging as hf_logging

if TYPE_CHECKING:
    from .config import Source
    from .routers import RouterInputs

__all__ = [
    "CHATML_TEMPLATE",
    "CORPUS",
    "DEFAULT_INIT_SCALE",
    "DEFAULT_LOGIT_SCALE",
    "DEFAULT_LOGIT_SCALE_SPREAD",
    "EOS_TOKEN",
    "IM_END_TOKEN",
    "IM_START_TOKEN",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "TinyPair",
    "build_tiny_model",
    "make_tiny_pair",
    "train_tokenizer",
]

EOS_TOKEN = "<|endoftext|>"
IM_START_TOKEN = "<|im_start|>"
IM_END_TOKEN = "<|im_end|>"
PAD_TOKEN = "<pad>"
#: The special tokens every tokenizer built here carries, in id order after the BPE vocabulary.
SPECIAL_TOKENS: tuple[str, ...] = (EOS_TOKEN, IM_START_TOKEN, IM_END_TOKEN, PAD_TOKEN)

#: Qwen-style ChatML template: every message (a system message only when one is given) as
#: ``<|im_start|>{role}\n{content}<|im_end|>\n``, then ``<|im_start|>assistant\n`` when a
#: generation prompt is asked for.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

#: The config's ``initializer_range`` (standard deviation of every weight matrix: embeddings,
#: attention, MLP) is ``DEFAULT_INIT_SCALE / sqrt(hidden_size)``: 0.5 at width 64, 0.18 at 512.
#: The Llama default of 0.02 leaves a tiny model's hidden states almost independent of its
#: input; a fixed 0.5 makes the residual stream of a 512-wide, 8-layer model reach ~2.4e4,
#: too close to the float16 limit, while the width-scaled value keeps it near 1e3.
DEFAULT_INIT_SCALE = 4.0
#: Typical standard deviation of the output logits: row ``i`` of the output head is drawn with
#: standard deviation ``DEFAULT_LOGIT_SCALE * s_i / sqrt(hidden_size)``, and the final RMS norm
#: gives hidden states of norm ``sqrt(hidden_size)``, so the spread does not grow with width.
DEFAULT_LOGIT_SCALE = 1.75
#: Standard deviation of ``log s_i``, the log-normal per-token factor on the output head's rows.
#: Some tokens get a larger scale than the rest, so a step is confident when the hidden state
#: points towards one of them and flat otherwise: the top-1 probability varies from step to
#: step instead of sitting at one value fixed by the vocabulary size.
DEFAULT_LOGIT_SCALE_SPREAD = 0.35
# Measured over teacher-forced and greedy steps on the built-in corpus (llama and qwen2,
# several seeds), these give a top-1 probability with 5th/25th/50th/75th/95th percentiles of
# about 0.1/0.2/0.33/0.6/0.95, ~30% of steps above 0.5 and ~5% below 0.1; the 64-wide model
# with 512 tokens and a 512-wide, 8-layer model with 8,000 tokens behave alike.

#: Built-in English training text: brainstorming lists, short poems, dialogue, instructions,
#: punctuation, numbers and newlines. Small on purpose; :func:`train_tokenizer` weights it and
#: appends procedural variants of its words so that large vocabularies are reachable.
CORPUS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "Here are some ideas for a weekend trip: visit a museum, walk in the park, or cook dinner.",
    "Brainstorm three names for a coffee shop:\n1. Bean There\n2. The Daily Grind\n3. Brew Haven",
    "Ideas for a birthday party:\n- a picnic in the garden\n- a movie night\n- a treasure hunt",
    "Roses are red,\nviolets are blue,\nsugar is sweet,\nand so are you.",
    "The moon is a silver coin\nthat the night keeps in its pocket.",
    "Once upon a time, in a small village by the sea, there lived an old fisherman.",
    "What is the capital of France? The capital of France is Paris.",
    "How many days are in a week? There are 7 days in a week.",
    "A year has 12 months, 52 weeks and 365 days (366 in a leap year).",
    "In 1969, two astronauts walked on the Moon for the first time.",
    "The price went up from $4.99 to $5.49, an increase of about 10%.",
    "Step 1: preheat the oven to 180 degrees.\nStep 2: mix the flour and the sugar.",
    "Step 3: add two eggs and a cup of milk.\nStep 4: bake for 25 minutes.",
    'She said, "I will be there at 3 o\'clock." He replied, "Don\'t be late!"',
    "Is it raining? No, it's sunny; take your hat, though.",
    "The results were clear: 42 out of 50 students passed the test.",
    "Write a short poem about autumn.",
    "Leaves fall softly down,\ngold and red upon the ground,\nautumn whispers low.",
    "The river runs to the sea,\nthe sea runs to the sky,\nand the sky comes home as rain.",
    "I think, therefore I am.",
    "To be, or not to be, that is the question.",
    "All that glitters is not gold; all who wander are not lost.",
    "The early bird catches the worm, but the second mouse gets the cheese.",
    "You can use a spreadsheet to track your expenses and plan a budget.",
    "Here is a list of things to pack: a toothbrush, a towel, a book, and a warm jacket.",
    "Try these ideas to save energy at home: turn off the lights, use a fan, and fix leaks.",
    "A good story has a beginning, a middle and an end.",
    "The cat sat on the mat and looked at the dog.",
    "The dog barked at the mailman, who dropped all of the letters.",
    "Water boils at 100 degrees Celsius and freezes at 0 degrees.",
    "The Earth goes around the Sun once every year.",
    "There are eight planets in the solar system: Mercury, Venus, Earth, Mars, Jupiter, "
    "Saturn, Uranus and Neptune.",
    "My favourite colours are blue, green and yellow.",
    "Can you help me write an email to my teacher?",
    "Dear Ms. Smith,\nThank you for your help with the project.\nBest wishes,\nSam",
    "Sure! Here is a draft you can edit.",
    "Of course. Let me explain it step by step.",
    "First, read the question carefully. Then, think about the answer.",
    "The answer is 12, because 3 times 4 is 12.",
    "If x = 5 and y = 7, then x + y = 12 and x * y = 35.",
    "2 + 2 = 4, 10 - 3 = 7, 6 / 2 = 3.",
    "Call me at 555-0199 or write to info@example.com.",
    "The meeting is on Monday, March 3, at 9:30 a.m.",
    "Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday follow Monday.",
    "January, February, April, May, June, July, August, September, October, November, December.",
    "One, two, three, four, five, six, seven, eight, nine, ten.",
    "The first, the second and the third runners all finished within a minute.",
    "In the morning we drink tea; in the evening we read books by the fire.",
    "A small boat drifted across the lake under a pale grey sky.",
    "The wind in the willows sang a song of spring.",
    "Snow on the mountain,\nsmoke from the chimney,\nbread in the oven.",
    "Stars are the windows of heaven,\nopen for those who look up.",
    "Happiness is a warm cup of cocoa on a cold winter day.",
    "Ideas for a science project:\n* grow plants under coloured light\n* build a volcano\n"
    "* test which paper towel absorbs the most water",
    "Ways to stay healthy: sleep well, eat vegetables, drink water and exercise daily.",
    "Names for a pet rabbit: Clover, Biscuit, Pepper, Maple and Luna.",
    "Themes for a story: friendship, courage, a lost key, and a secret door.",
    'Possible titles: "The Last Train", "A Map of Stars", "Letters from Home".',
    "Why is the sky blue? Sunlight is scattered by the air, and blue light is scattered most.",
    "Why do birds fly south? Many birds migrate to find food and warmer weather.",
    "What should I cook tonight? How about a simple pasta with tomatoes and basil?",
    "The library opens at 8 and closes at 6, except on Sundays.",
    "He opened the door, looked outside, and smiled.",
    "They walked to the station, but the train had already left.",
    "We will need more time, more money and more people.",
    "It was the best of times, it was the worst of times.",
    "The children played in the garden until the sun went down.",
    "An apple a day keeps the doctor away.",
    "Practice makes perfect, so keep trying.",
    "Knowledge is power, and reading is the key to knowledge.",
    "This is a test. This is only a test.",
    "Hello! How are you today? I am fine, thank you.",
    "Good morning, everyone. Let's get started.",
    "Thanks for asking! I'd be happy to help.",
    "I'm not sure, but I think the answer is yes.",
    "Please note: the office will be closed on Friday.",
    "Warning: do not touch the hot surface.",
    "Tip: press Ctrl+S to save your work often.",
    "Summary: the plan is simple, cheap and quick to test.",
    "Pros: fast, cheap, easy. Cons: noisy, fragile, short-lived.",
    "There is a house on the hill with a red roof and a blue door.",
    "Under the old oak tree, a fox was sleeping in the shade.",
    "At night the city lights shine like a field of stars.",
    "From the top of the tower you can see the whole valley.",
    "After the storm, the streets were quiet and the air smelled of rain.",
    "Before you leave, make sure the windows are closed.",
    "During the summer, we swim in the river almost every day.",
    "Between you and me, the cake was a little too sweet.",
    "Without a map, they followed the stars to find their way.",
    "With a little patience, anything is possible.",
    "For example, a triangle has three sides and a square has four.",
    "In other words, the plan worked better than we expected.",
    "On the other hand, the cost was higher than expected.",
    "As a result, the team decided to try again next year.",
    "By the way, did you remember to buy milk?",
    "Some people like coffee; others prefer tea or juice.",
    "Every morning she writes three pages in her notebook.",
    "No one knew where the old key had come from.",
    "Each of the five friends brought a different dish to share.",
    "Both the cat and the dog were asleep by the fire.",
    "Neither the bus nor the train was on time.",
    "Either we leave now, or we miss the show.",
    "Although it was late, the shop was still open.",
    "Because it rained, the game was moved indoors.",
    "Unless you hurry, you will miss the bus.",
    "While the soup cooked, he set the table.",
    "When the bell rang, the students ran outside.",
    "Where there is a will, there is a way.",
    "Who wrote this letter, and why was it never sent?",
    "Which road leads to the river, the left one or the right one?",
    "The old clock ticked,\nthe kettle sang,\nand the house was warm.",
    "Little seed, little seed,\nwhat will you be?\nA flower, a bush,\nor a great tall tree?",
    "The ocean hums a lullaby\nto ships that sail the night.",
    "I wandered lonely as a cloud\nthat floats on high over vales and hills.",
    "Make a plan, make a list, and then make a start.",
    "Five creative uses for an empty jar: a vase, a lamp, a piggy bank, a spice holder, "
    "a terrarium.",
    "Ten ideas for a rainy day: bake cookies, build a fort, paint, read, sing, dance, "
    "play cards, write a story, watch a film, call a friend.",
    "Marketing ideas for a bakery: free samples, a loyalty card, seasonal cakes, "
    "and a weekly newsletter.",
    "Suggestions for a team name: The Night Owls, Code Crafters, Blue Comets.",
    "How to make a paper plane: fold the paper in half, fold the corners, and throw.",
    "Remember to drink 8 glasses of water a day.",
    "The train leaves at 10:15 and arrives at 12:45.",
    "Chapter 1\n\nIt was a dark and stormy night.",
    "Q: What has keys but cannot open locks?\nA: A piano.",
    "Q: What gets wetter the more it dries?\nA: A towel.",
    "User: Tell me a joke.\nAssistant: Why did the scarecrow win an award? "
    "Because he was outstanding in his field!",
    "The population grew from 1,200 to 3,450 in just 20 years.",
    "Temperatures ranged from -5 to 30 degrees over the year.",
    "Version 2.0 was released in 2021, and version 3.1 followed in 2023.",
    "The recipe needs 2 cups of flour, 1 cup of sugar and 3 eggs.",
    "Please answer in one sentence.",
    "Please explain this to a child who is five years old.",
    "Translate the sentence into simple English.",
    "Give me three reasons to learn a new language.",
    "List the pros and cons of working from home.",
    "Describe your ideal holiday in a few words.",
    "Write a haiku about the sea.",
    "Waves fold into foam,\nsalt wind carries gull voices,\nthe tide breathes and goes.",
    "Compose a limerick about a cat.",
    "There once was a cat from the town\nwho wore a magnificent crown;\nshe sat on a chair\n"
    "with her nose in the air,\nand never once looked at the ground.",
    "The museum has paintings, statues, old coins and a dinosaur skeleton.",
    "Our garden grows carrots, beans, peas, potatoes and lettuce.",
    "The teacher asked the class to write about their favourite animal.",
    "My brother likes football, and my sister likes music.",
    "It is important to listen, to ask questions and to learn from mistakes.",
    "The best way to learn is to teach someone else.",
    "In conclusion, small steps lead to big changes.",
    "Thank you for reading!",
)

_NUMBER_LIMIT = 2000
_SUFFIXES = ("s", "ed", "ing", "er", "ly", "ness", "ful", "less")


def _corpus_words(corpus: Sequence[str]) -> list[str]:
    """Distinct alphabetic words of ``corpus`` (lower-cased), in first-seen order."""
    seen: dict[str, None] = {}
    for text in corpus:
        for raw in text.split():
            word = "".join(ch for ch in raw if ch.isalpha()).lower()
            if word:
                seen.setdefault(word, None)
    return list(seen)


def _augmented_corpus(corpus: Sequence[str], repeats: int) -> Iterator[str]:
    """``corpus`` repeated ``repeats`` times, then procedural variants of its words.

    The repeats keep the real sentences dominant in the pair counts, so the first merges (the
    whole of a small vocabulary) look like English. The variants (capitalised, upper-case and
    suffixed words, and the numbers below :data:`_NUMBER_LIMIT`) each appear once: they only
    give the trainer enough distinct words to reach vocabularies of several thousand tokens.
    """
    for _ in range(repeats):
        yield from corpus
    words = _corpus_words(corpus)
    yield " ".join(w.capitalize() for w in words)
    yield " ".join(w.upper() for w in words)
    for suffix in _SUFFIXES:
        yield " ".join(w + suffix for w in words)
        yield " ".join((w + suffix).capitalize() for w in words)
    yield " ".join(str(n) for n in range(_NUMBER_LIMIT))
    yield ", ".join(f"{n}.{n % 100:02d}" for n in range(0, _NUMBER_LIMIT, 7))


def train_tokenizer(
    directory: str | os.PathLike[str],
    *,
    vocab_size: int = 512,
    seed_corpus: Sequence[str] | None = None,
    chat_template: str | None = None,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer, save it to ``directory`` and load it back.

    The tokenizer follows GPT-2/Qwen: a ``ByteLevel`` pre-tokenizer (no prefix space) and
    decoder, so a token that starts with a space is spelled with ``Ġ`` and a newline with
    ``Ċ``; the 256 byte symbols are always in the vocabulary, so any text encodes. The four
    :data:`SPECIAL_TOKENS` come after the BPE vocabulary (as in Qwen), with ``<|endoftext|>`` as
    EOS and ``<pad>`` as padding; there is no BOS token.

    Args:
        directory: where the tokenizer files go (created if missing).
        vocab_size: target ``len(tokenizer)``, special tokens included. BPE stops early when
            every word of the corpus is a single token: on the built-in corpus that happens
            at 18,272 tokens, so larger values give a vocabulary of that size (never an
            error); up to there ``len(tokenizer) == vocab_size`` exactly. Must be at least 260
            (the 256 byte symbols and the 4 special tokens).
        seed_corpus: training sentences; defaults to :data:`CORPUS`. Procedural variants of
            its words are always added (see :func:`_augmented_corpus`).
        chat_template: a Jinja chat template; defaults to :data:`CHATML_TEMPLATE`.

    Returns:
        The tokenizer as ``AutoTokenizer.from_pretrained(directory)`` loads it.
    """
    min_size = len(pre_tokenizers.ByteLevel.alphabet()) + len(SPECIAL_TOKENS)
    if vocab_size < min_size:
        raise ValueError(f"vocab_size must be at least {min_size}, got {vocab_size}")
    corpus = tuple(seed_corpus) if seed_corpus is not None else CORPUS
    if not corpus:
        raise ValueError("seed_corpus is empty")

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    backend.train_from_iterator(_augmented_corpus(corpus, repeats=20), trainer=trainer)
    # Added here, not through the trainer, so that they get the last ids in a fixed order.
    backend.add_special_tokens(list(SPECIAL_TOKENS))

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IM_START_TOKEN, IM_END_TOKEN],
        model_max_length=1_000_000,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = chat_template if chat_template is not None else CHATML_TEMPLATE
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    loaded = AutoTokenizer.from_pretrained(path)
    if not isinstance(loaded, PreTrainedTokenizerFast):
        raise TypeError(f"expected a fast tokenizer from {path}, got {type(loaded).__name__}")
    return loaded


@contextmanager
def _quiet_progress() -> Iterator[None]:
    """Hide transformers' "Writing model shards"/"Loading weights" bars, then restore them."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int | None:
    """Id of ``token`` in ``tokenizer``'s vocabulary, or ``None`` when it has no such token."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(token_id, int) or token_id == tokenizer.unk_token_id:
        return None
    return token_id


_CONFIG_CLASSES: dict[str, type[LlamaConfig] | type[Qwen2Config]] = {
    "llama": LlamaConfig,
    "qwen2": Qwen2Config,
}


def _special_ids(
    tokenizer: PreTrainedTokenizerBase, eos_token_ids: Sequence[int] | None
) -> tuple[int, list[int]]:
    """The padding id and the stop ids of a tiny model, checked against its tokenizer."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer needs an EOS token")
    eos_id = int(tokenizer.eos_token_id)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    stop_ids = [int(i) for i in eos_token_ids] if eos_token_ids is not None else [eos_id]
    if not stop_ids:
        raise ValueError("eos_token_ids is empty")
    vocab_size = len(tokenizer)
    if any(not 0 <= i < vocab_size for i in stop_ids):
        raise ValueError(f"eos_token_ids {stop_ids} are outside the vocabulary (0..{vocab_size})")
    return int(pad_id), stop_ids


def build_tiny_model(
    directory: str | os.PathLike[str],
    tokenizer: PreTrainedTokenizerBase,
    *,
    arch: Literal["llama", "qwen2"] = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    seed: int = 0,
    eos_token_ids: Sequence[int] | None = None,
) -> PreTrainedModel:
    """Create a random causal LM for ``tokenizer``, save both to ``directory``, load it back.

    The model is a float32 ``LlamaForCausalLM`` or ``Qwen2ForCausalLM`` with
    ``vocab_size == len(tokenizer)``, untied input and output embeddings, and the tokenizer's
    EOS and padding ids (no BOS) in its config. Weights are drawn under
    ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng`` (the caller's random state is
    left as it was): the same arguments give the same weights, another seed different ones.

    The initialisation is scaled so that the model is not near-uniform (see
    ``DEFAULT_INIT_SCALE``, ``DEFAULT_LOGIT_SCALE`` and ``DEFAULT_LOGIT_SCALE_SPREAD``).

    Args:
        directory: where the model, its generation config and the tokenizer are saved.
        tokenizer: the model's tokenizer; it must have an EOS token.
        arch: ``"llama"`` or ``"qwen2"`` (Qwen2 has biases on the q/k/v projections).
        hidden_size: model width; must be divisible by ``num_heads``.
        num_layers: number of decoder layers.
        num_heads: attention heads.
        num_kv_heads: key/value heads (grouped-query attention); must divide ``num_heads``.
        intermediate_size: MLP width; defaults to ``4 * hidden_size``.
        max_position_embeddings: longest sequence the config allows.
        seed: random seed of the initialisation.
        eos_token_ids: the generation config's stop ids; defaults to the tokenizer's EOS. For an
            aligned (chat) model pass ``[eos, id of "<|im_end|>"]``.

    Returns:
        The model as ``AutoModelForCausalLM.from_pretrained(directory)`` loads it, in eval mode.
    """
    config_class = _CONFIG_CLASSES.get(arch)
    if config_class is None:
        raise ValueError(f"arch must be one of {sorted(_CONFIG_CLASSES)}, got {arch!r}")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads {num_heads} is not divisible by num_kv_heads {num_kv_heads}")
    pad_id, stop_ids = _special_ids(tokenizer, eos_token_ids)
    vocab_size = len(tokenizer)
    config = config_class(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        initializer_range=DEFAULT_INIT_SCALE / math.sqrt(hidden_size),
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=stop_ids[0] if len(stop_ids) == 1 else stop_ids,
        pad_token_id=pad_id,
        dtype="float32",
    )
    # fork_rng: seed the draw without changing the caller's global (CPU) random state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        with torch.no_grad():
            head = model.get_output_embeddings().weight
            row_scale = torch.exp(torch.randn(head.shape[0], 1) * DEFAULT_LOGIT_SCALE_SPREAD)
            head.normal_(0.0, DEFAULT_LOGIT_SCALE / math.sqrt(hidden_size)).mul_(row_scale)
    model.generation_config = GenerationConfig(
        bos_token_id=None,
        eos_token_id=stop_ids[0] if len(stop_ids) == 1 else stop_ids,
        pad_token_id=pad_id,
        do_sample=False,
    )
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    with _quiet_progress():
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        loaded = AutoModelForCausalLM.from_pretrained(path)
    return loaded.eval()


@dataclass(frozen=True)
class TinyPair:
    """Directories of a tiny base/aligned pair, each holding a model and its tokenizer."""

    base_dir: Path
    aligned_dir: Path


def make_tiny_pair(
    directory: str | os.PathLike[str],
    *,
    vocab_size: int = 512,
    aligned_vocab_size: int | None = None,
    arch: Literal["llama", "qwen2"] = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
    max_position_embeddings: int = 512,
) -> TinyPair:
    """Build ``directory/base`` and ``directory/aligned``: two different random models.

    By default both sides share one tokenizer (the same vocabulary, both with the ChatML
    template, as real base checkpoints such as Qwen2.5-0.5B carry one too). When
    ``aligned_vocab_size`` is given and differs from ``vocab_size``, the aligned side gets its
    own tokenizer trained with that size: a cross-family pair whose vocabularies and special
    token ids differ.

    The base model is drawn with seed ``2 * seed`` and the aligned one with ``2 * seed + 1``,
    so no two models of pairs built with different seeds coincide. The base
    model stops on ``<|endoftext|>``; the aligned model's ``generation_config.eos_token_id`` is
    ``[<|endoftext|>, <|im_end|>]``. Both use ``num_heads=4``, ``num_kv_heads=2`` and an MLP of
    ``4 * hidden_size``.

    A default pair builds in about a second on two CPU cores; a ~30M-parameter benchmark pair
    (``hidden_size=512, num_layers=8, vocab_size=8000``) in a few seconds.

    Returns:
        The two directories, ready for ``from_pretrained``.
    """
    root = Path(directory)
    base_dir, aligned_dir = root / "base", root / "aligned"
    base_tokenizer = train_tokenizer(base_dir, vocab_size=vocab_size)
    if aligned_vocab_size is not None and aligned_vocab_size != vocab_size:
        aligned_tokenizer = train_tokenizer(aligned_dir, vocab_size=aligned_vocab_size)
    else:
        aligned_tokenizer = base_tokenizer
    im_end = _token_id(aligned_tokenizer, IM_END_TOKEN)
    aligned_eos = [int(aligned_tokenizer.eos_token_id)]
    if im_end is not None:
        aligned_eos.append(im_end)
    for side_dir, tokenizer, side_seed, eos_ids in (
        (base_dir, base_tokenizer, 2 * seed, None),
        (aligned_dir, aligned_tokenizer, 2 * seed + 1, aligned_eos),
    ):
        build_tiny_model(
            side_dir,
            tokenizer,
            arch=arch,
            hidden_size=hidden_size,
            num_layers=num_layers,
            max_position_embeddings=max_position_embeddings,
            seed=side_seed,
            eos_token_ids=eos_ids,
        )
    return TinyPair(base_dir=base_dir, aligned_dir=aligned_dir)


def make_bench_pair(directory: str | os.PathLike[str]) -> TinyPair:
    """The benchmarks' local pair: ~30M parameters per model (8,000 tokens, 512 wide, 6
    layers), wide enough that the forward pass, not Python, dominates a step."""
    return make_tiny_pair(
        directory,
        vocab_size=8000,
        hidden_size=512,
        num_layers=6,
        max_position_embeddings=1024,
    )


#: Upper bound of every wait on something that must happen in a test, so that a bug fails the
#: test rather than hanging it. Passing runs never reach it.
HANG_GUARD_S = 60.0


class DecodingGate:
    """A router that shows a test that decoding is under way, and holds it there until told.

    On its first call at a decoding step >= ``hold_from_step`` (a word boundary of a running
    call) it records the step in :attr:`held_at`, sets :attr:`started` and waits for
    :attr:`go`. Routers run on the engine's decoding thread, so while the gate waits the
    engine takes no step: what the test does meanwhile (cancel, close, consume) happens at a
    known step however fast the machine is. It always picks the base model.
    """

    needs: frozenset[Source] = frozenset()  # reads no distribution

    def __init__(self, hold_from_step: int = 0) -> None:
        self.hold_from_step = hold_from_step
        self.started = threading.Event()
        self.go = threading.Event()
        self.held_at: int | None = None
        #: Whether :attr:`go` came while decoding was held (False: the hang guard ran out).
        self.went: bool | None = None

    def __call__(self, inputs: RouterInputs) -> torch.Tensor:
        if self.held_at is None and inputs.step >= self.hold_from_step:
            self.held_at = inputs.step
            self.started.set()
            self.went = self.go.wait(HANG_GUARD_S)
        return torch.ones(inputs.batch_size, dtype=torch.bool, device=inputs.device)

    def wait_until_held(self) -> None:
        """Return once decoding is held at the gate."""
        assert self.started.wait(HANG_GUARD_S), "decoding never reached the gate"

    async def until_held(self) -> None:
        """:meth:`wait_until_held` off the event loop."""
        await asyncio.to_thread(self.wait_until_held)

    async def release_once_held(self) -> None:
        """Let decoding go on once it reached the gate. Only a free event loop runs this while
        the engine decodes; a blocked one leaves the gate to report ``went=False``."""
        await self.until_held()
        self.go.set()


def openai_logprob_content(entries: Sequence[Any] | None) -> list[dict[str, Any]]:
    """Token log-prob entries (``BacoOutput.logprobs``) written out as OpenAI's chat
    ``logprobs.content``, apart from the adapters' own conversion: the oracle the adapter and
    server tests compare against."""
    assert entries is not None

    def spelled(entry: Any) -> list[int]:
        return list(entry.bytes) if entry.bytes else list(entry.token.encode("utf-8"))

    return [
        {
            "token": e.token,
            "bytes": spelled(e),
            "logprob": e.logprob,
            "top_logprobs": [
                {"token": t.token, "bytes": spelled(t), "logprob": t.logprob}
                for t in e.top_logprobs
            ],
        }
        for e in entries
    ]
