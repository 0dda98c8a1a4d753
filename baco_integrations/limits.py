"""Size caps of one engine call, checked before any text is tokenized or memory allocated.

Settings (:class:`~baco_integrations.GenerationSettings`) say what a call asks for; the
limits say how much an engine agrees to do in one call. They exist because a request that is
well formed can still exhaust the machine: ``n=10**5`` samples, a 10 MB prompt (tokenized in
full before it could be refused as too long), or ``max_new_tokens=10**9`` on models whose
configuration declares no context window (the attention mask alone is preallocated for it).

The defaults are generous for interactive use and sweeps, yet keep one call of a small pair
within a 24 GiB machine. Pass your own to the engine::

    engine = BacoEngine.from_pretrained(base, aligned, limits=EngineLimits(max_n=1024))

Every refusal is a ``ValueError`` that names the setting, its value, the allowed range and the
limit to raise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from .config import GenerationSettings, Int
from .prompts import Prompt, prompt_chars

_Cap = Annotated[Int, Field(ge=1)]


class EngineLimits(BaseModel):
    """Caps on one call of a :class:`~baco_integrations.BacoEngine`.

    * ``max_n`` (256): samples per prompt (``n``).
    * ``max_rows`` (1024): rows decoded together, prompts x ``n``: each row holds its own KV
      cache.
    * ``max_prompt_chars`` (2,000,000): characters of prompt text in one call, counted
      before tokenizing (the longer of a prompt's two renderings, the system prompt
      included, summed over the call's prompts); about 0.5 GB of tokenizer memory at most.
    * ``max_new_tokens`` (32768): the most ``max_new_tokens`` a call may ask. Each model's
      attention mask is preallocated for it; a context window, when the models declare one,
      also bounds the tokens generated (silently: the output then finishes with "length").
    * ``max_stop_chars`` (10,000): total characters of the stop strings, searched at every
      step.

    And on the engine's continuous batching (concurrent calls share decoding steps):

    * ``max_live_rows`` (1024): rows decoded at once, all calls together; a call that would
      go past it waits its turn (FIFO).
    * ``max_prefill_tokens`` (16,384): prompt tokens prefilled between two decoding steps, so
      that a burst of new calls does not stall the running ones for long (the first waiting
      call always joins an empty batch, whatever its size).
    * ``max_waiting`` (1024): calls waiting to join; one more raises
      :class:`~baco_integrations.EngineOverloaded` at once (a server answers 429/503).
    * ``admission_wait_steps`` (8): calls that arrive while a batch decodes are prefilled
      together in rounds: a waiting call joins at most this many steps after it arrived,
      with everything that arrived meanwhile; at once when the batch is empty or a burst
      arrives (more rows in one step than are running). 0 admits before every step.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_n: _Cap = Field(default=256, description="Most samples per prompt (n).")
    max_rows: _Cap = Field(default=1024, description="Most rows per call: prompts x n.")
    max_prompt_chars: _Cap = Field(
        default=2_000_000,
        description="Most characters of prompt text per call, checked before tokenizing.",
    )
    max_new_tokens: _Cap = Field(
        default=32_768, description="Most max_new_tokens a call may ask for."
    )
    max_stop_chars: _Cap = Field(
        default=10_000, description="Most characters of stop strings, all together."
    )
    max_live_rows: _Cap = Field(
        default=1024,
        description="Most rows decoded at once, all concurrent calls together; more wait.",
    )
    max_prefill_tokens: _Cap = Field(
        default=16_384,
        description="Most prompt tokens prefilled between two steps (one call always may).",
    )
    max_waiting: _Cap = Field(
        default=1024,
        description="Most calls waiting to join the batch; beyond, EngineOverloaded is raised.",
    )
    admission_wait_steps: Annotated[Int, Field(ge=0)] = Field(
        default=8,
        description="Most steps a call waits to join a running batch, so that arrivals are "
        "prefilled in rounds (0: before every step; docs/performance.md).",
    )

    def check_settings(self, settings: GenerationSettings) -> None:
        """Refuse settings beyond the caps (``n``, ``max_new_tokens``, ``stop``)."""
        if settings.n > self.max_n:
            raise ValueError(
                f"n={settings.n} is out of range: allowed values are 1..{self.max_n} "
                "(EngineLimits.max_n; raise it to allow more samples per prompt)"
            )
        if settings.max_new_tokens > self.max_new_tokens:
            raise ValueError(
                f"max_new_tokens={settings.max_new_tokens} is out of range: allowed values are "
                f"1..{self.max_new_tokens} (EngineLimits.max_new_tokens; raise it for longer "
                "outputs)"
            )
        stop_chars = sum(map(len, settings.stop or ()))
        if stop_chars > self.max_stop_chars:
            raise ValueError(
                f"stop: {stop_chars} characters of stop strings, more than the "
                f"{self.max_stop_chars} allowed (EngineLimits.max_stop_chars)"
            )

    def check_call(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> None:
        """Refuse a call beyond the caps, before its prompts are tokenized.

        ``prompts`` is the normalized batch (see :func:`~baco_integrations.prompts.
        normalize_prompts`).
        """
        self.check_settings(settings)
        rows = len(prompts) * settings.n
        if rows > self.max_rows:
            raise ValueError(
                f"n={settings.n} with {len(prompts)} prompts is {rows} rows, more than the "
                f"{self.max_rows} allowed per call (EngineLimits.max_rows); split the prompts "
                "into several calls or lower n"
            )
        system = settings.system_prompt or ""
        if len(system) > self.max_prompt_chars:
            raise ValueError(
                f"system_prompt is too long: {len(system)} characters, more than the "
                f"{self.max_prompt_chars} allowed (EngineLimits.max_prompt_chars)"
            )
        if len(settings.base_template) > self.max_prompt_chars:
            raise ValueError(
                f"base_template is too long: {len(settings.base_template)} characters, more "
                f"than the {self.max_prompt_chars} allowed (EngineLimits.max_prompt_chars)"
            )
        total = 0
        for i, prompt in enumerate(prompts):
            chars = prompt_chars(prompt, settings.system_prompt, settings.base_template)
            if chars > self.max_prompt_chars:
                raise ValueError(
                    f"prompts[{i}] is too long: about {chars} characters once rendered (with "
                    "system_prompt and base_template), more than the "
                    f"{self.max_prompt_chars} allowed (EngineLimits.max_prompt_chars)"
                )
            total += chars
            if total > self.max_prompt_chars:
                raise ValueError(
                    f"prompts are too long together: more than the {self.max_prompt_chars} "
                    f"characters allowed per call by prompts[0..{i}] "
                    "(EngineLimits.max_prompt_chars); split them into several calls"
                )
