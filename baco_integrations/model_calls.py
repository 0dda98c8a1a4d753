"""How the engine calls a transformers causal LM, whichever transformers 5.x is installed."""

from __future__ import annotations

import inspect

from transformers import PreTrainedModel


def cache_argument(model: PreTrainedModel) -> str:
    """The keyword of the KV cache in ``model.forward``.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name still works but
    warns on every call); earlier 5.x releases only know ``past_key_values``.
    """
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"
