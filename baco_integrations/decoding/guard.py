"""The quality guard across families (``guard`` on a pair with two tokenizers).

With one vocabulary the guard reads the aligned model's probability of the base token itself
(:meth:`.step.Step._guard`). Across families the base token has no id in the aligned
vocabulary, so the guard reads instead the aligned model's probability that the text goes on
with the token's bytes: the total probability of the aligned tokens whose bytes are a prefix
of the base token's, or start with them. That total is an upper bound on the aligned model's
probability of those bytes (a prefix token may be followed by other text), so the guard is
never stricter across families than the same test with one tokenizer would be.

It is applied where the aligned model's view is a natural tokenization of the text: at the
token that opens each base word (a word boundary). Tokens inside a base word are not checked
(mid-word, the aligned model would read a re-tokenized fragment of the word).

Each token's bytes come from llguidance's reading of the tokenizer (the grammar engine's, so
they are read once per tokenizer and shared with structured output).
"""

from __future__ import annotations

import bisect
import weakref
from collections.abc import Sequence

import torch

from .grammar import READABLE_TOKENIZERS, ll_tokenizer, unreadable_reason
from .pair import Pair, PairMember


class _AlignedPieces:
    """The aligned vocabulary's token bytes, sorted, so that the tokens that start with some
    bytes are one contiguous range, plus an index from bytes to ids for the prefixes."""

    def __init__(self, member: PairMember) -> None:
        ll = ll_tokenizer(member)
        pieces = sorted(
            (piece, token)
            for token in range(member.vocab_size)
            if not ll.is_special_token(token) and (piece := ll.decode_bytes([token]))
        )
        self.sorted_bytes = [piece for piece, _ in pieces]
        self.order = torch.tensor([token for _, token in pieces], dtype=torch.long)
        self.ids: dict[bytes, list[int]] = {}
        for piece, token in pieces:
            self.ids.setdefault(piece, []).append(token)

    def compatible(self, piece: bytes) -> torch.Tensor:
        """Aligned ids whose bytes are a proper prefix of ``piece`` or start with it."""
        lo = bisect.bisect_left(self.sorted_bytes, piece)
        hi = bisect.bisect_left(self.sorted_bytes, piece + b"\xff" * 4, lo)
        # Token bytes never hold 0xff x 4 (not UTF-8, and no byte-level piece is that long),
        # so [lo, hi) is every piece that starts with ``piece``.
        prefixes = [t for k in range(1, len(piece)) for t in self.ids.get(piece[:k], ())]
        extending = self.order[lo:hi]
        if not prefixes:
            return extending
        return torch.cat([extending, torch.tensor(prefixes, dtype=torch.long)])


class CrossFamilyGuard:
    """What the guard keeps of base tokens on a cross-family pair (see the module's text).
    One per pair of tokenizers (:func:`cross_family_guard`): it keeps what it has looked up."""

    def __init__(self, pair: Pair) -> None:
        # No reference to the pair or its tokenizers: the cache below is keyed by them.
        self._base = ll_tokenizer(pair.base)
        self._aligned = _AlignedPieces(pair.aligned)
        #: Per (base token, device): its compatible aligned ids, already on that device,
        #: so a step copies nothing to the device for a token it has met before.
        self._compatible: dict[tuple[int, torch.device], torch.Tensor | None] = {}

    def kept_mass(self, aligned_probs: torch.Tensor, base_tokens: Sequence[int]) -> torch.Tensor:
        """For each row of ``aligned_probs`` (``[rows, width]``), the aligned probability that
        the text goes on with its base token's bytes; ``inf`` for a token with no bytes to
        compare (a special token), which the guard always keeps."""
        device = aligned_probs.device
        kept = torch.full((len(base_tokens),), float("inf"), device=device)
        for row, token in enumerate(base_tokens):
            ids = self._ids(token, device)
            if ids is not None:
                kept[row] = aligned_probs[row, ids].sum()
        return kept

    def _ids(self, base_token: int, device: torch.device) -> torch.Tensor | None:
        key = (base_token, device)
        if key not in self._compatible:
            piece = (
                None
                if self._base.is_special_token(base_token)
                else self._base.decode_bytes([base_token])
            )
            ids = self._aligned.compatible(piece) if piece else None
            self._compatible[key] = None if ids is None else ids.to(device)
        return self._compatible[key]


_GUARDS: weakref.WeakKeyDictionary[object, weakref.WeakKeyDictionary[object, CrossFamilyGuard]]
_GUARDS = weakref.WeakKeyDictionary()


def cross_family_guard(pair: Pair) -> CrossFamilyGuard:
    """The pair's guard, built on first use (it reads the aligned vocabulary's bytes once)."""
    by_aligned = _GUARDS.setdefault(pair.base.tokenizer, weakref.WeakKeyDictionary())
    guard = by_aligned.get(pair.aligned.tokenizer)
    if guard is None:
        guard = by_aligned[pair.aligned.tokenizer] = CrossFamilyGuard(pair)
    return guard


def check_guard_readable(pair: Pair, guard: float) -> None:
    """Refuse ``guard`` on a cross-family pair whose tokenizers llguidance cannot read (the
    guard compares the two vocabularies' token bytes), naming the setting."""
    for member in pair.members:
        if (why := unreadable_reason(member)) is not None:
            model = member.runner.facts.name or "unnamed"
            raise ValueError(
                f"guard={guard}: on a pair with two tokenizers the guard compares the models' "
                f"token bytes, and llguidance cannot read the {member.name} model's tokenizer "
                f"({model}): {why}. It reads {READABLE_TOKENIZERS}. Allowed: guard=0 for "
                "this pair"
            )
