"""How the engine calls a transformers causal LM, whichever transformers 5.x is installed.

Shared by both decoding modes (one tokenizer, or text across tokenizers).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from transformers import Cache, PreTrainedModel


def cache_argument(model: PreTrainedModel) -> str:
    """The keyword of the KV cache in ``model.forward``.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name still works but
    warns on every call); earlier 5.x releases only know ``past_key_values``.
    """
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def input_device(model: PreTrainedModel) -> torch.device:
    """Where the model takes its input ids (its embedding's device, also when sharded)."""
    return model.get_input_embeddings().weight.device


def left_pad(prompts: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts as one batch padded on the left: ids and attention mask, ``[rows, width]``."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


@torch.inference_mode()
def run_prompts(
    model: PreTrainedModel, prompts: Sequence[list[int]], pad_id: int, cache: Cache
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the left-padded prompts into ``cache``; return the attention mask (on the model's
    device) and each prompt's next-token logits (``[rows, model vocabulary]``)."""
    ids, mask = left_pad(prompts, pad_id)
    device = input_device(model)
    ids, mask = ids.to(device), mask.to(device)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=(mask.cumsum(-1) - 1).clamp_min(0),
        **{cache_argument(model): cache},
        use_cache=True,
        logits_to_keep=1,
    )
    return mask, out.logits[:, -1]
