"""FLOPs per component of LLaVA-Mini and of the LLaVA-v1.5 baseline, counted on the real modules (appendix E.5).

The model is built on the meta device (no memory, no weights, so 7B configs cost nothing) and its own
methods run on meta tensors of the right shapes under `torch.utils.flop_counter.FlopCounterMode`:
`compress_and_project` (vision tower, compressor, projector), `prefuse` (the pre-fusion layers) and the
language model's forward over the prompt the LLM would see. Ops are attributed to the component module
that ran them. One prompt (batch 1) is counted: P pictures (one image, or T video frames), each of S views
(1, or ratio*ratio HD crops plus the global view), and L text tokens.

Counting convention (the default; it reproduces the paper's Table 14 and Tables 7-8, which used calflops):
  * FLOPs = 2 x multiply-accumulates (one multiply and one add).
  * Only products with weights are counted: linear layers (`aten.mm`, `aten.addmm`) and the patch
    convolution. The attention products Q K^T and A V are not (calflops hooks torch functions, and the
    fused `scaled_dot_product_attention` kernel is not one it counts); `include_attention=True` adds them (`aten.bmm`, `aten.baddbmm`
    and the fused attention ops): LLaVA-v1.5 at 672 px then costs 45.13 T, not 40.49 T. Norms, activations,
    softmax and rotary embeddings (O(tokens x width)) are never counted.
  * L = 43 text tokens (`PAPER_TEXT_TOKENS`): the one length that fits every LLM figure of the paper
    (576 + 43 = 619 tokens through Vicuna-7B give Table 14's 8.177 T; 2880 + 43 give 38.623 T; 1 + 43
    give Table 7's 0.96 T total without pre-fusion). Pre-fusion sees [N vision ; K compressed ; L text].
  * The LM head is applied at every position, as a plain forward does (generation's prefill keeps only
    the last position: 0.26 GFLOPs per dropped position for Vicuna-7B).
  * HD (resolution ratio 2, 672 px): every view is encoded and projected, but Table 14's total counts
    pre-fusion over the stitched crops only, [4 x 576 ; K ; L]. This implementation pre-fuses
    [crops ; global view ; K ; L] (`LlavaMiniForConditionalGeneration.encode_views`); `hd_prefusion_global=True` counts that, and
    gives the paper's other HD figure, "LLaVA-Mini-HD ... 8.13 TFLOPs" (sec. 5.2). The paper's
    LLaVA-Mini-HD compresses to C = 8 (64 tokens).

See docs/flops.md for the paper's figures against ours, row by row.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from llava_mini.model.configuration import LlavaMiniConfig
from llava_mini.model.presets import PRESETS, preset_config

COMPONENTS = ("vision_encoder", "projection", "compression", "prefusion", "llm")
COMPONENT_TITLES = {
    "vision_encoder": "Vision Encoder",
    "projection": "Projection",
    "compression": "Compression",
    "prefusion": "Pre-fusion",
    "llm": "LLM",
}
PAPER_TEXT_TOKENS = 43
PAPER_HD_COMPRESSOR_SIZE = 8  # LLaVA-Mini-HD: 8 x 8 = 64 vision tokens (sec. 5.1)
DEFAULT_PRESET = "llava-mini-vicuna-7b"  # Table 14 compares LLaVA-Mini and LLaVA-v1.5 on Vicuna-7B

# Products with a weight matrix (linear layers, convolutions); every other op FlopCounterMode counts is an
# attention product (aten.bmm, aten.baddbmm, fused scaled-dot-product attention).
_aten = torch.ops.aten
WEIGHT_OPS = frozenset(
    {
        _aten.mm,
        _aten.addmm,
        _aten._scaled_mm,
        _aten.convolution,
        _aten._convolution,
        _aten.cudnn_convolution,
        _aten._slow_conv2d_forward,
        _aten.convolution_overrideable,
    }
)


@dataclass(frozen=True)
class OpFlops:
    """FLOPs of one counted call, split into weight products and attention products."""

    weights: int = 0
    attention: int = 0

    def __add__(self, other: OpFlops) -> OpFlops:
        return OpFlops(self.weights + other.weights, self.attention + other.attention)

    def __sub__(self, other: OpFlops) -> OpFlops:
        return OpFlops(self.weights - other.weights, self.attention - other.attention)


@dataclass
class FlopsReport:
    """FLOPs of one forward pass over one prompt, per component (COMPONENTS), for one configuration."""

    name: str
    resolution: int
    frames: int
    text_tokens: int
    vision_tokens_per_picture: int
    llm_tokens: int
    prefusion_tokens: int
    include_attention: bool
    hd_prefusion_global: bool
    weight_flops: dict[str, int]
    attention_flops: dict[str, int]

    @property
    def flops(self) -> dict[str, int]:
        """FLOPs per component under this report's convention."""
        return {
            name: self.weight_flops[name] + (self.attention_flops[name] if self.include_attention else 0)
            for name in COMPONENTS
        }

    @property
    def total(self) -> int:
        return sum(self.flops.values())

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), flops=self.flops, total=self.total)


def split_counts(counts: Mapping[Any, int]) -> OpFlops:
    """Sum FlopCounterMode's {op: flops} of one module into weight and attention products."""
    weights = sum(flops for op, flops in counts.items() if op in WEIGHT_OPS)
    return OpFlops(weights=weights, attention=sum(counts.values()) - weights)


def counted(run: Callable[[], Any]) -> tuple[Any, dict[str, OpFlops]]:
    """Run `run()` under FlopCounterMode; return its result and FLOPs per module name.

    Modules called directly (not from a parent's forward) are named by their class ("VisionTower",
    "QueryCompressor"); "Global" holds everything counted.
    """
    with FlopCounterMode(display=False) as counter:
        result = run()
    return result, {name: split_counts(ops) for name, ops in counter.get_flop_counts().items()}


def derive_config(config: LlavaMiniConfig, **fields: Any) -> LlavaMiniConfig:
    """A new validated config: `config` with `fields` replaced (e.g. the baseline of a LLaVA-Mini config)."""
    settings = config.to_dict()
    for key in ("model_type", "transformers_version", "architectures", "dtype"):
        settings.pop(key, None)
    settings.update(fields)
    return LlavaMiniConfig(**settings)


def baseline_config(config: LlavaMiniConfig) -> LlavaMiniConfig:
    """LLaVA-v1.5 on the same backbones: every vision token to the LLM, no compression, no pre-fusion."""
    return derive_config(
        config,
        compressor_type="none",
        prefusion_layers=0,
        arrangement="release",
        inside_llm_layers=0,
        vision_tokens_to_llm=True,
    )


def resolution_ratio_for(config: LlavaMiniConfig, resolution: int) -> int:
    """HD crops per side for an input `resolution` (px): a multiple of the vision tower's image size."""
    image_size = int(config.vision_config.image_size)
    if resolution < image_size or resolution % image_size:
        raise ValueError(
            f"--resolution {resolution} must be a multiple of the vision tower's image size {image_size} "
            f"({image_size} = standard, {2 * image_size} = HD with 2 x 2 crops)"
        )
    return resolution // image_size


def configure(
    config: LlavaMiniConfig,
    resolution: int | None = None,
    compressor_size: int | None = None,
    prefusion_layers: int | None = None,
) -> LlavaMiniConfig:
    """`config` at an input resolution (None keeps its own), with optional compressor/pre-fusion overrides.

    Switching a standard-resolution model to HD without `compressor_size` uses the paper's LLaVA-Mini-HD
    setting, C = 8 (64 tokens).
    """
    fields: dict[str, Any] = {}
    if resolution is not None:
        ratio = resolution_ratio_for(config, resolution)
        fields["resolution_ratio"] = ratio
        if ratio > 1 and config.resolution_ratio == 1 and compressor_size is None:
            if config.compressor_type != "none":
                fields["compressor_size"] = PAPER_HD_COMPRESSOR_SIZE
    if compressor_size is not None:
        fields["compressor_size"] = compressor_size
    if prefusion_layers is not None:
        fields["prefusion_layers"] = prefusion_layers
    return derive_config(config, **fields) if fields else config


def count_flops(
    config: LlavaMiniConfig,
    frames: int = 1,
    text_tokens: int = PAPER_TEXT_TOKENS,
    include_attention: bool = False,
    hd_prefusion_global: bool = False,
    name: str = "model",
) -> FlopsReport:
    """Count the FLOPs of one prompt with `frames` pictures (1 = an image) and `text_tokens` text tokens.

    The model is built on the meta device; each component's FLOPs are those of its real module.
    """
    from llava_mini.model.modeling import LlavaMiniForConditionalGeneration

    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if text_tokens < 1:
        raise ValueError(f"text_tokens must be >= 1, got {text_tokens}")
    if config.arrangement == "inside_llm":
        raise ValueError("FLOPs counting supports arrangement 'release' and 'paper', not 'inside_llm'")
    with torch.device("meta"):
        model = LlavaMiniForConditionalGeneration(config)
    views = config.views_per_picture
    image_size = int(config.vision_config.image_size)
    text_dim = int(config.text_config.hidden_size)
    pixel_values = torch.empty(frames, views, 3, image_size, image_size, device="meta")  # (P, S, 3, H, W)

    # Vision tower, compressor and projector: the model's own method, split by module.
    (projected, compressed, _), modules = counted(lambda: model.compress_and_project(pixel_values))
    vision = modules.get(type(model.vision_tower).__name__, OpFlops())
    compression = (
        modules.get(type(model.compressor).__name__, OpFlops()) if model.compressor is not None else OpFlops()
    )
    projection = modules["Global"] - vision - compression

    prefusion, prefusion_tokens = OpFlops(), 0
    if model.prefusion is not None:
        if views > 1 and not hd_prefusion_global:  # Table 14: pre-fusion over the stitched crops only
            projected = projected[:, : config.stitched_grid_side**2]
        text = torch.empty(frames, text_tokens, text_dim, device="meta")  # (P, L, D): the same text per frame
        prefusion = counted(lambda: model.prefuse(projected, compressed, text))[1]["Global"]
        prefusion_tokens = projected.shape[1] + compressed.shape[1] + text_tokens

    tokens_per_picture = config.num_vision_tokens(views)
    llm_tokens = frames * tokens_per_picture + text_tokens
    embeds = torch.empty(1, llm_tokens, text_dim, device="meta")  # (B=1, P*K + L, D)
    # With a cache, as at prefill (without one, transformers probes position ids with .item(), which meta lacks).
    llm = counted(lambda: model.language_model(inputs_embeds=embeds, use_cache=True))[1]["Global"]

    parts = dict(zip(COMPONENTS, (vision, projection, compression, prefusion, llm), strict=True))
    return FlopsReport(
        name=name,
        resolution=image_size * config.resolution_ratio,
        frames=frames,
        text_tokens=text_tokens,
        vision_tokens_per_picture=tokens_per_picture,
        llm_tokens=llm_tokens,
        prefusion_tokens=prefusion_tokens,
        include_attention=include_attention,
        hd_prefusion_global=hd_prefusion_global,
        weight_flops={key: part.weights for key, part in parts.items()},
        attention_flops={key: part.attention for key, part in parts.items()},
    )


def compare_with_baseline(
    config: LlavaMiniConfig, name: str = "LLaVA-Mini", baseline_name: str = "LLaVA-v1.5", **settings: Any
) -> list[FlopsReport]:
    """[baseline, model]: the same backbones without compression and pre-fusion, then `config` itself."""
    return [
        count_flops(baseline_config(config), name=baseline_name, **settings),
        count_flops(config, name=name, **settings),
    ]


def paper_table14(text_tokens: int = PAPER_TEXT_TOKENS, **settings: Any) -> list[FlopsReport]:
    """Table 14's four rows: LLaVA-v1.5 and LLaVA-Mini (Vicuna-7B) at 336 and 672 px."""
    mini = preset_config(DEFAULT_PRESET)
    reports = []
    for resolution in (336, 672):
        reports += compare_with_baseline(configure(mini, resolution), text_tokens=text_tokens, **settings)
    return reports


def format_table(reports: list[FlopsReport]) -> str:
    """A plain-text table, one row per report, columns as in Table 14; TFLOPs (GFLOPs/MFLOPs for small models)."""
    largest = max(report.total for report in reports)
    prefix, scale = next(((p, s) for p, s in (("T", 1e12), ("G", 1e9)) if largest >= s), ("M", 1e6))
    header = ["Model", "Res.", "Frames", "LLM tokens", *COMPONENT_TITLES.values(), "Total"]
    rows = []
    for report in reports:
        values = [report.flops[key] for key in COMPONENTS] + [report.total]
        rows.append(
            [report.name, str(report.resolution), str(report.frames), str(report.llm_tokens)]
            + [
                f"{value / scale:.3f}" if value else "-" for value in values
            ]  # "-": the model has no such part
        )
    widths = [max(len(row[index]) for row in [header, *rows]) for index in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = (
            cell.ljust(width) if index == 0 else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded)

    first = reports[0]
    convention = "weights + attention products" if first.include_attention else "weight products only"
    notes = [
        f"{prefix}FLOPs (2 x MACs, {convention}); {first.text_tokens} text tokens; batch 1",
        line(header),
        line(["-" * width for width in widths]),
        *(line(row) for row in rows),
    ]
    return "\n".join(notes)


# Command line ------------------------------------------------------------------------------------------
def add_flops_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        help=f"a named configuration (default {DEFAULT_PRESET})",
    )
    source.add_argument(
        "--model", default=None, help="local directory or hub id: only its config.json is read"
    )
    parser.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="input pixels per side: the tower's size (336) or twice it (672 = HD, 2 x 2 crops + global view); "
        "default: the model's own",
    )
    parser.add_argument(
        "--frames", type=int, default=1, help="count a video of T frames (default 1 = an image)"
    )
    parser.add_argument(
        "--text-tokens",
        type=int,
        default=PAPER_TEXT_TOKENS,
        help=f"text tokens in the prompt (default {PAPER_TEXT_TOKENS}, the length that reproduces the paper)",
    )
    parser.add_argument(
        "--compressor-size",
        type=int,
        default=None,
        help=f"C, compressed grid side (default: the model's; {PAPER_HD_COMPRESSOR_SIZE} when switching to HD)",
    )
    parser.add_argument(
        "--prefusion-layers", type=int, default=None, help="N pre-fusion layers (default: the model's)"
    )
    parser.add_argument(
        "--include-attention",
        action="store_true",
        help="also count the attention products Q K^T and A V (the paper's calflops figures do not)",
    )
    parser.add_argument(
        "--hd-prefusion-global",
        action="store_true",
        help="at HD, pre-fuse the global view too, as this implementation runs (paper sec. 5.2: 8.13 T); "
        "default: crops only, as in Table 14",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the LLaVA-v1.5 row (same backbones)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_flops(args: argparse.Namespace) -> int:
    if args.model is not None:
        config = LlavaMiniConfig.from_pretrained(args.model)
        name = str(args.model)
    else:
        name = args.preset or DEFAULT_PRESET
        config = preset_config(name)
    config = configure(config, args.resolution, args.compressor_size, args.prefusion_layers)
    settings = dict(
        frames=args.frames,
        text_tokens=args.text_tokens,
        include_attention=args.include_attention,
        hd_prefusion_global=args.hd_prefusion_global,
    )
    if args.no_baseline or (config.compressor_type == "none" and config.prefusion_layers == 0):
        reports = [count_flops(config, name=name, **settings)]
    else:
        reports = compare_with_baseline(config, name=name, baseline_name="baseline (LLaVA-v1.5)", **settings)
    if args.json:
        print(json.dumps([report.to_dict() for report in reports], indent=2))
    else:
        print(format_table(reports))
    return 0
