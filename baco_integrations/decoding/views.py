"""What each model has seen of each row's response, kept in step with its runner.

Both kinds of pair keep, per model and row, the token ids the model has been given. With one
tokenizer every committed token goes to both models; across families the writer appends its
own tokens and the other model is brought to a re-tokenization of the committed text with
:meth:`ModelView.sync`, which keeps the longest common prefix (its KV cache, in the runner)
and sends only the differing suffix. Grammar matchers follow the same views the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..runners import ModelRunner, RowSettings


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

    def append(self, row: int, token: int) -> None:
        self.rows[row].append(token)
        self.runner.append(row, (token,))

    def sync(self, row: int, target: list[int]) -> None:
        """Make the row's view ``target`` (a re-tokenization of the committed text), keeping
        the longest common prefix. At least the last token is sent again: its distribution
        is the one needed next."""
        view = self.rows[row]
        if view == target:
            return
        keep = min(common_prefix(view, target), max(len(target) - 1, 0))
        self.runner.rewind(row, keep)
        self.runner.append(row, target[keep:])
        self.rows[row] = list(target)
        self.synced_tokens += len(target) - keep
        self.reused_tokens += keep

    def select(self, keep: Sequence[int]) -> None:
        """Keep only the rows ``keep`` (indices, in order)."""
        self.runner.select(keep)
        self.rows = [self.rows[r] for r in keep]

    def release(self) -> None:
        """Drop every row, and the runner's caches with them."""
        self.runner.release()
        self.rows = []
