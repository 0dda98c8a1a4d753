"""Spans and renderers of BACO's routing (baco_integrations.render)."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

import baco_integrations
from baco_integrations import BacoChunk, BacoEngine, BacoOutput
from baco_integrations.config import Source
from baco_integrations.render import (
    ANSI_ALIGNED,
    ANSI_BASE,
    ANSI_RESET,
    BASE_CLOSE,
    BASE_OPEN,
    Span,
    render,
    render_ansi,
    render_brackets,
    render_html,
    source_spans,
    spans_from_chunks,
)

PROMPT = "Tell me a story."
SETTINGS: dict[str, Any] = {"router": "random", "gamma": 0.5, "n": 2, "max_new_tokens": 30}


def joined(spans: list[Span]) -> str:
    return "".join(text for text, _ in spans)


def assert_well_formed(spans: list[Span]) -> None:
    """No empty span, neighbours always differ in source."""
    assert all(text for text, _ in spans), spans
    assert all(a[1] != b[1] for a, b in zip(spans, spans[1:], strict=False)), spans


def make_output(tokenizer: Any, pieces: list[tuple[str, Source]], text: str | None = None):
    """A BacoOutput whose tokens are each piece tokenized on its own, with that piece's source."""
    ids: list[int] = []
    sources: list[Source] = []
    for piece, source in pieces:
        piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
        ids += piece_ids
        sources += [source] * len(piece_ids)
    full = "".join(piece for piece, _ in pieces)
    assert tokenizer.decode(ids, skip_special_tokens=True) == full  # byte-level BPE round-trips
    return BacoOutput(
        text=full if text is None else text,
        token_ids=tuple(ids),
        sources=tuple(sources),
        finish_reason="length",
    )


@pytest.fixture(scope="module")
def outputs(engine: BacoEngine) -> list[BacoOutput]:
    return engine.generate(PROMPT, **SETTINGS, seed=0)[0]


# ---------------------------------------------------------------------------- source_spans


def test_spans_join_to_the_text(engine: BacoEngine, outputs: list[BacoOutput]) -> None:
    for output in outputs:
        spans = source_spans(output, engine.aligned_tokenizer)
        assert joined(spans) == output.text
        assert_well_formed(spans)
        # Both models wrote something, and spans can only switch where the tokens switch.
        assert {source for _, source in spans} == set(output.sources) == {"base", "aligned"}
        token_switches = sum(
            a != b for a, b in zip(output.sources, output.sources[1:], strict=False)
        )
        assert 1 <= len(spans) - 1 <= token_switches


def test_spans_follow_the_token_sources(engine: BacoEngine) -> None:
    tokenizer = engine.aligned_tokenizer
    pieces: list[tuple[str, Source]] = [
        ("Once", "base"),
        (" upon a", "aligned"),
        (" time,\nthere", "base"),
        (" was <a> & b", "aligned"),
        ("!", "aligned"),
    ]
    output = make_output(tokenizer, pieces)
    assert source_spans(output, tokenizer) == [
        ("Once", "base"),
        (" upon a", "aligned"),
        (" time,\nthere", "base"),
        (" was <a> & b!", "aligned"),
    ]


def test_a_split_character_goes_to_the_token_that_completes_it(engine: BacoEngine) -> None:
    tokenizer = engine.aligned_tokenizer
    char_ids = tokenizer("日", add_special_tokens=False)["input_ids"]
    assert len(char_ids) > 1  # the tiny vocabulary spells it in bytes
    ok_ids = tokenizer("ok", add_special_tokens=False)["input_ids"]
    aligned: tuple[Source, ...] = ("aligned",)
    base: tuple[Source, ...] = ("base",)
    output = BacoOutput(
        text="ok日",
        token_ids=(*ok_ids, *char_ids),
        sources=aligned * len(ok_ids) + base * (len(char_ids) - 1) + aligned,
        finish_reason="length",
    )
    assert source_spans(output, tokenizer) == [("ok日", "aligned")]
    flipped = BacoOutput(
        text="ok日",
        token_ids=output.token_ids,
        sources=aligned * (len(ok_ids) + len(char_ids) - 1) + base,
        finish_reason="length",
    )
    assert source_spans(flipped, tokenizer) == [("ok", "aligned"), ("日", "base")]


@pytest.mark.parametrize(("router", "source"), [("base", "base"), ("aligned", "aligned")])
def test_one_model_gives_one_span(engine: BacoEngine, router: str, source: Source) -> None:
    for output in engine.generate(PROMPT, router=router, n=2, max_new_tokens=30, seed=0)[0]:
        assert set(output.sources) == {source}
        assert output.text
        assert source_spans(output, engine.aligned_tokenizer) == [(output.text, source)]


def test_text_cut_inside_a_token_trims_the_last_span(engine: BacoEngine) -> None:
    tokenizer = engine.aligned_tokenizer
    pieces: list[tuple[str, Source]] = [("Once upon", "base"), (" a time", "aligned")]
    # A stop string " ti" cut the text inside the last tokens: only "Once upon a" is left.
    cut = make_output(tokenizer, pieces, text="Once upon a")
    assert source_spans(cut, tokenizer) == [("Once upon", "base"), (" a", "aligned")]
    # ... or inside the base run: the aligned span disappears.
    assert source_spans(make_output(tokenizer, pieces, text="Once up"), tokenizer) == [
        ("Once up", "base")
    ]
    # Text the ids do not give (past the first difference) joins the last span kept.
    longer = make_output(tokenizer, pieces, text="Once upon a time!!")
    assert source_spans(longer, tokenizer) == [("Once upon", "base"), (" a time!!", "aligned")]
    other = make_output(tokenizer, pieces, text="Once upon a dream")
    assert source_spans(other, tokenizer) == [("Once upon", "base"), (" a dream", "aligned")]
    assert source_spans(make_output(tokenizer, pieces, text=""), tokenizer) == []


def test_stop_strings_still_join_to_the_text(engine: BacoEngine) -> None:
    for stop in (["e"], ["oo"], [" "]):
        for output in engine.generate(PROMPT, **SETTINGS, seed=1, stop=stop)[0]:
            spans = source_spans(output, engine.aligned_tokenizer)
            assert joined(spans) == output.text
            assert_well_formed(spans)


def test_mismatched_output_is_rejected(engine: BacoEngine) -> None:
    bad = BacoOutput(text="x", token_ids=(5, 6), sources=("base",), finish_reason="length")
    with pytest.raises(ValueError, match="2 token ids but 1 sources"):
        source_spans(bad, engine.aligned_tokenizer)
    empty = BacoOutput(text="", token_ids=(), sources=(), finish_reason="length")
    assert source_spans(empty, engine.aligned_tokenizer) == []


def per_character(spans: list[Span]) -> list[Source]:
    return [source for text, source in spans for _ in text]


def test_cross_family_outputs(tiny_cross_pair: Any) -> None:
    """Different tokenizers: the ids are in the aligned vocabulary, one source each.

    The cross-family engine streams text frozen per word, so a U+FFFD that the base model
    wrote (invalid bytes, re-encoded by the aligned tokenizer) comes with the base model's
    chunk; the detokenizer holds it back and gives it to the next token. Every other
    character has the same source both ways.
    """
    engine = BacoEngine.from_pretrained(tiny_cross_pair.base_dir, tiny_cross_pair.aligned_dir)
    outputs = engine.generate(PROMPT, **SETTINGS, seed=0)[0]
    chunks = list(engine.stream(PROMPT, **SETTINGS, seed=0))
    for output in outputs:
        spans = source_spans(output, engine.aligned_tokenizer)
        assert joined(spans) == output.text
        assert_well_formed(spans)
        assert {source for _, source in spans} == set(output.sources) == {"base", "aligned"}
        streamed = spans_from_chunks(chunks, sample_index=output.sample_index)
        assert joined(streamed) == output.text
        pairs = zip(output.text, per_character(spans), per_character(streamed), strict=True)
        assert all(a == b for char, a, b in pairs if char != "\ufffd")


# ------------------------------------------------------------------------------ streaming


def test_stream_gives_the_same_spans_as_generate(
    engine: BacoEngine, outputs: list[BacoOutput]
) -> None:
    chunks = list(engine.stream(PROMPT, **SETTINGS, seed=0))
    for output in outputs:
        expected = source_spans(output, engine.aligned_tokenizer)
        assert spans_from_chunks(chunks, sample_index=output.sample_index) == expected
    with pytest.raises(ValueError, match="sample_index"):
        spans_from_chunks(chunks)


def test_stream_with_a_stop_string_gives_the_same_spans(engine: BacoEngine) -> None:
    settings = {**SETTINGS, "n": 1, "stop": ["oo"]}
    for seed in range(3):
        (output,) = engine.generate(PROMPT, **settings, seed=seed)[0]
        chunks = list(engine.stream(PROMPT, **settings, seed=seed))
        assert spans_from_chunks(chunks) == source_spans(output, engine.aligned_tokenizer)


def test_chunks_are_merged_and_empty_ones_skipped() -> None:
    chunks = [
        BacoChunk(text="", source=None),
        BacoChunk(text="A", source="base"),
        BacoChunk(text=" cat", source="base"),
        BacoChunk(text="", source="aligned"),
        BacoChunk(text=" sat", source="aligned"),
        BacoChunk(text=".", source="base"),
        BacoChunk(text="", source=None, finish_reason="stop"),
    ]
    assert spans_from_chunks(chunks) == [("A cat", "base"), (" sat", "aligned"), (".", "base")]
    assert spans_from_chunks([]) == []
    with pytest.raises(ValueError, match="no source"):
        spans_from_chunks([BacoChunk(text="x", source=None)])


# ------------------------------------------------------------------------------ renderers

SPANS: list[Span] = [
    ("Once", "base"),
    (" upon <a> & time", "aligned"),
    (" there\n  was", "base"),
    (" a cat.\n", "aligned"),
]
TEXT = "Once upon <a> & time there\n  was a cat.\n"


def test_brackets_mark_base_words_outside_whitespace() -> None:
    assert render_brackets(SPANS) == "⟦Once⟧ upon <a> & time ⟦there⟧\n  ⟦was⟧ a cat.\n"
    assert render_brackets([(" \n", "base"), ("hi", "aligned")]) == " \nhi"
    assert render_brackets([("a b ", "base")], markers=("[[", "]]")) == "[[a b]] "
    # Neighbours of one source are one run.
    assert render_brackets([("a", "base"), (" b", "base")]) == "⟦a b⟧"


def test_brackets_round_trip(engine: BacoEngine, outputs: list[BacoOutput]) -> None:
    def unmark(text: str) -> str:
        return text.replace(BASE_OPEN, "").replace(BASE_CLOSE, "")

    assert unmark(render_brackets(SPANS)) == TEXT
    for output in outputs:
        rendered = render_brackets(source_spans(output, engine.aligned_tokenizer))
        assert rendered != output.text  # some base words are marked
        assert unmark(rendered) == output.text


def test_ansi_colours_each_span_and_resets(engine: BacoEngine, outputs: list[BacoOutput]) -> None:
    def strip(text: str) -> str:
        for code in (ANSI_BASE, ANSI_ALIGNED, ANSI_RESET):
            text = text.replace(code, "")
        return text

    rendered = render_ansi(SPANS)
    assert rendered.startswith(ANSI_BASE + "Once" + ANSI_RESET + ANSI_ALIGNED + " upon")
    assert rendered.endswith(ANSI_RESET)
    assert rendered.count(ANSI_BASE) == 2 and rendered.count(ANSI_ALIGNED) == 2
    assert strip(rendered) == TEXT
    assert render_ansi([]) == ""
    for output in outputs:
        rendered = render_ansi(source_spans(output, engine.aligned_tokenizer))
        assert ANSI_BASE in rendered and ANSI_ALIGNED in rendered
        assert rendered.endswith(ANSI_RESET)
        assert strip(rendered) == output.text


def html_spans(page: str) -> list[Span]:
    """The (unescaped) spans inside the text block of a rendered fragment."""
    body = page.split('<div class="baco-text">', 1)[1]
    found = re.findall(r'<span class="baco-(base|aligned)">(.*?)</span>', body, flags=re.S)
    return [(html.unescape(text), source) for source, text in found]


def test_html_escapes_and_keeps_the_text() -> None:
    page = render_html(SPANS, title="Routing <1> & more")
    assert "<a>" not in page and " &amp; " in page and "&lt;a&gt;" in page
    assert "<h3>Routing &lt;1&gt; &amp; more</h3>" in page
    assert page.startswith('<div class="baco-render">') and page.endswith("</div>")
    assert "white-space: pre-wrap" in page and "<style>" in page
    assert '<span class="baco-base">base model (40%)</span>' in page  # legend, char share
    assert '<span class="baco-aligned">aligned model (60%)</span>' in page
    assert html_spans(page) == SPANS
    assert "<h3>" not in render_html(SPANS)
    full = render_html(SPANS, full_page=True)
    assert full.startswith("<!DOCTYPE html>") and "<title>BACO routing</title>" in full
    assert html_spans(full) == SPANS


def test_html_of_a_generated_output(engine: BacoEngine, outputs: list[BacoOutput]) -> None:
    for output in outputs:
        spans = source_spans(output, engine.aligned_tokenizer)
        assert html_spans(render_html(spans)) == spans


# ---------------------------------------------------------------------------- render()


def test_render_dispatches_on_style(engine: BacoEngine, outputs: list[BacoOutput]) -> None:
    tokenizer = engine.aligned_tokenizer
    output = outputs[0]
    spans = source_spans(output, tokenizer)
    assert render(output, tokenizer) == render_brackets(spans)
    assert render(output, tokenizer, style="ansi") == render_ansi(spans)
    assert render(output, tokenizer, style="html") == render_html(spans)
    assert render(spans, style="html") == render_html(spans)
    assert render(SPANS) == render_brackets(SPANS)
    with pytest.raises(ValueError, match="aligned tokenizer"):
        render(output)


def test_bad_style_is_rejected() -> None:
    with pytest.raises(ValueError) as info:
        render(SPANS, style="markdown")  # type: ignore[arg-type]
    message = str(info.value)
    assert "style='markdown'" in message
    assert all(repr(s) in message for s in ("brackets", "ansi", "html"))
    with pytest.raises(ValueError, match="source"):
        render_ansi([("x", "chat")])  # type: ignore[list-item]


def test_public_names_are_exported() -> None:
    for name in ("source_spans", "spans_from_chunks", "render_ansi", "render_brackets"):
        assert name in baco_integrations.__all__
        assert getattr(baco_integrations, name) is globals()[name]
    assert baco_integrations.render_html is render_html
