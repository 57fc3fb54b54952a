"""`llava-mini` command line: one entry point, one subcommand per task (parsing only; work lives elsewhere)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from llava_mini.analysis.attention import add_attention_arguments, run_attention
from llava_mini.analysis.compression import add_compression_arguments, run_compression
from llava_mini.analysis.flops import add_flops_arguments, run_flops
from llava_mini.analysis.latency import add_bench_arguments, run_bench
from llava_mini.data.independent import add_independent_arguments, run_independent
from llava_mini.data.synthetic import add_synth_arguments, run_synth
from llava_mini.eval.lmms_eval_task import add_lmms_task_arguments, run_lmms_task
from llava_mini.eval.runner import add_benchmark_commands
from llava_mini.eval.synth import add_eval_synth_arguments, run_eval_synth
from llava_mini.experiments.ablations import add_ablations_arguments, run_ablations_command
from llava_mini.model.convert import add_convert_arguments, run_convert
from llava_mini.serve.app import add_serve_arguments, run_serve
from llava_mini.train.recipe import add_train_arguments, run_train


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None, help="local directory or hub id (default: the shipped model)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--device-map", default=None, help='accelerate placement, e.g. "auto" (overrides --device)'
    )
    parser.add_argument(
        "--quantization", default=None, choices=["8bit", "4bit"], help="bitsandbytes, CUDA only"
    )
    parser.add_argument(
        "--hd",
        action="store_true",
        help="high resolution: 2x2 crops + the global view (672 px for a 336 px tower)",
    )


def load_assistant(args: argparse.Namespace):
    """The model named by `add_model_arguments`' options, loaded once for a command."""
    import torch
    from transformers.utils import logging as transformers_logging

    from llava_mini.inference.generate import LlavaMini

    if not args.verbose:  # a weights mismatch is our error; transformers' report of it would repeat it as a table
        transformers_logging.set_verbosity_error()
    assistant = LlavaMini.load(
        args.model,
        device=args.device,
        dtype=getattr(torch, args.dtype),
        device_map=args.device_map,
        quantization=args.quantization,
    )
    if args.hd:
        assistant.set_resolution_ratio(2)
    return assistant


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--seed", type=int, default=None)


def run_ask(args: argparse.Namespace) -> int:
    import torch
    from transformers.utils import logging as transformers_logging

    from llava_mini.inference.generate import GenerationSettings

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    transformers_logging.disable_progress_bar()  # keep the answer alone on the terminal
    assistant = load_assistant(args)
    if args.fps is not None:
        assistant.config.video_fps = args.fps
    if args.max_frames is not None:
        assistant.config.video_max_frames = args.max_frames
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        stop=args.stop,
        seed=args.seed,
    )
    media = [assistant.medium(path) for path in args.media]
    messages = assistant.question_messages(args.question, media)
    if args.no_stream:
        print(assistant.chat(messages, media, settings))
        return 0
    for piece in assistant.stream_chat(messages, media, settings):
        print(piece, end="", flush=True)
    print()
    return 0


def run_chat(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    from llava_mini.inference.chat import ChatSession, run_chat_loop
    from llava_mini.inference.generate import GenerationSettings

    transformers_logging.disable_progress_bar()
    assistant = load_assistant(args)
    settings = GenerationSettings(args.max_new_tokens, args.temperature, args.top_p, args.stop, args.seed)
    run_chat_loop(ChatSession(assistant, settings), lambda: input("> "))
    return 0


def run_init(args: argparse.Namespace) -> int:
    from llava_mini.inference.random_model import write_random_model

    path = write_random_model(args.out, preset=args.preset, seed=args.seed)
    print(f"wrote a random {args.preset} model to {path}")
    return 0


def add_init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output directory")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seed", type=int, default=0)


def add_command(
    commands: argparse._SubParsersAction,
    name: str,
    help: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    handler: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """One subcommand: its options come from the module that does the work, and so does its handler."""
    parser = commands.add_parser(name, help=help)
    add_arguments(parser)
    parser.set_defaults(handler=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-mini", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ask = commands.add_parser("ask", help="answer a question about images and/or videos")
    ask.add_argument("media", nargs="*", help="image or video files (videos by suffix: .mp4, .webm, ...)")
    ask.add_argument("question", help="the question")
    ask.add_argument("--fps", type=float, default=None, help="video frames sampled per second")
    ask.add_argument("--max-frames", type=int, default=None, help="at most this many video frames")
    ask.add_argument(
        "--no-stream", action="store_true", help="print the answer at the end, not token by token"
    )
    add_model_arguments(ask)
    add_generation_arguments(ask)
    ask.set_defaults(handler=run_ask)

    chat = commands.add_parser(
        "chat", help="multi-turn chat in the terminal (/image PATH, /video PATH, /reset)"
    )
    add_model_arguments(chat)
    add_generation_arguments(chat)
    chat.set_defaults(handler=run_chat)

    add_command(
        commands, "serve", "OpenAI-compatible HTTP server with a web page", add_serve_arguments, run_serve
    )
    add_command(
        commands, "init", "write a randomly initialised model (for smoke tests)", add_init_arguments, run_init
    )
    add_command(
        commands,
        "convert",
        "convert the official release checkpoint to this layout",
        add_convert_arguments,
        run_convert,
    )

    data = commands.add_parser("data", help="data tools")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    add_command(data_commands, "synth", "generate the synthetic visual world", add_synth_arguments, run_synth)
    add_command(
        data_commands,
        "independent",
        "generate the independent test set (a second renderer; never for training)",
        add_independent_arguments,
        run_independent,
    )
    add_command(
        data_commands,
        "lmms-task",
        "write synthetic questions as an lmms-eval task",
        add_lmms_task_arguments,
        run_lmms_task,
    )

    evaluation = commands.add_parser("eval", help="evaluate a model")
    eval_commands = evaluation.add_subparsers(dest="eval_task", required=True, metavar="TASK")
    add_command(
        eval_commands,
        "synth",
        "exact match on a held-out synthetic set",
        add_eval_synth_arguments,
        run_eval_synth,
    )
    add_benchmark_commands(eval_commands)  # the paper's benchmarks: llava-mini eval gqa --data DIR, ...

    add_command(commands, "train", "train with a recipe (stages 0-2)", add_train_arguments, run_train)
    add_command(
        commands, "bench", "latency, memory, KV cache: baseline vs LLaVA-Mini", add_bench_arguments, run_bench
    )
    add_command(
        commands,
        "flops",
        "FLOPs per component: baseline vs LLaVA-Mini (Table 14)",
        add_flops_arguments,
        run_flops,
    )

    analyze = commands.add_parser("analyze", help="attention and compression analyses (sec. 3, app. F)")
    analyze_commands = analyze.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    add_command(
        analyze_commands,
        "attention",
        "per-layer attention to vision (Figures 2-5)",
        add_attention_arguments,
        run_attention,
    )
    add_command(
        analyze_commands,
        "compression",
        "the compressor's attention over an image",
        add_compression_arguments,
        run_compression,
    )

    experiment = commands.add_parser("experiment", help="train and compare models (the paper's ablations)")
    experiment_commands = experiment.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    add_command(
        experiment_commands,
        "ablations",
        "Tables 7, 8, 12 in miniature on the synthetic world",
        add_ablations_arguments,
        run_ablations_command,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        return int(args.handler(args) or 0)
    except (OSError, ValueError) as error:  # bad input, a missing file or model, an unreachable hub
        print(f"llava-mini: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llava-mini: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
