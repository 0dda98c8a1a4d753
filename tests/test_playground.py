"""The playground page (``/``) driven in a real headless Chromium against the server on the
tiny pair: type a prompt, run n=3, see three samples with coloured base words, a base share
and a mean log-prob, hover a word for its log-prob, run compare mode, save a screenshot.
Skipped when Playwright or Chromium is missing (``.ci/run`` installs both). Also the page's
files and the diversity endpoint over HTTP."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from baco_integrations import BacoEngine
from baco_integrations.server import ServerConfig
from baco_integrations.server.playground import diversity
from baco_integrations.server.testing import LiveServer, running_server
from baco_integrations.testing import HANG_GUARD_S

KEY = "playground-key"
#: A log-prob as the page shows it (a true minus sign, two decimals).
LOGPROB = r"\u2212?\d+\.\d\d"
#: Flags for Chromium on a closed network (no background connections) in a container.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    return (
        os.environ.get("BACO_CHROMIUM")
        or shutil.which("chromium")
        or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    )


@pytest.fixture(scope="module")
def server(engine: BacoEngine) -> Iterator[LiveServer]:
    config = ServerConfig(
        model_name="baco-tiny", api_key=SecretStr(KEY), default_max_tokens=8, max_tokens=64
    )
    with running_server(engine, config) as running:
        yield running


def test_page_and_static_files_are_served_without_a_key(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=HANG_GUARD_S) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "/static/app.js" in page.text and "/static/style.css" in page.text
        assert "//" not in page.text  # nothing from another origin (no CDN)
        assert client.get("/static/app.js").status_code == 200
        assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
        assert client.get("/static/../playground.py").status_code == 404
        assert client.get("/static/index.html").status_code == 404


def test_diversity_endpoint_needs_the_key_and_scores(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=HANG_GUARD_S) as client:
        body = {"samples": ["a b c", "a b d"]}
        assert client.post("/v1/baco/diversity", json=body).status_code == 401
        auth = {"Authorization": f"Bearer {KEY}"}
        scored = client.post("/v1/baco/diversity", json=body, headers=auth)
        assert scored.status_code == 200
        figures = scored.json()
        assert figures["distinct_2"] == pytest.approx(3 / 4)
        assert figures["pairwise_similarity"] == pytest.approx(1 / 3)
        bad = client.post("/v1/baco/diversity", json={"samples": []}, headers=auth)
        assert bad.status_code == 400


def test_diversity_figures_edge_cases() -> None:
    assert diversity(["same words here", "same words here"])["pairwise_similarity"] == 1.0
    assert diversity(["one"]) == {
        "samples": 1,
        "distinct_1": 1.0,
        "distinct_2": 0.0,
        "pairwise_similarity": 0.0,
    }


def test_playground_in_a_headless_browser(server: LiveServer, tmp_path: Path) -> None:
    pytest.importorskip("playwright.sync_api")
    if chromium_path() is None:
        pytest.skip("no Chromium (apt-get install chromium)")
    shot = tmp_path / "playground.png"
    drive(server.url, KEY, "baco-tiny", shot, max_tokens=12)
    assert shot.stat().st_size > 0


def drive(
    url: str,
    key: str | None,
    model: str,
    screenshot: Path,
    max_tokens: int,
    dark: bool = False,
    timeout_s: float = HANG_GUARD_S,
) -> None:
    """What a user does on the page, checked at each step; a screenshot after compare mode."""
    from playwright import sync_api

    executable = chromium_path()
    assert executable is not None
    timeout_ms = timeout_s * 1000
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(
                viewport={"width": 1280, "height": 900},
                color_scheme="dark" if dark else "light",
            )
            page.set_default_timeout(timeout_ms)
            page.goto(url + "/")
            if key is not None:  # the server has a key: the page asks for it
                page.wait_for_selector("#status[data-state=error]")
                page.fill("#api-key", key)
                page.press("#api-key", "Tab")
            page.wait_for_selector(f"#model:text('{model}')")
            page.fill("#prompt", "Brainstorm a name for a night bakery.")
            page.fill("#n", "3")
            page.fill("#max-tokens", str(max_tokens))
            page.fill("#seed", "7")
            page.click("#run")
            page.wait_for_selector("#status[data-state=done]")
            baco = page.locator(".group[data-kind=baco] .sample")
            assert baco.count() == 3
            assert page.locator(".group[data-kind=baco] .sample[data-done=true]").count() == 3
            for i in range(3):
                assert baco.nth(i).locator(".share strong").inner_text().endswith("%")
                shown = baco.nth(i).locator(".lp").inner_text()
                assert re.fullmatch(f"aligned log-prob {LOGPROB}/token", shown), shown
            check_token_titles(page)
            base_words = page.locator(".group[data-kind=baco] .w.base")
            assert base_words.count() > 0
            colour = base_words.first.evaluate("e => getComputedStyle(e).backgroundColor")
            assert colour not in ("rgba(0, 0, 0, 0)", "transparent")
            exported = page.evaluate("exported()")
            (group,) = exported["groups"]
            assert group["request"]["body"]["seed"] == 7
            assert group["request"]["body"]["logprobs"] is True
            for sample in group["samples"]:
                assert "".join(s["text"] for s in sample["spans"]) == sample["text"]
                assert sample["base_fraction"] is not None
                assert isinstance(sample["aligned_mean_logprob"], float)
                assert sample["logprobs"] and all(e["logprob"] <= 0 for e in sample["logprobs"])

            # Compare mode (run from the keyboard): the aligned model alone beside BACO, with
            # diversity figures for both.
            page.check("#compare")
            page.press("#prompt", "Control+Enter")
            page.wait_for_selector("#status[data-state=done]")
            aligned = page.locator(".group[data-kind=aligned] .sample[data-done=true]")
            assert aligned.count() == 3
            assert page.locator(".group[data-kind=aligned] .w.base").count() == 0
            assert page.locator(".figure[data-name=distinct-2]").count() == 2
            means = page.locator(".figure[data-name='mean aligned log-prob']")
            assert means.count() == 2
            for i in range(2):
                shown = means.nth(i).inner_text()
                assert re.fullmatch(f"mean aligned log-prob {LOGPROB}/token", shown), shown
            page.screenshot(path=str(screenshot), full_page=True)

            # Download the samples as JSON, with their provenance.
            with page.expect_download() as download:
                page.click("#download")
            saved = json.loads(Path(download.value.path()).read_text())
            assert [g["kind"] for g in saved["groups"]] == ["baco", "aligned"]
            assert saved["groups"][1]["request"]["body"]["router"] == "aligned"
            assert saved["groups"][1]["request"]["body"]["seed"] == 7
            assert all(len(g["samples"]) == 3 for g in saved["groups"])

            # The base-share slider re-runs with the same seed; the request asks for the share.
            page.uncheck("#compare")
            page.fill("#guard", "0.1")
            page.evaluate(
                "() => { const g = document.getElementById('base-share'); g.value = '0.4';"
                " g.dispatchEvent(new Event('change')); }"
            )
            page.wait_for_selector(".group[data-kind=baco] h2:text('base share 40%')")
            page.wait_for_selector("#status[data-state=done]")
            body = page.evaluate("exported()")["groups"][0]["request"]["body"]
            assert body["seed"] == 7 and body["base_share"] == 0.4 and body["guard"] == 0.1
            assert "gamma" not in body
            for i in range(3):  # each sample's realized share and quality signal
                assert baco.nth(i).locator(".share strong").inner_text().endswith("%")
                assert re.fullmatch(
                    f"aligned log-prob {LOGPROB}/token", baco.nth(i).locator(".lp").inner_text()
                )

            # Advanced: a fixed γ instead; its slider re-runs with the same seed too.
            page.click("#advanced summary")
            page.check("#use-gamma")
            page.fill("#guard", "0")
            page.evaluate(
                "() => { const g = document.getElementById('gamma'); g.value = '0.2';"
                " g.dispatchEvent(new Event('change')); }"
            )
            page.wait_for_selector(".group[data-kind=baco] h2:text('γ 0.20')")
            page.wait_for_selector("#status[data-state=done]")
            body = page.evaluate("exported()")["groups"][0]["request"]["body"]
            assert body["seed"] == 7 and body["gamma"] == 0.2
            assert "base_share" not in body and "guard" not in body

            # Plain mode: the legacy endpoint's log-probs (logprobs=k) show the same way.
            page.check("input[name=mode][value=plain]")
            page.click("#run")
            page.wait_for_selector("#status[data-state=done]")
            (plain,) = page.evaluate("exported()")["groups"]
            assert plain["request"]["endpoint"] == "/v1/completions"
            assert isinstance(plain["request"]["body"]["logprobs"], int)
            for sample in plain["samples"]:
                assert isinstance(sample["aligned_mean_logprob"], float)
            check_token_titles(page)
        finally:
            browser.close()


def check_token_titles(page: Any) -> None:
    """Each word is drawn per token: hovering one shows its log-prob and its writer, and the
    page's text is unchanged by the cut (``page``: a Playwright page)."""
    tokens = page.locator(".group[data-kind=baco] .w.tok")
    assert tokens.count() > 0
    word = tokens.first
    word.hover()
    title = word.get_attribute("title") or ""
    assert re.search(f"log-prob {LOGPROB}", title), title
    assert re.search("written by the (base|aligned) model", title), title
    # both models' own log-probs of the word
    assert re.search(f"aligned model {LOGPROB}, base model {LOGPROB}", title), title
    assert float(word.get_attribute("data-logprob") or "nan") <= 0.0
    for sample in page.evaluate("exported()")["groups"][0]["samples"]:
        card = page.locator(f".group[data-kind=baco] .sample[data-index='{sample['index']}']")
        assert card.locator(".text").evaluate("e => e.textContent") == sample["text"]


if __name__ == "__main__":
    # The docs' screenshot, against a running `baco serve`:
    #   python tests/test_playground.py http://127.0.0.1:8000 MODEL docs/images/playground.png
    import sys

    url, model, out = sys.argv[1:4]
    drive(
        url,
        os.environ.get("BACO_API_KEY"),
        model,
        Path(out),
        max_tokens=40,
        dark=os.environ.get("DARK") == "1",
        timeout_s=600,
    )
