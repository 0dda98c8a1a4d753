"""The two models of a pair and the facts about each that decoding reads, computed once.

A pair is built from a runner per model (where it runs: :mod:`baco_integrations.runners`) and
its tokenizer (what its ids mean). A token's source is one small integer everywhere inside the
decoding loop (``ALIGNED`` = 0, ``BASE`` = 1, ``NO_SOURCE`` = -1 before a row's first token);
the names ``"aligned"`` and ``"base"`` appear only in outputs. ``Pair.members[source]`` holds
that model's facts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from ..config import Source
from ..routers import NO_SOURCE, SOURCE_ALIGNED, SOURCE_BASE
from ..runners import ModelRunner
from ..vocab import VocabMasks, build_vocab_masks

ALIGNED, BASE = SOURCE_ALIGNED, SOURCE_BASE
SOURCE_IDS: tuple[int, int] = (ALIGNED, BASE)
#: The output name of each source id.
SOURCE_NAMES: tuple[Source, Source] = ("aligned", "base")

__all__ = ["ALIGNED", "BASE", "NO_SOURCE", "SOURCE_IDS", "SOURCE_NAMES", "Pair", "PairMember"]

#: Special tokens that end an assistant turn in common chat templates.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


def _eos_ids(runner: ModelRunner, tokenizer: PreTrainedTokenizerBase, chat: bool) -> set[int]:
    ids = set(runner.facts.eos_ids)
    if isinstance(tokenizer.eos_token_id, int):
        ids.add(tokenizer.eos_token_id)
    if chat:
        vocab = tokenizer.get_vocab()
        special = set(tokenizer.all_special_tokens) | {
            str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values()
        }
        ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab and t in special)
    return ids


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id a runner pads prompts with: the tokenizer's pad token, else its EOS, else 0."""
    return next(t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if t is not None)


@dataclass(frozen=True)
class PairMember:
    """One model of the pair: what the loop reads about it, and the runner that runs it."""

    source: int
    runner: ModelRunner
    tokenizer: PreTrainedTokenizerBase
    #: Columns of the model's distributions that BACO reads (embedding padding rows and ids
    #: the tokenizer does not know are left out).
    vocab_size: int
    masks: VocabMasks
    #: Token ids that end a sample written by this model.
    eos_ids: frozenset[int]

    @property
    def name(self) -> Source:
        return SOURCE_NAMES[self.source]


@dataclass(frozen=True)
class Pair:
    """A base model and its aligned counterpart, ready to decode together.

    ``shares_tokenizer``: the vocabularies are equal, so a token id means the same to both
    models and tokens are the shared currency (the fast path). Otherwise text is.
    """

    members: tuple[PairMember, PairMember]  # indexed by source id
    shares_tokenizer: bool
    context_window: int | None
    #: Where scores, masks and draws live (where the aligned runner's distributions are).
    device: torch.device

    @property
    def aligned(self) -> PairMember:
        return self.members[ALIGNED]

    @property
    def base(self) -> PairMember:
        return self.members[BASE]

    @property
    def width(self) -> int:
        """Columns of the score tensors: the larger vocabulary (the smaller is padded)."""
        return max(m.vocab_size for m in self.members)

    @classmethod
    def build(
        cls,
        base_runner: ModelRunner,
        aligned_runner: ModelRunner,
        base_tokenizer: PreTrainedTokenizerBase,
        aligned_tokenizer: PreTrainedTokenizerBase,
    ) -> Pair:
        """The pair of two runners, each with the tokenizer whose ids it takes."""
        shares = base_tokenizer.get_vocab() == aligned_tokenizer.get_vocab()
        device = aligned_runner.facts.device
        sides = ((aligned_runner, aligned_tokenizer), (base_runner, base_tokenizer))
        sizes = [min(runner.facts.vocab_size, len(tokenizer)) for runner, tokenizer in sides]
        eos = [
            _eos_ids(runner, tokenizer, chat)
            for (runner, tokenizer), chat in zip(sides, (True, False), strict=True)
        ]
        if shares:  # one vocabulary: either model's end-of-sequence token ends a sample
            sizes = [min(sizes)] * 2
            eos = [eos[0] | eos[1]] * 2
        aligned_masks = build_vocab_masks(aligned_tokenizer, sizes[ALIGNED], device)
        base_masks = (
            aligned_masks if shares else build_vocab_masks(base_tokenizer, sizes[BASE], device)
        )
        members = tuple(
            PairMember(
                source=source,
                runner=runner,
                tokenizer=tokenizer,
                vocab_size=sizes[source],
                masks=masks,
                eos_ids=frozenset(eos[source]),
            )
            for source, (runner, tokenizer), masks in zip(
                SOURCE_IDS, sides, (aligned_masks, base_masks), strict=True
            )
        )
        windows = [w for r in (base_runner, aligned_runner) if (w := r.facts.context_window)]
        return cls(
            members=(members[0], members[1]),
            shares_tokenizer=shares,
            context_window=min(windows) if windows else None,
            device=device,
        )

    def continuation_table(self) -> torch.Tensor:
        """``[2, width]`` bool: row ``s`` marks the ids that continue a word in source ``s``'s
        vocabulary (ids past a smaller vocabulary never do)."""
        table = torch.zeros((2, self.width), dtype=torch.bool, device=self.device)
        for member in self.members:
            table[member.source, : member.vocab_size] = member.masks.continuation
        return table
