"""LangChain's standard chat-model test suites, run against ChatBaco on the tiny pair."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from baco_integrations import BacoEngine
from baco_integrations.langchain import ChatBaco


class _BacoStandardParams:
    """What both suites need to know about ChatBaco."""

    _engine: BacoEngine

    @pytest.fixture(autouse=True)
    def _use_engine(self, engine: BacoEngine) -> None:
        # The suites build models from properties, which cannot take fixtures.
        self._engine = engine

    @property
    def chat_model_class(self) -> type[ChatBaco]:
        return ChatBaco

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # Short outputs keep the suites fast on the tiny models.
        return {"engine": self._engine, "max_new_tokens": 8, "seed": 0}

    # Declared honestly: BACO decodes text; it has no tool calling, no structured output,
    # no JSON mode and reads no images, audio or PDFs.
    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_tool_choice(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def supports_image_inputs(self) -> bool:
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
        # The models are loaded once, into the engine; a per-call model= is an error.
        return False


class TestChatBacoUnit(_BacoStandardParams, ChatModelUnitTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        # No max_new_tokens here: these tests pass LangChain's standard max_tokens, its alias,
        # and nothing is generated.
        return {"engine": self._engine}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # timeout, max_retries and api_key belong to remote APIs; a local model has none of
        # them and ChatBaco rejects unknown fields. temperature, max_tokens and stop stay.
        params = dict(super().standard_chat_model_params)
        for remote_only in ("timeout", "max_retries", "api_key"):
            params.pop(remote_only, None)
        return params


class TestChatBacoIntegration(_BacoStandardParams, ChatModelIntegrationTests):
    pass
