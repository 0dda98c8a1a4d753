"""The runner seam: the decoding loop runs on any :class:`ModelRunner`, not only on
transformers models. A runner written here (a fixed table of next-token logits given the last
token, a bigram model) drives the real loop through every router, on one tokenizer and across
two, with full and top-k distributions."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from baco_integrations import ROUTER_NAMES, BacoEngine
from baco_integrations.runners import Distributions, ModelFacts, ModelRunner, RunnerCounters
from baco_integrations.testing import TinyPair

PROMPTS = ["Write a poem about the sea.", "Ideas for a coffee shop"]


class TableRunner(ModelRunner):
    """Next-token logits ``table[last token]``; the row's tokens are kept as given."""

    def __init__(self, table: torch.Tensor, eos_id: int, top_k: int | None = None) -> None:
        self.table, self.top_k = table, top_k
        self._facts = ModelFacts(
            vocab_size=table.shape[0],
            eos_ids=frozenset({eos_id}),
            context_window=None,
            device=torch.device("cpu"),
            name="table",
        )
        self.tokens: list[list[int]] = []  # per row: prompt, then response
        self.prompt_length: list[int] = []
        self.fresh: list[bool] = []
        self.calls: list[list[int]] = []  # rows asked for, per call that had work to do
        self.passes = 0
        self.ran = 0
        self._logits = torch.empty(0)

    @property
    def facts(self) -> ModelFacts:
        return self._facts

    @property
    def rows(self) -> int:
        return len(self.tokens)

    def add_rows(
        self, prompts: Sequence[list[int]], repeats: Sequence[int], capacity: int, sampling=None
    ) -> None:
        added = [list(p) for p, k in zip(prompts, repeats, strict=True) for _ in range(k)]
        self.tokens += added
        self.prompt_length += [len(p) for p in added]
        self.fresh += [False] * len(added)
        self._run()

    def append(self, row: int, tokens: Sequence[int]) -> None:
        if tokens:
            self.tokens[row] += list(tokens)
            self.fresh[row] = False

    def rewind(self, row: int, length: int) -> None:
        del self.tokens[row][self.prompt_length[row] + length :]
        self.fresh[row] = False

    def distributions(self, rows: Sequence[int]) -> Distributions:
        if any(not self.fresh[r] for r in rows):
            self.calls.append(list(rows))
            self._run()
        if self.top_k is None:
            return Distributions(self._logits)
        logprobs, ids = torch.log_softmax(self._logits, -1).topk(self.top_k, dim=-1)
        return Distributions.from_top_k(ids, logprobs, self._facts.vocab_size)

    def _run(self) -> None:
        stale = [r for r, fresh in enumerate(self.fresh) if not fresh]
        last = torch.tensor([t[-1] for t in self.tokens])
        self._logits = self.table[last].clone()
        self.passes += 1
        self.ran += len(stale)
        self.fresh = [True] * len(self.tokens)

    def select(self, keep: Sequence[int]) -> None:
        self.tokens = [self.tokens[r] for r in keep]
        self.prompt_length = [self.prompt_length[r] for r in keep]
        self.fresh = [self.fresh[r] for r in keep]
        self._logits = self._logits[list(keep)]

    def release(self) -> None:
        self.tokens, self.prompt_length, self.fresh = [], [], []

    def counters(self) -> RunnerCounters:
        return RunnerCounters(self.passes, self.ran)


def _table(vocab: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((vocab, vocab), generator=generator) * 3


def _tokenizers(pair: TinyPair) -> tuple[PreTrainedTokenizerBase, PreTrainedTokenizerBase]:
    return (
        AutoTokenizer.from_pretrained(pair.base_dir),
        AutoTokenizer.from_pretrained(pair.aligned_dir),
    )


def _engine(pair: TinyPair, top_k: int | None = None) -> tuple[BacoEngine, list[TableRunner]]:
    base_tok, aligned_tok = _tokenizers(pair)
    runners = [
        TableRunner(_table(len(tok), seed), int(tok.eos_token_id), top_k)
        for tok, seed in ((base_tok, 0), (aligned_tok, 1))
    ]
    return BacoEngine.from_runners(*runners, base_tok, aligned_tok), runners


@pytest.fixture(params=["shared", "cross"])
def table_pair(request: pytest.FixtureRequest) -> TinyPair:
    return request.getfixturevalue("tiny_pair" if request.param == "shared" else "tiny_cross_pair")


@pytest.mark.parametrize("router", ROUTER_NAMES)
def test_every_router_runs_on_table_runners(table_pair: TinyPair, router: str) -> None:
    engine, runners = _engine(table_pair)
    gamma = 1.5 if router.startswith("H") else 0.5
    outs = engine.generate(PROMPTS, router=router, gamma=gamma, n=2, max_new_tokens=16, seed=5)
    tokenizer = engine.aligned_tokenizer
    for row in outs:
        for out in row:
            assert out.num_tokens > 0 or out.finish_reason == "stop"
            assert len(out.sources) == len(out.token_ids)
            decoded = tokenizer.decode(
                list(out.token_ids), skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
            assert decoded == out.text
    if router in ("aligned", "base"):
        assert {s for row in outs for o in row for s in o.sources} <= {router}
    assert engine.model_names == {"base": "table", "aligned": "table"}
    assert all(r.rows == 0 for r in runners)  # the rows left with the call


@pytest.mark.parametrize("side", ["aligned", "base"])
def test_greedy_single_model_follows_its_table(tiny_pair: TinyPair, side: str) -> None:
    engine, runners = _engine(tiny_pair)
    runner = runners[0 if side == "base" else 1]
    ids = engine.encode_prompts(PROMPTS[0])[side]
    expected, last = [], ids[-1]
    eos = engine.pair.aligned.eos_ids
    width = engine.pair.aligned.vocab_size
    for _ in range(12):
        last = int(runner.table[last][:width].argmax())
        if last in eos:
            break
        expected.append(last)
    (out,) = engine.generate(PROMPTS[0], router=side, temperature=0, max_new_tokens=12)[0]
    assert list(out.token_ids) == expected
    other = runners[1 if side == "base" else 0]
    assert engine.last_stats.steps > 1
    assert other.counters().forward_passes == 1  # its prefill: a lazy pair never asked it


@pytest.mark.parametrize("router", ["random", "P-PUNC", "H", "nudging"])
def test_lazy_equals_lock_step_and_batch_equals_alone(table_pair: TinyPair, router: str) -> None:
    engine, _ = _engine(table_pair)
    kwargs = {"router": router, "gamma": 1.5 if router == "H" else 0.5, "n": 2, "seed": 3}
    lazy = engine.generate(PROMPTS, lazy=True, max_new_tokens=16, **kwargs)
    eager = engine.generate(PROMPTS, lazy=False, max_new_tokens=16, **kwargs)
    alone = [engine.generate(p, max_new_tokens=16, **kwargs)[0] for p in PROMPTS]
    key = lambda outs: [[(o.text, o.sources) for o in row] for row in outs]  # noqa: E731
    assert key(lazy) == key(eager) == key(alone)


def test_top_k_distributions_draw_only_listed_tokens(table_pair: TinyPair) -> None:
    engine, runners = _engine(table_pair, top_k=3)
    outs = engine.generate(PROMPTS, router="random", gamma=0.5, n=2, max_new_tokens=12, seed=1)
    assert any(o.num_tokens for row in outs for o in row)
    if engine.shares_tokenizer:  # each id is in the top 3 of its writer after the one before
        prompt_last = {p: engine.encode_prompts(p)["aligned"][-1] for p in PROMPTS}
        for prompt, row in zip(PROMPTS, outs, strict=True):
            for out in row:
                last = prompt_last[prompt]
                for token, source in zip(out.token_ids, out.sources, strict=True):
                    table = runners[0 if source == "base" else 1].table
                    assert token in table[last].topk(3).indices.tolist()
                    last = token


def test_from_runners_refuses_what_is_not_a_runner(tiny_pair: TinyPair) -> None:
    base_tok, aligned_tok = _tokenizers(tiny_pair)
    with pytest.raises(ValueError, match="base must be a ModelRunner"):
        BacoEngine.from_runners(object(), object(), base_tok, aligned_tok)  # type: ignore[arg-type]
    engine, _ = _engine(tiny_pair)
    with pytest.raises(AttributeError, match="runs on a TableRunner"):
        engine.base_model  # noqa: B018
