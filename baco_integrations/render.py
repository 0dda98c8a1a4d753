"""Show BACO's routing: which words the base model wrote and which the aligned model wrote.

A BACO sample is a sequence of tokens, each written by one of the two models. This module
turns a sample into *spans*, maximal runs of text from one source, and renders them:

* :func:`source_spans` splits a finished :class:`~baco_integrations.outputs.BacoOutput`
  (decoding its ``token_ids`` with the aligned tokenizer, one token at a time).
* :func:`spans_from_chunks` merges the :class:`~baco_integrations.outputs.BacoChunk` stream of
  one sample.
* :func:`render_brackets` (plain text), :func:`render_ansi` (terminal colours) and
  :func:`render_html` (an HTML fragment or page) draw spans; :func:`render` picks one by name.

Spans are ``(text, source)`` pairs with ``source`` ``"base"`` or ``"aligned"``. Their texts,
joined, are exactly the sample's text. A token whose text is not complete yet (part of a
multi-byte character) contributes no text on its own; its bytes are attributed to the token
that completes the character, which is also what streaming does (a chunk's ``source`` is its
last token's).

Example::

    from baco_integrations.render import render, source_spans

    out = engine.generate("Name a colour.", router="P", seed=0)[0][0]
    print(render(out, engine.aligned_tokenizer, style="ansi"))
    spans = source_spans(out, engine.aligned_tokenizer)  # [("Blue", "base"), (" is", ...), ...]
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from typing import Literal, get_args

from transformers import PreTrainedTokenizerBase

from .config import Source
from .detokenize import IncrementalDetokenizer
from .outputs import BacoChunk, BacoOutput

__all__ = [
    "ANSI_ALIGNED",
    "ANSI_BASE",
    "ANSI_RESET",
    "BASE_CLOSE",
    "BASE_OPEN",
    "RENDER_STYLES",
    "RenderStyle",
    "Span",
    "render",
    "render_ansi",
    "render_brackets",
    "render_html",
    "source_spans",
    "spans_from_chunks",
]

Span = tuple[str, Source]
"""A run of text and the model that wrote it."""

RenderStyle = Literal["brackets", "ansi", "html"]
RENDER_STYLES: tuple[str, ...] = get_args(RenderStyle)

#: Markers around base-model text in :func:`render_brackets` (mathematical white square
#: brackets, U+27E6/U+27E7: readable, and practically never produced by a model).
BASE_OPEN = "\u27e6"
BASE_CLOSE = "\u27e7"

#: SGR codes of :func:`render_ansi`: base text yellow, aligned text cyan.
ANSI_BASE = "\x1b[33m"
ANSI_ALIGNED = "\x1b[36m"
ANSI_RESET = "\x1b[0m"

_SOURCES: tuple[str, ...] = get_args(Source)


# --------------------------------------------------------------------------------- spans


def _merge(spans: Iterable[tuple[str, Source]]) -> list[Span]:
    """Drop empty texts and join neighbours of the same source (checking each source)."""
    merged: list[Span] = []
    for text, source in spans:
        if source not in _SOURCES:
            raise ValueError(f"span source must be one of {_SOURCES}, got {source!r}")
        if not text:
            continue
        if merged and merged[-1][1] == source:
            merged[-1] = (merged[-1][0] + text, source)
        else:
            merged.append((text, source))
    return merged


def source_spans(output: BacoOutput, tokenizer: PreTrainedTokenizerBase) -> list[Span]:
    """Split ``output.text`` into maximal runs by the model that wrote them.

    ``tokenizer`` must be the aligned tokenizer (``engine.aligned_tokenizer``): the output's
    ``token_ids`` are in its vocabulary. Each id is pushed through an
    :class:`~baco_integrations.detokenize.IncrementalDetokenizer`; its text delta goes to that
    token's source, and text still held back at the end (an incomplete character) goes to the
    last token's source. A U+FFFD replacement character in the text (bytes that form no
    character) is held back like an incomplete character, so it goes to the next token that
    writes text; the same-tokenizer engine streams it that way too, while the cross-family
    engine's chunks give it to the model that wrote it.

    The spans always join to exactly ``output.text``. When the decoded ids do not reproduce
    it, the decoded text is cut where the two first differ and the rest of ``output.text`` is
    appended to the last remaining span. That happens when a stop string ended the text inside
    a token (the token is kept, the text after the stop string is not). A tokenizer other than
    the aligned one is not detected: the spans still join to the text, but their sources are
    wrong past the first differing character.
    """
    if len(output.token_ids) != len(output.sources):
        raise ValueError(
            f"output has {len(output.token_ids)} token ids but {len(output.sources)} sources"
        )
    detokenizer = IncrementalDetokenizer(tokenizer)
    pieces = [
        (detokenizer.push(int(token_id)), source)
        for token_id, source in zip(output.token_ids, output.sources, strict=True)
    ]
    if output.sources:
        pieces.append((detokenizer.flush(), output.sources[-1]))
    spans = _merge(pieces)

    # Reconcile with output.text: keep the common prefix, then append what the text adds.
    decoded = "".join(text for text, _ in spans)
    if decoded == output.text:
        return spans
    common = len(os.path.commonprefix([decoded, output.text]))
    kept: list[Span] = []
    used = 0
    for text, source in spans:
        if used >= common:
            break
        kept.append((text[: common - used], source))
        used += len(kept[-1][0])
    rest = output.text[common:]
    if rest:
        if kept:
            kept[-1] = (kept[-1][0] + rest, kept[-1][1])
        elif output.sources:  # nothing decoded in common: the last token's source
            kept.append((rest, output.sources[-1]))
        else:
            raise ValueError("output has text but no tokens, so its text has no source")
    return kept


def spans_from_chunks(
    chunks: Iterable[BacoChunk], *, sample_index: int | None = None
) -> list[Span]:
    """Merge one sample's streamed chunks into spans (chunks with empty text are skipped).

    ``engine.stream`` interleaves the chunks of its ``n`` samples; pass ``sample_index`` to
    take one of them. Without it, chunks of more than one sample raise ``ValueError``.
    A chunk's text is attributed to its ``source`` (the model of its last token).
    """
    selected: list[Span] = []
    seen: set[int] = set()
    for chunk in chunks:
        if sample_index is not None and chunk.sample_index != sample_index:
            continue
        seen.add(chunk.sample_index)
        if not chunk.text:
            continue
        if chunk.source is None:
            raise ValueError(f"chunk with text {chunk.text!r} has no source")
        selected.append((chunk.text, chunk.source))
    if len(seen) > 1:
        raise ValueError(f"chunks come from samples {sorted(seen)}; pass sample_index= to pick one")
    return _merge(selected)


# ----------------------------------------------------------------------------- renderers


def _split_whitespace(text: str) -> tuple[str, str, str]:
    """``(leading whitespace, core, trailing whitespace)`` of ``text``."""
    core = text.strip()
    if not core:
        return text, "", ""
    start = len(text) - len(text.lstrip())
    return text[:start], core, text[start + len(core) :]


def render_brackets(
    spans: Iterable[tuple[str, Source]], *, markers: tuple[str, str] = (BASE_OPEN, BASE_CLOSE)
) -> str:
    """Plain text with base-model text in ``⟦…⟧`` and aligned-model text left as it is.

    Whitespace stays outside the markers, and each line of a base run is marked on its own,
    so ``" the cat\\nsat"`` from the base model renders as ``" ⟦the cat⟧\\n⟦sat⟧"``. A base run
    of whitespace only gets no markers. Removing every marker gives back the
    text; pass other ``markers`` (opening, closing) if the text itself may contain ``⟦`` or
    ``⟧``.
    """
    opening, closing = markers
    parts: list[str] = []
    for text, source in _merge(spans):
        if source == "aligned":
            parts.append(text)
            continue
        for line in text.splitlines(keepends=True):
            lead, core, trail = _split_whitespace(line)
            parts.append(f"{lead}{opening}{core}{closing}{trail}" if core else lead)
    return "".join(parts)


def render_ansi(
    spans: Iterable[tuple[str, Source]], *, base: str = ANSI_BASE, aligned: str = ANSI_ALIGNED
) -> str:
    """Text for a terminal: base-model text in yellow, aligned-model text in cyan.

    Every span starts with its colour code and ends with :data:`ANSI_RESET`, so the terminal
    is back to its default colour after the text (and after any prefix of it).
    """
    colours = {"base": base, "aligned": aligned}
    return "".join(f"{colours[source]}{text}{ANSI_RESET}" for text, source in _merge(spans))


_HTML_STYLE = """\
.baco-render { font-family: ui-sans-serif, system-ui, sans-serif; line-height: 1.5; }
.baco-render .baco-text { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0.5em 0; }
.baco-render .baco-base { background: #ffe8a3; color: #4a3500; border-radius: 2px; }
.baco-render .baco-aligned { background: #cde8ff; color: #00325c; border-radius: 2px; }
.baco-render .baco-legend { font-size: 0.85em; color: #555; }
.baco-render .baco-legend span { padding: 0 0.4em; margin-right: 0.5em; }"""


def render_html(
    spans: Iterable[tuple[str, Source]], title: str | None = None, *, full_page: bool = False
) -> str:
    """An HTML fragment: each span in ``<span class="baco-base">`` or ``"baco-aligned"``.

    The fragment is one ``<div class="baco-render">`` holding its own ``<style>``, an
    optional ``<h3>`` ``title``, a legend (with each model's share of the characters) and the
    text, html-escaped, in a ``white-space: pre-wrap`` block so newlines and spaces show as
    they are. With ``full_page=True`` it is wrapped in a complete HTML document.
    """
    merged = _merge(spans)
    total = sum(len(text) for text, _ in merged)
    share = {
        source: sum(len(t) for t, s in merged if s == source) / total if total else 0.0
        for source in _SOURCES
    }
    body = "".join(
        f'<span class="baco-{source}">{html.escape(text, quote=False)}</span>'
        for text, source in merged
    )
    lines = ['<div class="baco-render">', f"<style>\n{_HTML_STYLE}\n</style>"]
    if title is not None:
        lines.append(f"<h3>{html.escape(title)}</h3>")
    lines.append(
        '<div class="baco-legend">'
        f'<span class="baco-base">base model ({share["base"]:.0%})</span>'
        f'<span class="baco-aligned">aligned model ({share["aligned"]:.0%})</span>'
        "</div>"
    )
    lines.append(f'<div class="baco-text">{body}</div>')
    lines.append("</div>")
    fragment = "\n".join(lines)
    if not full_page:
        return fragment
    page_title = html.escape(title if title is not None else "BACO routing")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{page_title}</title>\n</head>\n<body>\n{fragment}\n</body>\n</html>\n"
    )


def render(
    output_or_spans: BacoOutput | Sequence[tuple[str, Source]],
    tokenizer: PreTrainedTokenizerBase | None = None,
    style: RenderStyle = "brackets",
) -> str:
    """Render a :class:`BacoOutput` (needs the aligned ``tokenizer``) or spans in ``style``.

    ``style`` is ``"brackets"`` (:func:`render_brackets`), ``"ansi"`` (:func:`render_ansi`)
    or ``"html"`` (:func:`render_html`); anything else raises ``ValueError``.
    """
    if style not in RENDER_STYLES:
        raise ValueError(
            f"style={style!r} is not a known style; allowed values: "
            + ", ".join(repr(s) for s in RENDER_STYLES)
        )
    if isinstance(output_or_spans, BacoOutput):
        if tokenizer is None:
            raise ValueError(
                "rendering a BacoOutput needs the aligned tokenizer (engine.aligned_tokenizer)"
            )
        spans = source_spans(output_or_spans, tokenizer)
    else:
        spans = list(output_or_spans)
    if style == "ansi":
        return render_ansi(spans)
    if style == "html":
        return render_html(spans)
    return render_brackets(spans)
