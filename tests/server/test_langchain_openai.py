"""LangChain's standard chat-model integration tests, run against ``ChatOpenAI`` pointed at
the server (the tiny pair behind it): what an app gets with no BACO package on its side."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_openai import ChatOpenAI
from langchain_tests.integration_tests import ChatModelIntegrationTests

from baco_integrations import BacoEngine
from baco_integrations.server import ServerConfig
from baco_integrations.server.testing import LiveServer, running_server
from baco_integrations.testing import HANG_GUARD_S


class TestChatOpenAIOnBaco(ChatModelIntegrationTests):
    _server: LiveServer

    @pytest.fixture(scope="class")
    def structured_server(
        self, engine: BacoEngine, test_config: ServerConfig
    ) -> Iterator[LiveServer]:
        """The suite's server, allowing the structured-output tests' long budget."""
        with running_server(engine, test_config.updated(max_tokens=480)) as running:
            yield running

    @pytest.fixture(autouse=True)
    def _use_server(self, structured_server: LiveServer) -> None:
        # The suite builds models from properties, which cannot take fixtures.
        self._server = structured_server

    @property
    def chat_model_class(self) -> type[ChatOpenAI]:
        return ChatOpenAI

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "model": "baco-tiny",
            "base_url": self._server.base_url,
            "api_key": "test-key",
            "max_tokens": 8,  # short outputs keep the suite fast on the tiny models
            "seed": 0,
            # Whether a random tiny model closes its JSON within the budget depends on the
            # tokens drawn; these seeded verdicts were set with P-PUNC at γ 0.5 (the default
            # before base_share 0.2), so the suite pins that routing.
            "extra_body": {"gamma": 0.5},
            "stream_usage": True,  # ChatOpenAI asks for usage in streams only from api.openai.com
            "max_retries": 0,  # a failure shows at once (a 400 is never retried anyway)
            "timeout": HANG_GUARD_S,
            # langchain-openai caches one async client per base_url, bound to the event loop
            # of its first use; each test runs on its own loop, so each model gets its own.
            "http_async_client": httpx.AsyncClient(timeout=HANG_GUARD_S),
        }

    # Declared honestly: the server calls tools (under the tools' grammar) and reads no
    # images, audio or PDFs. Its structured output is response_format (decoding under the JSON
    # schema). The suite's tool tests check what a model understands (the argument 3, an
    # agent's answer) within max_tokens=8, which the random tiny model cannot show: they are
    # off here; tests/server/test_tools.py checks the server's calls, ChatOpenAI.bind_tools
    # included, and tests/langchain/test_standard.py runs the suite's tool tests on ChatBaco.
    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_tool_choice(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def structured_output_kwargs(self) -> dict[str, Any]:
        # The suite's Joke schemas have unbounded strings, and a random tiny model closes a
        # string only when it happens to draw the quote: a budget near the 512-token window
        # lets every seeded sample of these tests finish (the rest of the suite keeps 8).
        return {"method": "json_schema", "max_tokens": 480}

    @property
    def supports_json_mode(self) -> bool:
        # json_mode decodes any JSON object, but test_json_mode asks in the prompt alone for
        # the keys "setup" and "punchline": a random tiny model does not follow that.
        return False

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def supports_image_urls(self) -> bool:
        return False

    @property
    def supports_audio_inputs(self) -> bool:
        return False

    @property
    def supports_pdf_inputs(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return False  # one pair, one model name

    @pytest.mark.xfail(
        reason="ChatOpenAI turns a pydantic v1 schema into a forced tool call; the Joke "
        "schema's unbounded strings run the random tiny model into its 512-token window, so "
        "the call is cut (finish_reason 'length') and nothing parses",
        raises=AssertionError,
        strict=True,
    )
    def test_structured_output_pydantic_2_v1(self, model: BaseChatModel) -> None:
        super().test_structured_output_pydantic_2_v1(model)
