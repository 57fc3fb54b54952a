"""Latency, memory and KV-cache size: the all-tokens baseline against LLaVA-Mini, measured in one run (sec. 5.3).

Every variant shares the backbone config and gets random weights (timing does not depend on them):
the baseline hands all N patch tokens of a picture to the LLM (`compressor_type="none"`, no pre-fusion),
LLaVA-Mini variants hand it C*C compressed tokens after the preset's pre-fusion layers.

What one timed run measures (one picture, `text_tokens` text tokens, greedy, batch 1):
  prefill      the model's forward over the whole prompt: vision tower, compression, pre-fusion, LLM prefill
  ttft         time to first token: image preprocessing (PIL -> tensor on the device) + prefill + argmax
  decode       tokens/s over `new_tokens` further steps that reuse the KV cache
Memory is the peak of tensor memory above the loaded weights during prefill + decode: on CUDA from
`torch.cuda.max_memory_allocated`; on CPU from the allocation timeline of `torch.profiler` with
`profile_memory=True`, in a separate untimed run (process RSS mixes in the allocator's caching).
KV bytes per image and per video frame are differences of the cache tensors' sizes between prompts that
differ by one picture (text-only vs one image; one frame vs two frames).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image

from llava_mini.analysis.plotting import new_figure, save_figure
from llava_mini.model.configuration import LlavaMiniConfig
from llava_mini.model.modeling import LlavaMiniForConditionalGeneration
from llava_mini.model.presets import PRESETS, preset_config
from llava_mini.processing.image import LlavaMiniImageProcessor

logger = logging.getLogger(__name__)

DEFAULT_PRESETS = {"cpu": "bench-cpu", "cuda": "llava-mini-vicuna-7b"}
DEFAULT_COMPRESSOR_SIZES = (1, 2, 4, 8)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def bench_config(preset: str) -> LlavaMiniConfig:
    """A preset from `model.presets`; the `<image>` id is kept inside the vocabulary."""
    config = preset_config(preset)
    vocab_size = int(config.text_config.vocab_size)
    if config.image_token_id >= vocab_size:  # the tokenizer's added <image> token grows the embedding table
        config.text_config.vocab_size = config.image_token_id + 1
    return config


def variant_configs(
    config: LlavaMiniConfig, compressor_sizes: Sequence[int] = DEFAULT_COMPRESSOR_SIZES
) -> list[tuple[str, LlavaMiniConfig]]:
    """("baseline", all N tokens, no pre-fusion) then ("mini-C{c}", C*C query-compressed tokens) per size."""
    settings = config.to_dict()
    for key in ("model_type", "transformers_version", "architectures", "dtype"):
        settings.pop(key, None)
    prefusion_layers = config.prefusion_layers
    variants = [("baseline", LlavaMiniConfig(**dict(settings, compressor_type="none", prefusion_layers=0)))]
    for size in compressor_sizes:
        variant = dict(
            settings, compressor_type="query", compressor_size=size, prefusion_layers=prefusion_layers
        )
        variants.append((f"mini-C{size}", LlavaMiniConfig(**variant)))
    return variants


def build_random_model(
    config: LlavaMiniConfig, device: torch.device, dtype: torch.dtype
) -> LlavaMiniForConditionalGeneration:
    """A randomly initialised model materialised directly on `device` in `dtype` (no CPU copy of a 7B model)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaMiniForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def prompt_ids(
    config: LlavaMiniConfig, text_tokens: int, num_pictures: int, generator: torch.Generator
) -> torch.Tensor:
    """(1, L) ids: a quarter of the text (the system prompt), K slots per picture, then the rest (the question)."""
    vocab_size = int(config.text_config.vocab_size)
    text = torch.randint(0, vocab_size - 1, (text_tokens,), generator=generator)
    text[text >= config.image_token_id] += 1  # never draw the placeholder id
    prefix = text_tokens // 4
    slots = torch.full((num_pictures * config.num_vision_tokens(views=1),), config.image_token_id)
    return torch.cat([text[:prefix], slots, text[prefix:]]).unsqueeze(0)


def cache_nbytes(cache) -> int:
    """Bytes held by a transformers Cache: keys and values of every layer."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise TypeError(f"cannot size a {type(cache).__name__}: expected a transformers Cache with .layers")
    return sum(
        t.numel() * t.element_size() for layer in layers for t in (layer.keys, layer.values) if t is not None
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class RunTimes:
    prefill_s: float
    ttft_s: float
    decode_s: float


@torch.inference_mode()
def timed_generation(
    model: LlavaMiniForConditionalGeneration,
    image_processor: LlavaMiniImageProcessor,
    image: Image.Image,
    input_ids: torch.Tensor,
    new_tokens: int,
) -> RunTimes:
    """Preprocess, prefill, pick the first token, then `new_tokens` greedy steps over the KV cache."""
    device, dtype = model.device, model.dtype
    synchronize(device)
    start = time.perf_counter()
    pixel_values = image_processor.preprocess_image(image).unsqueeze(0).to(device, dtype)  # (1, S, 3, H, W)
    synchronize(device)
    prefill_start = time.perf_counter()
    output = model(input_ids=input_ids, pixel_values=pixel_values, use_cache=True, logits_to_keep=1)
    synchronize(device)
    prefill_end = time.perf_counter()
    token = output.logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
    token.item()  # the first token is on the host
    first_token = time.perf_counter()
    cache = output.past_key_values
    for _ in range(new_tokens):
        output = model(input_ids=token, past_key_values=cache, use_cache=True)
        cache = output.past_key_values
        token = output.logits[:, -1].argmax(-1, keepdim=True)
    token.item()
    end = time.perf_counter()
    return RunTimes(prefill_end - prefill_start, first_token - start, end - first_token)


def profiled_peak_bytes(run) -> int:
    """Peak of live tensor bytes allocated inside `run()` (CPU), from torch.profiler's allocation timeline."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        run()
    timeline = sorted(
        (event.time_range.start, event.self_cpu_memory_usage)
        for event in profiler.events()
        if event.self_cpu_memory_usage
    )
    live = peak = 0
    for _, change in timeline:
        live += change
        peak = max(peak, live)
    return peak


@torch.inference_mode()
def prefill_cache_bytes(
    model: LlavaMiniForConditionalGeneration, input_ids: torch.Tensor, pixel_values: torch.Tensor | None
) -> int:
    output = model(input_ids=input_ids, pixel_values=pixel_values, use_cache=True, logits_to_keep=1)
    return cache_nbytes(output.past_key_values)


@dataclass
class VariantResult:
    """Medians over the repeats; ratios are against the baseline (speedup > 1 is faster)."""

    name: str
    compressor_size: int | None
    vision_tokens_per_image: int
    prompt_tokens: int
    parameters: int
    prefill_ms: float
    ttft_ms: float
    decode_tokens_per_s: float
    peak_memory_bytes: int
    kv_bytes_per_image: int
    kv_bytes_per_frame: int
    prefill_speedup: float = 1.0
    ttft_speedup: float = 1.0
    decode_speedup: float = 1.0
    memory_ratio: float = 1.0
    kv_ratio: float = 1.0
    prefill_ms_runs: list[float] = field(default_factory=list)
    ttft_ms_runs: list[float] = field(default_factory=list)
    decode_tokens_per_s_runs: list[float] = field(default_factory=list)


@dataclass
class BenchReport:
    preset: str
    device: str
    dtype: str
    repeats: int
    text_tokens: int
    new_tokens: int
    threads: int
    memory_method: str
    variants: list[VariantResult]

    def to_dict(self) -> dict:
        return asdict(self)


def measure_variant(
    name: str,
    config: LlavaMiniConfig,
    device: torch.device,
    dtype: torch.dtype,
    repeats: int,
    text_tokens: int,
    new_tokens: int,
    seed: int,
) -> VariantResult:
    """Build one variant, warm it up, time `repeats` runs, then measure memory and KV-cache sizes."""
    torch.manual_seed(seed)
    model = build_random_model(config, device, dtype)
    image_size = int(config.vision_config.image_size)
    image_processor = LlavaMiniImageProcessor(size=image_size)
    image = Image.effect_noise((image_size * 2, image_size * 3 // 2), 64).convert("RGB")  # a 4:3 photo
    generator = torch.Generator().manual_seed(seed)
    input_ids = prompt_ids(config, text_tokens, 1, generator).to(device)

    def run() -> RunTimes:
        return timed_generation(model, image_processor, image, input_ids, new_tokens)

    run()  # warm-up: kernels, allocator, lazy initialisation
    times = [run() for _ in range(repeats)]

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        peak_memory = torch.cuda.max_memory_allocated(device) - before
    else:
        peak_memory = profiled_peak_bytes(run)

    frame = image_processor.preprocess_frames([image]).to(device, dtype)  # (1, S, 3, H, W)
    text_only = input_ids[input_ids != config.image_token_id].unsqueeze(0)
    two_frames_ids = prompt_ids(config, text_tokens, 2, torch.Generator().manual_seed(seed)).to(device)
    kv_image = prefill_cache_bytes(model, input_ids, frame) - prefill_cache_bytes(model, text_only, None)
    kv_frame = prefill_cache_bytes(
        model, two_frames_ids, frame.expand(2, -1, -1, -1, -1)
    ) - prefill_cache_bytes(model, input_ids, frame)
    result = VariantResult(
        name=name,
        compressor_size=None if config.compressor_type == "none" else config.compressor_size,
        vision_tokens_per_image=config.num_vision_tokens(views=1),
        prompt_tokens=int(input_ids.shape[1]),
        parameters=sum(p.numel() for p in model.parameters()),
        prefill_ms=statistics.median(1e3 * t.prefill_s for t in times),
        ttft_ms=statistics.median(1e3 * t.ttft_s for t in times),
        decode_tokens_per_s=statistics.median(new_tokens / t.decode_s for t in times),
        peak_memory_bytes=int(peak_memory),
        kv_bytes_per_image=int(kv_image),
        kv_bytes_per_frame=int(kv_frame),
        prefill_ms_runs=[1e3 * t.prefill_s for t in times],
        ttft_ms_runs=[1e3 * t.ttft_s for t in times],
        decode_tokens_per_s_runs=[new_tokens / t.decode_s for t in times],
    )
    return result


def add_ratios(results: list[VariantResult]) -> None:
    """Fill speedups and ratios against the first result (the baseline)."""
    base = results[0]
    for result in results:
        result.prefill_speedup = base.prefill_ms / result.prefill_ms
        result.ttft_speedup = base.ttft_ms / result.ttft_ms
        result.decode_speedup = result.decode_tokens_per_s / base.decode_tokens_per_s
        result.memory_ratio = (
            result.peak_memory_bytes / base.peak_memory_bytes if base.peak_memory_bytes else math.nan
        )
        result.kv_ratio = (
            result.kv_bytes_per_image / base.kv_bytes_per_image if base.kv_bytes_per_image else math.nan
        )


def run_benchmark(
    config: LlavaMiniConfig,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    repeats: int = 5,
    text_tokens: int = 64,
    new_tokens: int = 32,
    compressor_sizes: Sequence[int] = DEFAULT_COMPRESSOR_SIZES,
    seed: int = 0,
    preset_name: str = "custom",
) -> BenchReport:
    """Measure the baseline and each LLaVA-Mini size on `config`'s backbone, one after the other."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if text_tokens < 1 or new_tokens < 1:
        raise ValueError(f"text_tokens and new_tokens must be >= 1, got {text_tokens} and {new_tokens}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but torch sees no CUDA device")
    results = []
    for name, variant in variant_configs(config, compressor_sizes):
        logger.info("measuring %s (%d vision tokens per image)", name, variant.num_vision_tokens(views=1))
        results.append(measure_variant(name, variant, device, dtype, repeats, text_tokens, new_tokens, seed))
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the variant's model is gone; give its memory back before the next
    add_ratios(results)
    memory_method = (
        "torch.cuda.max_memory_allocated above the weights"
        if device.type == "cuda"
        else "torch.profiler(profile_memory=True) peak of live tensor bytes above the weights"
    )
    return BenchReport(
        preset=preset_name,
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        repeats=repeats,
        text_tokens=text_tokens,
        new_tokens=new_tokens,
        threads=torch.get_num_threads(),
        memory_method=memory_method,
        variants=results,
    )


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def markdown_table(report: BenchReport) -> str:
    """One row per variant; ratios in parentheses are against the baseline."""
    lines = [
        f"preset {report.preset}, {report.device}, {report.dtype}, {report.threads} threads, "
        f"{report.text_tokens} text tokens, {report.new_tokens} decoded tokens, median of {report.repeats}",
        "",
        "| variant | vision tokens / image | prefill ms | TTFT ms | decode tok/s | peak memory | KV / image | KV / frame |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report.variants:
        lines.append(
            f"| {r.name} | {r.vision_tokens_per_image} | {r.prefill_ms:.1f} ({r.prefill_speedup:.2f}x) "
            f"| {r.ttft_ms:.1f} ({r.ttft_speedup:.2f}x) | {r.decode_tokens_per_s:.1f} ({r.decode_speedup:.2f}x) "
            f"| {format_bytes(r.peak_memory_bytes)} ({r.memory_ratio:.3f}) "
            f"| {format_bytes(r.kv_bytes_per_image)} ({r.kv_ratio:.4f}) | {format_bytes(r.kv_bytes_per_frame)} |"
        )
    lines.append("")
    lines.append(f"memory: {report.memory_method}")
    return "\n".join(lines)


def plot_report(report: BenchReport, path: str | Path) -> Path:
    """Four bar charts (prefill, TTFT, decode tokens/s, KV bytes per image) in one PNG/PDF/SVG file."""
    names = [r.name for r in report.variants]
    panels = [
        ("prefill (ms)", [r.prefill_ms for r in report.variants], False),
        ("time to first token (ms)", [r.ttft_ms for r in report.variants], False),
        ("decode (tokens/s)", [r.decode_tokens_per_s for r in report.variants], False),
        ("KV cache per image (bytes)", [r.kv_bytes_per_image for r in report.variants], True),
    ]
    figure, axes = new_figure(1, len(panels), figsize=(4 * len(panels), 3.6))
    colours = ["tab:grey"] + ["tab:blue"] * (len(names) - 1)
    for axis, (title, values, log_scale) in zip(axes, panels, strict=True):
        axis.bar(names, values, color=colours)
        axis.set_title(title)
        axis.tick_params(axis="x", rotation=45)
        if log_scale:
            axis.set_yscale("log")
    figure.suptitle(f"{report.preset} on {report.device} ({report.dtype}), median of {report.repeats}")
    return save_figure(figure, path)


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--preset",
        default=None,
        help=f"backbone preset (default: {DEFAULT_PRESETS['cpu']} on CPU, {DEFAULT_PRESETS['cuda']} on CUDA); "
        f"one of {sorted(PRESETS)}",
    )
    parser.add_argument(
        "--dtype", default=None, choices=sorted(DTYPES), help="default: float32 on CPU, float16 on CUDA"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs per variant (after one warm-up); medians"
    )
    parser.add_argument(
        "--text-tokens", type=int, default=64, help="text tokens in the prompt besides the image"
    )
    parser.add_argument(
        "--new-tokens", type=int, default=32, help="decoding steps timed after the first token"
    )
    parser.add_argument(
        "--sizes",
        default="1,2,4,8",
        help="compressor sizes C to compare (C*C vision tokens each), comma-separated",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.add_argument("--plot", default=None, help="write bar charts to this file (.png, .pdf, .svg)")


def run_bench(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    preset = args.preset or DEFAULT_PRESETS["cuda" if device.type == "cuda" else "cpu"]
    dtype_name = args.dtype or ("float16" if device.type == "cuda" else "float32")
    try:
        sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    except ValueError as error:
        raise ValueError(f"--sizes must be comma-separated integers, got {args.sizes!r}") from error
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    report = run_benchmark(
        bench_config(preset),
        device=device,
        dtype=DTYPES[dtype_name],
        repeats=args.repeats,
        text_tokens=args.text_tokens,
        new_tokens=args.new_tokens,
        compressor_sizes=sizes,
        seed=args.seed,
        preset_name=preset,
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else markdown_table(report))
    if args.plot:
        logger.info("wrote %s", plot_report(report, args.plot))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python benchmarks/latency.py ...`: the same flags as `llava-mini bench`."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_bench_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return run_bench(parser.parse_args(argv))
