"""Per-response quality: a reward model's score and a judge LM's mean token log-probability.

Both scorers load their model once (at construction, or take an already-loaded one) and score
``(prompt, response)`` pairs in batches with :meth:`score`, which returns a float64 array with
one value per pair. Higher = better for both.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ..loading import load_causal_lm, resolve_dtype

#: Plain-text rendering of a pair when the reward tokenizer has no chat template.
DEFAULT_REWARD_TEMPLATE = "{prompt}\n\n{response}"
#: Plain-text rendering of the prompt (the response follows) when the judge has no chat
#: template; matches the reward template so both scorers see the same text.
DEFAULT_JUDGE_PROMPT_TEMPLATE = "{prompt}\n\n"


def _check_pairs(prompts: Sequence[str], responses: Sequence[str]) -> None:
    if isinstance(prompts, str) or isinstance(responses, str):
        raise TypeError("prompts and responses must be sequences of strings")
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")


def _adopt(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    device: str | torch.device | None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """An already-loaded model (moved to ``device`` if one is given) and its tokenizer."""
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(model.name_or_path)
    if device is not None:
        model = model.to(device)  # type: ignore[arg-type]  # transformers' stub for .to is off
    return model.eval(), tokenizer


def _load_judge(
    model_or_path: str | os.PathLike[str] | PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    device: str | torch.device | None,
    dtype: torch.dtype | str | None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM judge: a loaded one, or one loaded from a directory, hub id or ``.gguf``
    file by the package's one loader (:func:`~baco_integrations.loading.load_causal_lm`)."""
    if isinstance(model_or_path, PreTrainedModel):
        return _adopt(model_or_path, tokenizer, device)
    # float32 by default: scores are compared across methods, so no bf16 rounding noise.
    model, own_tokenizer = load_causal_lm(
        model_or_path, device=device or "cpu", dtype=dtype or torch.float32
    )
    return model, tokenizer if tokenizer is not None else own_tokenizer


def _load_reward_model(
    model_or_path: str | os.PathLike[str] | PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    device: str | torch.device | None,
    dtype: torch.dtype | str | None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A sequence-classification reward model: a loaded one, or one loaded from a path.

    ``load_causal_lm`` loads causal LMs only, so this class is loaded here; its dtype is
    resolved as everywhere else (:func:`~baco_integrations.loading.resolve_dtype`).
    """
    if isinstance(model_or_path, PreTrainedModel):
        return _adopt(model_or_path, tokenizer, device)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(model_or_path)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_or_path, dtype=resolve_dtype(dtype or torch.float32, device or "cpu")
    )
    return model.to(device or "cpu").eval(), tokenizer


class RewardModelScorer:
    """Scores pairs with a ``AutoModelForSequenceClassification`` reward model.

    Parameters
    ----------
    model_id_or_path
        Hub id or local directory, or an already-loaded model (then pass ``tokenizer`` or let it
        be loaded from ``model.name_or_path``).
    tokenizer
        Optional tokenizer; loaded from the model when omitted.
    device
        ``None``: ``"cpu"`` when loading, the model's own device for a loaded model.
    batch_size
        Pairs per forward pass.
    dtype
        Load dtype: a ``torch.dtype``, a name (``"float32"``, ``"bfloat16"``...) or ``"auto"``
        (bfloat16 on CUDA, float32 elsewhere), as
        :func:`~baco_integrations.loading.resolve_dtype` reads it. ``None``: float32, so that
        scores compared across methods carry no bf16 rounding noise. Ignored for a loaded
        model.
    label_index
        Which logit is the reward. ``None`` requires ``num_labels == 1`` (a scalar reward head,
        the usual case); a model with several labels raises unless you choose one here
        (e.g. the "good" class of a classifier).
    template
        Rendering of a pair when the tokenizer has no chat template.

    Input text: with a chat template, ``[{"role": "user", "content": prompt},
    {"role": "assistant", "content": response}]`` rendered by the template (no generation
    prompt) and tokenised without extra special tokens (the template carries them, as
    ``apply_chat_template(tokenize=True)`` does); otherwise ``template.format(prompt=...,
    response=...)`` tokenised with the tokenizer's special tokens. Batches are right-padded;
    transformers pools the logit of the last non-pad token. A tokenizer without a pad token
    gets its EOS as pad (then trailing EOS tokens are treated as padding, identically for any
    batch size).
    """

    def __init__(
        self,
        model_id_or_path: str | os.PathLike[str] | PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        dtype: torch.dtype | str | None = None,
        label_index: int | None = None,
        template: str = DEFAULT_REWARD_TEMPLATE,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer = _load_reward_model(model_id_or_path, tokenizer, device, dtype)
        num_labels = self.model.config.num_labels
        if num_labels is None:
            raise ValueError("the reward model's config sets no num_labels")
        if label_index is None:
            if num_labels != 1:
                raise ValueError(
                    f"the reward model has num_labels={num_labels}; pass label_index= to pick "
                    "the logit that is the reward"
                )
            label_index = 0
        elif not 0 <= label_index < num_labels:
            raise ValueError(f"label_index {label_index} out of range for {num_labels} labels")
        self.label_index = label_index
        self.batch_size = batch_size
        self.template = template
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Sequence-classification heads find each row's last token through pad_token_id; without
        # it transformers refuses batches larger than one.
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def render(self, prompt: str, response: str) -> str:
        """The text the reward model reads for one pair."""
        if self.tokenizer.chat_template:
            messages = [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": response},
            ]
            return str(self.tokenizer.apply_chat_template(messages, tokenize=False))
        return self.template.format(prompt=prompt, response=response)

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Reward of each pair, shape ``(len(prompts),)``, float64."""
        _check_pairs(prompts, responses)
        texts = [self.render(p, r) for p, r in zip(prompts, responses, strict=True)]
        add_special = not self.tokenizer.chat_template
        out = np.empty(len(texts), dtype=np.float64)
        device = self.model.device
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[start : start + self.batch_size],
                add_special_tokens=add_special,
                padding=True,
                # Right padding keeps each row's positions 0..L-1, as when scored alone.
                padding_side="right",
                return_tensors="pt",
            ).to(device)
            logits = self.model(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
            ).logits
            out[start : start + len(logits)] = logits[:, self.label_index].float().cpu().numpy()
        return out


class LogProbScorer:
    """Mean token log-probability of the response given the prompt under a causal LM judge.

    ``score = (1/T) * sum_t log p(y_t | x, y_<t)`` over the ``T`` response tokens (natural log).
    ``x`` is the prompt rendered with the judge's chat template (one user turn plus the
    generation prompt, tokenised without extra special tokens) or, without a template,
    ``prompt_template.format(prompt=...)`` tokenised with the tokenizer's special tokens (BOS).
    The response is tokenised on its own, without special tokens, and appended, so its tokens
    are exactly the ones scored; no end-of-turn token is scored. Batches are right-padded with
    an attention mask (padding after a row cannot change its logits under a causal mask).

    An empty response (0 tokens) has no mean: its score is NaN and a ``RuntimeWarning`` is
    issued; aggregate with ``np.nanmean`` or drop it.

    Parameters
    ----------
    model_or_path
        Hub id or local directory, or an already-loaded causal LM.
    tokenizer, device, batch_size, dtype
        As for :class:`RewardModelScorer`.
    prompt_template
        Prompt rendering when the tokenizer has no chat template.
    """

    def __init__(
        self,
        model_or_path: str | os.PathLike[str] | PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        dtype: torch.dtype | str | None = None,
        prompt_template: str = DEFAULT_JUDGE_PROMPT_TEMPLATE,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer = _load_judge(model_or_path, tokenizer, device, dtype)
        self.batch_size = batch_size
        self.prompt_template = prompt_template

    def prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of the rendered prompt (the context of the first response token)."""
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            text = self.prompt_template.format(prompt=prompt)
            ids = self.tokenizer(text)["input_ids"]
        if not ids:
            raise ValueError(
                "the rendered prompt has no tokens; the first response token would have no context"
            )
        return list(ids)

    def response_ids(self, response: str) -> list[int]:
        """Token ids of the response (the scored tokens)."""
        return list(self.tokenizer(response, add_special_tokens=False)["input_ids"])

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Mean response-token log-probability of each pair, shape ``(len(prompts),)``."""
        _check_pairs(prompts, responses)
        rows = [
            (self.prompt_ids(p), self.response_ids(r))
            for p, r in zip(prompts, responses, strict=True)
        ]
        out = np.full(len(rows), np.nan, dtype=np.float64)
        empty = [i for i, (_, resp) in enumerate(rows) if not resp]
        if empty:
            warnings.warn(
                f"{len(empty)} empty response(s) have no tokens to score; their log-prob is NaN",
                RuntimeWarning,
                stacklevel=2,
            )
        # Longest first so that each batch holds similar lengths (less padding).
        order = sorted(
            (i for i, (_, resp) in enumerate(rows) if resp),
            key=lambda i: len(rows[i][0]) + len(rows[i][1]),
            reverse=True,
        )
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            # Any id works: padded positions are masked and never scored.
            pad_id = self.tokenizer.eos_token_id or 0
        device = self.model.device
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            seqs = [rows[i][0] + rows[i][1] for i in batch]
            width = max(len(s) for s in seqs)
            input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(seqs), width), dtype=torch.long)
            for b, seq in enumerate(seqs):
                input_ids[b, : len(seq)] = torch.tensor(seq)
                attention[b, : len(seq)] = 1
            logits = self.model(
                input_ids=input_ids.to(device), attention_mask=attention.to(device)
            ).logits
            for b, i in enumerate(batch):
                n_prompt, n_resp = len(rows[i][0]), len(rows[i][1])
                # Logits at position t predict token t + 1; only the response rows are
                # normalised, to keep memory at (T, vocab) instead of (width, vocab).
                step = logits[b, n_prompt - 1 : n_prompt + n_resp - 1].float()
                targets = input_ids[b, n_prompt : n_prompt + n_resp].to(step.device)
                logp = torch.log_softmax(step, dim=-1).gather(-1, targets[:, None])
                out[i] = float(logp.mean())
        return out


#: The key under which a stored sample keeps the aligned model's mean log-prob recorded while
#: it was decoded (``BacoOutput.aligned_mean_logprob``).
RECORDED_LOGPROB_KEY = "aligned_logprob"


def recorded_aligned_logprobs(samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Each stored sample's recorded aligned mean log-prob (NaN for an empty response): the
    ``logprob`` judge's quantity with the aligned model as judge, read from the forwards the
    engine ran anyway (docs/logprobs.md) instead of a second pass."""
    values = []
    for sample in samples:
        if RECORDED_LOGPROB_KEY not in sample:
            raise ValueError(
                "quality metric 'recorded_logprob' needs generations recorded with log-probs; "
                "these were generated without them: generate again (resume=False) or use "
                "'logprob'"
            )
        value = sample[RECORDED_LOGPROB_KEY]
        values.append(np.nan if value is None else float(value))
    return np.asarray(values, dtype=np.float64)
