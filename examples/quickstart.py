"""Brainstorm with BACO from Python: n ideas, each word tagged with the model that wrote it.

    python examples/quickstart.py --tiny                      # offline, tiny random models
    python examples/quickstart.py --base Qwen/Qwen2.5-0.5B --aligned Qwen/Qwen2.5-0.5B-Instruct
"""

from __future__ import annotations

import argparse
import tempfile

from baco_integrations import BacoEngine


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="base model: hub id or local directory")
    parser.add_argument("--aligned", help="aligned model: hub id or local directory")
    parser.add_argument("--tiny", action="store_true", help="build a tiny local pair (offline)")
    parser.add_argument("--router", default="P-PUNC")
    parser.add_argument("--gamma", type=float, default=0.5)
    parser.add_argument("-n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("prompt", nargs="?", default="Brainstorm names for a coffee shop.")
    args = parser.parse_args(argv)
    if not (args.tiny or (args.base and args.aligned)):
        parser.error("give --base and --aligned, or --tiny")
    if args.tiny:
        from baco_integrations.testing import make_tiny_pair

        with tempfile.TemporaryDirectory(prefix="baco-tiny-") as directory:
            pair = make_tiny_pair(directory)  # loaded into memory before the folder goes
            engine = BacoEngine.from_pretrained(pair.base_dir, pair.aligned_dir)
    else:
        engine = BacoEngine.from_pretrained(args.base, args.aligned, device=args.device)
    outputs = engine.generate(
        args.prompt,
        router=args.router,
        gamma=args.gamma,
        n=args.n,
        max_new_tokens=args.max_new_tokens,
        seed=0,
    )
    for sample in outputs[0]:
        print(
            f"--- sample {sample.sample_index} ({sample.base_fraction:.0%} base, "
            f"{sample.finish_reason})"
        )
        print(sample.text)


if __name__ == "__main__":
    main()
