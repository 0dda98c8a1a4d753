"""What each model has seen of each row's response, kept in step with its runner.

Both kinds of pair keep, per model and row, the token ids the model has been given. With one
tokenizer every committed token goes to both models; across families the writer appends its
own tokens and the other model is brought to a re-tokenization of the committed text with
:meth:`ModelView.sync`, which keeps the longest common prefix (its KV cache, in the runner)
and sends only the differing suffix. Grammar matchers follow the same views the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from ..runners import ModelRunner, RowSettings
from .encoding import encode_text, encode_with_ends


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids ``a`` and ``b`` share."""
    common = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        common += 1
    return common


class ModelView:
    """One model's view of every row's response, and the runner that holds it."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.rows: list[list[int]] = []
        #: Per row, (tokens, characters): the view's first ``tokens`` ids spell the text's
        #: first ``characters``, ending at a word boundary that no later text can move
        #: (see :meth:`sync_text`); re-tokenization starts there.
        self.anchors: list[tuple[int, int]] = []
        #: Tokens sent to the runner after a re-tokenization, and tokens of the new view the
        #: model had already been given (kept: the longest common prefix).
        self.synced_tokens = 0
        self.reused_tokens = 0

    def add_rows(
        self,
        prompts: Sequence[list[int]],
        repeats: Sequence[int],
        capacity: int,
        sampling: Sequence[RowSettings] | None = None,
    ) -> None:
        """New rows after the current ones, with empty responses (see
        :meth:`ModelRunner.add_rows`)."""
        self.runner.add_rows(prompts, repeats, capacity, sampling)
        self.rows.extend([] for _ in range(sum(repeats)))
        self.anchors.extend((0, 0) for _ in range(sum(repeats)))

    def append(self, row: int, token: int) -> None:
        self.rows[row].append(token)
        self.runner.append(row, (token,))

    def sync(self, row: int, target: list[int], start: int = 0) -> None:
        """Make the row's view its first ``start`` ids followed by ``target`` (a
        re-tokenization of the committed text from there), keeping the longest common
        prefix. At least the last token is sent again: its distribution is the one needed
        next."""
        view = self.rows[row]
        if len(view) == start + len(target) and view[start:] == target:
            return
        end = start + len(target)
        keep = min(start + common_prefix(view[start:], target), max(end - 1, 0))
        self.runner.rewind(row, keep)
        self.runner.append(row, target[keep - start :])
        del view[keep:]
        view.extend(target[keep - start :])
        self.synced_tokens += end - keep
        self.reused_tokens += keep

    def sync_text(self, row: int, text: str, tokenizer: PreTrainedTokenizerBase) -> None:
        """:meth:`sync` to ``text`` re-tokenized from the row's anchor on, then move the
        anchor to the last stable word boundary: the work per call grows with the text
        written since the anchor (about a word), not with the whole response.

        A boundary is stable where one space sits between two non-space characters: the
        pre-tokenizers of byte-level BPE (GPT-2, Llama 3, Qwen) and SentencePiece's word
        pieces always split there, so the tokens before it never change as text is added.
        A text shorter than the anchor (a stop string cut it) is re-tokenized whole.
        """
        tokens, chars = self.anchors[row]
        if chars > len(text) or len(self.rows[row]) < tokens:
            tokens, chars = 0, 0
        tail = text[chars:]
        ids, ends = encode_with_ends(tokenizer, tail) if tail else ([], [])
        self.sync(row, ids, tokens)
        self.anchors[row] = _next_anchor(text, chars, tokens, ends)

    def sync_whole(self, row: int, text: str, tokenizer: PreTrainedTokenizerBase) -> None:
        """:meth:`sync` to the whole ``text`` re-tokenized (a sample's final text)."""
        self.sync(row, encode_text(tokenizer, text))
        self.anchors[row] = (0, 0)

    def select(self, keep: Sequence[int]) -> None:
        """Keep only the rows ``keep`` (indices, in order)."""
        self.runner.select(keep)
        self.rows = [self.rows[r] for r in keep]
        self.anchors = [self.anchors[r] for r in keep]

    def release(self) -> None:
        """Drop every row, and the runner's caches with them."""
        self.runner.release()
        self.rows = []
        self.anchors = []


def _next_anchor(text: str, chars: int, tokens: int, ends: Sequence[int]) -> tuple[int, int]:
    """The last stable word boundary among the token ends ``ends`` (relative to ``chars``)
    before the text's last word, as (tokens, characters); the old anchor if there is none."""
    for j in range(len(ends) - 1, -1, -1):
        at = chars + ends[j]
        if (
            0 < at < len(text) - 1
            and text[at] == " "
            and not text[at - 1].isspace()
            and not text[at + 1].isspace()
        ):
            return tokens + j + 1, at
    return tokens, chars
