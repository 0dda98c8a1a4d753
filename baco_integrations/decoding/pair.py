"""The two models of a pair and the facts about each that decoding reads, computed once.

A token's source is one small integer everywhere inside the decoding loop (``ALIGNED`` = 0,
``BASE`` = 1, ``NO_SOURCE`` = -1 before a row's first token); the names ``"aligned"`` and
``"base"`` appear only in outputs. ``Pair.members[source]`` holds that model's facts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..config import Source
from ..model_calls import cache_argument, input_device
from ..routers import NO_SOURCE, SOURCE_ALIGNED, SOURCE_BASE
from ..vocab import VocabMasks, build_vocab_masks

ALIGNED, BASE = SOURCE_ALIGNED, SOURCE_BASE
SOURCE_IDS: tuple[int, int] = (ALIGNED, BASE)
#: The output name of each source id.
SOURCE_NAMES: tuple[Source, Source] = ("aligned", "base")

__all__ = ["ALIGNED", "BASE", "NO_SOURCE", "SOURCE_IDS", "SOURCE_NAMES", "Pair", "PairMember"]

#: Special tokens that end an assistant turn in common chat templates.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, chat: bool) -> set[int]:
    ids: set[int] = set()
    for value in (
        tokenizer.eos_token_id,
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
        model.config.get_text_config().eos_token_id,
    ):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    if chat:
        vocab = tokenizer.get_vocab()
        special = set(tokenizer.all_special_tokens) | {
            str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values()
        }
        ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab and t in special)
    return ids


def _context_window(model: PreTrainedModel) -> int | None:
    window = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    return int(window) if isinstance(window, int) and window > 0 else None


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return next(t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if t is not None)


@dataclass(frozen=True)
class PairMember:
    """One model of the pair: what the loop reads about it."""

    source: int
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    #: Rows of the model's logits that BACO reads (embedding padding rows are left out).
    vocab_size: int
    masks: VocabMasks
    #: Token ids that end a sample written by this model.
    eos_ids: frozenset[int]
    pad_id: int
    #: Where the model takes its inputs (its embedding's device, also when sharded).
    device: torch.device
    #: The keyword of the KV cache in ``model.forward`` (it changed in transformers 5.24).
    cache_argument: str

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
    #: Where scores, masks and draws live (the aligned model's input device).
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
        base_model: PreTrainedModel,
        aligned_model: PreTrainedModel,
        base_tokenizer: PreTrainedTokenizerBase,
        aligned_tokenizer: PreTrainedTokenizerBase,
    ) -> Pair:
        shares = base_tokenizer.get_vocab() == aligned_tokenizer.get_vocab()
        device = input_device(aligned_model)
        sizes = [
            min(model.get_output_embeddings().weight.shape[0], len(tokenizer))
            for model, tokenizer in (
                (aligned_model, aligned_tokenizer),
                (base_model, base_tokenizer),
            )
        ]
        if shares:
            sizes = [min(sizes)] * 2
        eos = [
            _eos_ids(aligned_model, aligned_tokenizer, True),
            _eos_ids(base_model, base_tokenizer, False),
        ]
        if shares:  # one vocabulary: either model's end-of-sequence token ends a sample
            eos = [eos[0] | eos[1]] * 2
        aligned_masks = build_vocab_masks(aligned_tokenizer, sizes[ALIGNED], device)
        base_masks = (
            aligned_masks if shares else build_vocab_masks(base_tokenizer, sizes[BASE], device)
        )
        members = tuple(
            PairMember(
                source=source,
                model=model.eval(),
                tokenizer=tokenizer,
                vocab_size=sizes[source],
                masks=masks,
                eos_ids=frozenset(eos[source]),
                pad_id=_pad_id(tokenizer),
                device=input_device(model),
                cache_argument=cache_argument(model),
            )
            for source, model, tokenizer, masks in (
                (ALIGNED, aligned_model, aligned_tokenizer, aligned_masks),
                (BASE, base_model, base_tokenizer, base_masks),
            )
        )
        windows = [w for w in map(_context_window, (base_model, aligned_model)) if w]
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
