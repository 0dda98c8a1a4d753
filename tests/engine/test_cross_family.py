"""Cross-family pairs: two tiny models whose tokenizers differ (512 and 640 tokens)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch

from baco_integrations import ROUTER_NAMES, BacoEngine
from baco_integrations.decoding import ModelView, common_prefix, encode_text
from baco_integrations.runners import TransformersRunner

PROMPTS = ["Write a poem about the sea.", "Ideas for a coffee shop", "Why?"]


def _decode(tokenizer, ids) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def test_the_pair_really_differs(cross_engine: BacoEngine) -> None:
    assert not cross_engine.shares_tokenizer
    assert (cross_engine.pair.base.vocab_size, cross_engine.pair.aligned.vocab_size) == (512, 640)
    text = "Ideas for a coffee shop"
    assert encode_text(cross_engine.base_tokenizer, text) != encode_text(
        cross_engine.aligned_tokenizer, text
    )


@pytest.mark.parametrize("router", ROUTER_NAMES)
def test_every_router_runs_and_ids_spell_the_text(cross_engine: BacoEngine, router: str) -> None:
    outs = cross_engine.generate(
        PROMPTS,
        router=router,
        gamma=1.5 if router.startswith("H") else 0.5,
        n=2,
        max_new_tokens=24,
        seed=1,
    )
    assert [len(row) for row in outs] == [2, 2, 2]
    for row in outs:
        for out in row:
            assert out.num_tokens > 0 or out.finish_reason == "stop"
            assert len(out.sources) == len(out.token_ids)
            # token_ids are aligned-vocabulary ids that spell the text exactly
            assert max(out.token_ids, default=0) < 640
            assert _decode(cross_engine.aligned_tokenizer, out.token_ids) == out.text
    if router in ("aligned", "base"):
        assert {s for row in outs for o in row for s in o.sources} <= {router}


def test_aligned_router_greedy_equals_the_aligned_model_alone(cross_engine: BacoEngine) -> None:
    model, tokenizer = cross_engine.aligned_model, cross_engine.aligned_tokenizer
    for prompt in PROMPTS:
        ids = cross_engine.encode_prompts(prompt)["aligned"]
        reference = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=24,
        )[0, len(ids) :].tolist()
        ends = [i for i, t in enumerate(reference) if t in cross_engine.pair.aligned.eos_ids]
        expected = _decode(tokenizer, reference[: ends[0]] if ends else reference)
        (out,) = cross_engine.generate(prompt, router="aligned", temperature=0, max_new_tokens=24)[
            0
        ]
        # The limit counts the reported (re-tokenized) aligned ids, which may spell the text
        # with more ids than the model wrote: the output is the reference, cut there.
        assert out.num_tokens <= 24
        if out.finish_reason == "stop":
            assert out.text == expected
        else:
            assert expected.startswith(out.text) and out.num_tokens >= 24 - 2
        assert cross_engine.last_stats.base_forward_passes == 1  # its prefill only


@pytest.mark.parametrize("router", ["random", "P", "P-PUNC", "H-FC", "nudging"])
def test_lazy_equals_lock_step(cross_engine: BacoEngine, router: str) -> None:
    kwargs = {
        "router": router,
        "gamma": 1.5 if "H" in router else 0.5,
        "n": 3,
        "max_new_tokens": 20,
        "seed": 4,
        "top_k": 50,
    }
    lazy = cross_engine.generate(PROMPTS[:2], lazy=True, **kwargs)
    lazy_stats = cross_engine.last_stats
    eager = cross_engine.generate(PROMPTS[:2], lazy=False, **kwargs)
    eager_stats = cross_engine.last_stats
    assert [[o.text for o in r] for r in lazy] == [[o.text for o in r] for r in eager]
    assert [[o.sources for o in r] for r in lazy] == [[o.sources for o in r] for r in eager]
    assert (
        lazy_stats.base_forward_passes + lazy_stats.aligned_forward_passes
        <= eager_stats.base_forward_passes + eager_stats.aligned_forward_passes
    )
    # a boundary, or a row handed over, shares the step's forward: at most one per model per
    # step (plus the prefill), however the rows' words fall
    for stats in (lazy_stats, eager_stats):
        assert stats.base_forward_passes <= stats.steps + 1
        assert stats.aligned_forward_passes <= stats.steps + 1


class _Recorder:
    """Spies on every re-tokenization (``ModelView.sync``) and every in-process catch-up
    (``TransformersRunner._catch_up``) of a cross-family run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.syncs: list[tuple[list[int], list[int], int, int]] = []
        self.checked_logits = 0
        self.views: dict[int, ModelView] = {}  # by id(runner)
        self.prompts: dict[int, list[list[int]]] = {}  # by id(runner): each row's prompt
        recorder = self
        sync, catch_up = ModelView.sync, TransformersRunner._catch_up
        add_rows, select = TransformersRunner.add_rows, TransformersRunner.select
        release = TransformersRunner.release

        def spy_sync(view: ModelView, row: int, tail: list[int], start: int = 0) -> None:
            recorder.views[id(view.runner)] = view
            before, reused, synced = list(view.rows[row]), view.reused_tokens, view.synced_tokens
            target = before[:start] + tail
            sync(view, row, tail, start)
            if before != target:
                kept, ran = view.reused_tokens - reused, view.synced_tokens - synced
                recorder.syncs.append((before, target, kept, ran))

        def spy_catch_up(runner: TransformersRunner) -> None:
            rows = [r for r, p in enumerate(runner.pending) if p]
            catch_up(runner)
            view = recorder.views.get(id(runner))
            if view is None:
                return
            # each caught-up row's logits equal a fresh forward over prompt + its view
            for row in rows:
                ids = recorder.prompts[id(runner)][row] + view.rows[row]
                with torch.inference_mode():
                    ref = runner.model(torch.tensor([ids])).logits[0, -1]
                torch.testing.assert_close(runner._logits[row], ref.float(), atol=2e-4, rtol=1e-4)
                recorder.checked_logits += 1

        def spy_add_rows(runner, prompts, repeats, capacity, sampling=None):  # each row's prompt
            rows = [list(p) for p, k in zip(prompts, repeats, strict=True) for _ in range(k)]
            recorder.prompts[id(runner)] = recorder.prompts.get(id(runner), []) + rows
            add_rows(runner, prompts, repeats, capacity, sampling)

        def spy_select(runner, keep):  # finished rows leave: follow the prompts of the others
            recorder.prompts[id(runner)] = [recorder.prompts[id(runner)][r] for r in keep]
            select(runner, keep)

        def spy_release(runner):
            recorder.prompts.pop(id(runner), None)
            release(runner)

        monkeypatch.setattr(ModelView, "sync", spy_sync)
        monkeypatch.setattr(TransformersRunner, "release", spy_release)
        monkeypatch.setattr(TransformersRunner, "_catch_up", spy_catch_up)
        monkeypatch.setattr(TransformersRunner, "add_rows", spy_add_rows)
        monkeypatch.setattr(TransformersRunner, "select", spy_select)


def test_retokenization_reuses_the_cache_and_loses_no_text(
    cross_engine: BacoEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _Recorder(monkeypatch)
    outs = cross_engine.generate(
        PROMPTS, router="random", gamma=0.5, n=2, max_new_tokens=32, seed=2
    )
    stats = cross_engine.last_stats
    assert recorder.syncs and recorder.checked_logits
    for before, target, kept, ran in recorder.syncs:
        # what the model had seen is kept up to the longest common prefix and only the
        # differing suffix is sent (plus the last token when the new text ends inside it)
        assert kept == min(common_prefix(before, target), len(target) - 1)
        assert ran == len(target) - kept
    assert stats.base_reused_tokens + stats.aligned_reused_tokens > 0
    assert (stats.base_synced_tokens + stats.aligned_synced_tokens) < sum(
        len(t) for _, t, _, _ in recorder.syncs
    )
    for row in outs:
        for out in row:
            assert _decode(cross_engine.aligned_tokenizer, out.token_ids) == out.text


def test_sync_keeps_the_longest_common_prefix(cross_engine: BacoEngine) -> None:
    """A direct check of one re-tokenization: 5 of 7 tokens match, so 2 run."""
    model = cross_engine.base_model
    runner = TransformersRunner(model, pad_id=0)
    view = ModelView(runner)
    view.add_rows([[1, 2, 3]], [1], capacity=16)
    for token in [10, 11, 12, 13, 14, 15]:
        view.append(0, token)
    runner.distributions([0])
    view.sync(0, [10, 11, 12, 13, 14, 20, 21])
    assert (view.reused_tokens, view.synced_tokens) == (5, 2)
    assert runner.pending[0] == [20, 21]
    logits = runner.distributions([0]).logits
    assert view.rows[0] == [10, 11, 12, 13, 14, 20, 21]
    with torch.inference_mode():
        ref = model(torch.tensor([[1, 2, 3, 10, 11, 12, 13, 14, 20, 21]])).logits[0, -1]
    torch.testing.assert_close(logits[0], ref.float(), atol=2e-4, rtol=1e-4)
    # a target that is a prefix of what was seen re-runs only its last token
    view.sync(0, [10, 11, 12])
    assert (view.reused_tokens, view.synced_tokens) == (5 + 2, 2 + 1)
    assert runner.pending[0] == [12]
    logits = runner.distributions([0]).logits
    with torch.inference_mode():
        ref = model(torch.tensor([[1, 2, 3, 10, 11, 12]])).logits[0, -1]
    torch.testing.assert_close(logits[0], ref.float(), atol=2e-4, rtol=1e-4)
    runner.release()


def test_stop_strings_cut_text_and_ids(cross_engine: BacoEngine) -> None:
    kwargs = {"router": "random", "gamma": 0.5, "max_new_tokens": 40, "seed": 3}
    (full,) = cross_engine.generate(PROMPTS[1], **kwargs)[0]
    words = full.text.split()
    assert len(words) > 3
    stop = words[2][:2] if len(words[2]) >= 2 else words[2]
    cut = full.text.find(stop)
    (out,) = cross_engine.generate(PROMPTS[1], stop=[stop], **kwargs)[0]
    assert out.finish_reason == "stop"
    assert out.text == full.text[:cut]
    assert _decode(cross_engine.aligned_tokenizer, out.token_ids) == out.text
    chunks = list(cross_engine.stream(PROMPTS[1], stop=[stop], **kwargs))
    assert "".join(c.text for c in chunks) == out.text
    assert tuple(t for c in chunks for t in c.token_ids) == out.token_ids


def test_static_cache_is_refused_for_a_cross_family_pair(tiny_cross_pair) -> None:
    with pytest.raises(ValueError, match="cache_implementation='static' needs a shared"):
        BacoEngine.from_pretrained(
            tiny_cross_pair.base_dir, tiny_cross_pair.aligned_dir, cache_implementation="static"
        )


class _RecordingRunner:
    """Just enough of a runner for a ModelView: it records the ids it is sent."""

    def __init__(self) -> None:
        self.sent = 0

    def add_rows(self, *args: Any) -> None:
        pass

    def rewind(self, row: int, keep: int) -> None:
        pass

    def append(self, row: int, ids: Sequence[int]) -> None:
        self.sent += len(ids)


_PARAGRAPH = (
    "Brainstorm: a coffee shop called The Daily Grind, open late; a bakery-café named "
    'Crumb & Co. with 3 kinds of sourdough!  Or "Bean There" (a pun), where every cup is '
    "hand-poured, and a quiet reading room upstairs... Why not? Names: Ember, Roast-House, "
    "Café Lumière, 24/7 Beans, the Night Owl.\nA second line\twith a tab, then more words."
)


def _tokenizers(tiny_cross_pair: Any) -> list[Any]:
    """The tiny cross pair's tokenizers, and the offline pair's where it is prepared."""
    from transformers import AutoTokenizer

    from baco_integrations.offline import default_cache_dir

    folders = [tiny_cross_pair.base_dir, tiny_cross_pair.aligned_dir]
    names = ("gemma-3-270m", "smollm2-135m-instruct")
    offline = [default_cache_dir() / name / "hf" for name in names]
    folders += [f for f in offline if (f / "tokenizer.json").exists()]
    return [AutoTokenizer.from_pretrained(f) for f in folders]


def test_incremental_retokenization_equals_the_whole_text_and_stays_small(
    tiny_cross_pair: Any,
) -> None:
    """Text grows a few characters at a time (as models write it); after every sync the view
    is exactly the whole text's tokenization, while each sync re-encodes about a word."""
    for tokenizer in _tokenizers(tiny_cross_pair):
        runner = _RecordingRunner()
        view = ModelView(runner)  # type: ignore[arg-type]
        view.add_rows([[1]], [1], capacity=1024)
        widest = 0
        for end in range(1, len(_PARAGRAPH) + 1, 3):
            text = _PARAGRAPH[:end]
            before = view.anchors[0][1]
            view.sync_text(0, text, tokenizer)
            assert view.rows[0] == encode_text(tokenizer, text), (tokenizer.name_or_path, text)
            widest = max(widest, len(text) - before)
        assert widest < 40  # about a word and its neighbours, never the whole text
