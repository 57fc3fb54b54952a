"""How the LLM attends to vision tokens, layer by layer (paper sec. 3.2, appendix A, Figures 2-5).

For each question of a synthetic set (`llava-mini data synth`), the conversation with its reference answer is
run once (teacher forcing) with eager attention. Every LLM position is typed as instruction (system prompt,
question, chat-template tokens), vision (the picture's placeholder slots: N patch tokens for the baseline,
C*C compressed tokens for LLaVA-Mini) or response (the answer turn, i.e. label != -100). Per layer, with
attention averaged over heads (alpha_ij):

  share[a -> b] = sum_{i in a} sum_{j in b} alpha_ij / |a|          (eq. 4-5; sums to one over b)
  entropy       = -sum_{j in V} p_ij log p_ij,  p_ij = alpha_ij / sum_{j' in V} alpha_ij'
                  averaged over text positions i that see at least two vision tokens; "normalised" divides by
                  log |V_i| (1 = uniform over the visible vision tokens, 0 = all on one)

The ablation (Figure 5) blocks text positions from attending to vision positions in a range of LLM layers
(a forward pre-hook on those decoder layers edits their attention mask; the library code is untouched)
and measures exact-match accuracy on the same questions with greedy decoding.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from llava_mini.analysis.plotting import new_figure, save_figure
from llava_mini.eval.synth import Question, evaluate, load_questions, score
from llava_mini.inference.generate import LlavaMini
from llava_mini.model.modeling import IGNORE_INDEX, LlavaMiniForConditionalGeneration
from llava_mini.processing.processor import LlavaMiniProcessor

logger = logging.getLogger(__name__)

TOKEN_TYPES = ("instruction", "vision", "response")
INSTRUCTION, VISION, RESPONSE = range(3)


# Statistics of one attention map ------------------------------------------------------------------
def token_types(input_ids: torch.Tensor, labels: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """(L,) ids and labels -> (L,) type codes: 0 instruction, 1 vision, 2 response."""
    types = torch.full_like(input_ids, INSTRUCTION)
    types[labels != IGNORE_INDEX] = RESPONSE
    types[input_ids == image_token_id] = VISION
    return types


def attention_shares(attention: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
    """Head-averaged attention (L, L) -> (3, 3): row a, column b is the mean over a-tokens of their total
    attention to b-tokens (appendix A, eq. 4-5). Rows of types absent from the sequence are NaN."""
    one_hot = nn.functional.one_hot(types, len(TOKEN_TYPES)).to(attention.dtype)  # (L, 3)
    totals = one_hot.T @ attention.float() @ one_hot  # (3, 3): sum over i in a, j in b
    counts = one_hot.sum(0)  # (3,)
    return totals / counts.unsqueeze(1).where(counts.unsqueeze(1) > 0, torch.tensor(math.nan))


def vision_attention_entropy(attention: torch.Tensor, types: torch.Tensor) -> tuple[float, float]:
    """Head-averaged attention (L, L) -> (mean entropy in nats, mean normalised entropy in [0, 1]).

    Each text position's attention over the vision tokens it can see is renormalised to a distribution
    (appendix A); positions that see fewer than two vision tokens are skipped. NaN when none remain.
    """
    length = attention.shape[0]
    vision = types == VISION
    causal = torch.ones(length, length, dtype=torch.bool, device=attention.device).tril()
    visible = causal & vision.unsqueeze(0)  # (L, L): j is a vision token that i can see
    sources = (~vision) & (visible.sum(1) >= 2)
    if not sources.any():
        return math.nan, math.nan
    weights = attention.double()[sources] * visible[sources]  # (S, L)
    mass = weights.sum(1, keepdim=True)
    keep = mass.squeeze(1) > 0
    if not keep.any():
        return math.nan, math.nan
    probabilities = weights[keep] / mass[keep]
    entropy = -(probabilities * probabilities.clamp_min(1e-300).log()).sum(1)  # (S,)
    normalised = entropy / visible[sources][keep].sum(1).double().log()
    return float(entropy.mean()), float(normalised.clamp(0.0, 1.0).mean())


# Dropping vision tokens in chosen layers (sec. 3.2, Figure 5) -------------------------------------
def block_keys(mask: torch.Tensor | None, blocked: torch.Tensor) -> torch.Tensor:
    """Add blocked (query, key) pairs (B, Q, K) to a decoder layer's attention mask.

    Handles the three forms transformers passes: None (causal, sdpa's fast path), a boolean mask
    (True = attend) and an additive float mask (B, 1, Q, K).
    """
    _, queries, keys = blocked.shape
    if mask is None:
        query_columns = torch.arange(keys - queries, keys, device=blocked.device).view(queries, 1)
        causal = torch.arange(keys, device=blocked.device).view(1, keys) <= query_columns  # (Q, K)
        return (causal.unsqueeze(0) & ~blocked).unsqueeze(1)  # (B, 1, Q, K)
    if mask.shape[-2:] != blocked.shape[-2:]:
        raise ValueError(f"attention mask of shape {tuple(mask.shape)} does not match {tuple(blocked.shape)}")
    blocked = blocked.unsqueeze(1)  # (B, 1, Q, K)
    if mask.dtype == torch.bool:
        return mask & ~blocked
    return mask.masked_fill(blocked, torch.finfo(mask.dtype).min)


@contextmanager
def drop_vision_tokens(model: LlavaMiniForConditionalGeneration, layers: Sequence[int]) -> Iterator[None]:
    """While active, text positions cannot attend to vision positions in the LLM's `layers` (0-based).

    The vision slots are read from `input_ids` at each prefill; decoding steps reuse them. Vision positions
    still attend as usual, so only the flow vision -> text is cut, in those layers only.
    """
    decoder_layers = model.get_decoder().layers
    bad = [index for index in layers if not 0 <= index < len(decoder_layers)]
    if bad:
        raise ValueError(f"layers {bad} out of range: the LLM has {len(decoder_layers)} layers")
    if model.language_model.config._attn_implementation not in ("eager", "sdpa"):
        raise ValueError("dropping vision tokens needs attn_implementation 'eager' or 'sdpa' (a 4D mask)")
    state: dict[str, torch.Tensor] = {}

    def record_vision(module: nn.Module, args: tuple, kwargs: dict) -> None:
        input_ids = args[0] if args else kwargs.get("input_ids")
        cache = kwargs.get("past_key_values")
        if input_ids is not None and (cache is None or cache.get_seq_length() == 0):
            state["vision"] = input_ids == model.config.image_token_id  # (B, L_prompt)

    def mask_layer(layer_index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            hidden = args[0] if args else kwargs["hidden_states"]
            vision = state.get("vision")
            if vision is None:
                return args, kwargs
            cache, mask = kwargs.get("past_key_values"), kwargs.get("attention_mask")
            past = cache.get_seq_length(layer_index) if cache is not None else 0
            queries = hidden.shape[1]
            keys = mask.shape[-1] if mask is not None else past + queries
            vision_keys = nn.functional.pad(vision, (0, max(0, keys - vision.shape[1])))[:, :keys]  # (B, K)
            vision_queries = vision_keys[:, past : past + queries]  # (B, Q)
            blocked = vision_keys.unsqueeze(1) & ~vision_queries.unsqueeze(2)  # (B, Q, K)
            kwargs["attention_mask"] = block_keys(mask, blocked)
            return args, kwargs

        return hook

    handles = [model.register_forward_pre_hook(record_vision, with_kwargs=True)]
    handles += [
        decoder_layers[index].register_forward_pre_hook(mask_layer(index), with_kwargs=True)
        for index in sorted(set(layers))
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def layer_ranges(num_layers: int, span: int) -> list[range]:
    """Consecutive 0-based layer ranges of `span` layers: 32 layers, span 4 -> [0-3], [4-7], ..."""
    if span < 1:
        raise ValueError(f"--drop-span must be >= 1, got {span}")
    return [range(start, min(start + span, num_layers)) for start in range(0, num_layers, span)]


def range_label(layers: range) -> str:
    """1-based label as in the paper: range(0, 4) -> "1-4"."""
    return f"{layers.start + 1}-{layers.stop}" if len(layers) > 1 else str(layers.start + 1)


# Collecting statistics over a dataset --------------------------------------------------------------
@dataclass
class AttentionAnalysis:
    """Per-layer statistics, means over samples (shares: layers x source type x target type)."""

    model: str
    samples: int
    layers: int
    shares: list[list[list[float]]]
    entropy: list[float]
    normalised_entropy: list[float]
    ablation: dict[str, float] = field(default_factory=dict)
    token_types: tuple[str, ...] = TOKEN_TYPES


def encode_with_answer(assistant: LlavaMini, question: Question) -> dict[str, torch.Tensor]:
    """The question with its reference answer as the assistant turn: ids, labels (1, L), pixel values."""
    medium = assistant.medium(question.media_path)
    messages = assistant.question_messages(question.question, [medium])
    messages = messages + [{"role": "assistant", "content": question.answer}]
    processor: LlavaMiniProcessor = assistant.processor
    sample = processor.encode(messages, [medium], add_generation_prompt=False)
    device = assistant.model.device
    return {
        "input_ids": torch.tensor([sample.input_ids], device=device),
        "labels": torch.tensor([sample.labels], device=device),
        "pixel_values": sample.pixel_values.to(device, assistant.model.dtype),
    }


@torch.inference_mode()
def layer_attentions(assistant: LlavaMini, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Head-averaged attention (L, L) of every LLM layer for one sample (the model must use eager attention)."""
    output = assistant.model(
        input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"], output_attentions=True
    )
    if not output.attentions or output.attentions[0] is None:
        raise ValueError("the model returned no attention weights; load it with attn_implementation='eager'")
    return [layer[0].float().mean(0) for layer in output.attentions]  # each (H, L, L) -> (L, L)


def collect_statistics(
    assistant: LlavaMini, questions: Sequence[Question]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[list[torch.Tensor], torch.Tensor]]:
    """Mean shares (layers, 3, 3), entropy and normalised entropy (layers,), and the first sample's maps."""
    image_token_id = assistant.config.image_token_id
    shares, entropies, normalised, example = [], [], [], None
    for question in tqdm(questions, desc="attention", unit="sample"):
        inputs = encode_with_answer(assistant, question)
        maps = layer_attentions(assistant, inputs)
        types = token_types(inputs["input_ids"][0], inputs["labels"][0], image_token_id)
        shares.append(torch.stack([attention_shares(a, types) for a in maps]))
        pairs = [vision_attention_entropy(a, types) for a in maps]
        entropies.append(torch.tensor([p[0] for p in pairs]))
        normalised.append(torch.tensor([p[1] for p in pairs]))
        if example is None:
            example = ([a.cpu() for a in maps], types.cpu())
    return (
        torch.stack(shares).nanmean(0),
        torch.stack(entropies).nanmean(0),
        torch.stack(normalised).nanmean(0),
        example,
    )


def drop_ablation(
    assistant: LlavaMini, questions: Sequence[Question], span: int, batch_size: int
) -> dict[str, float]:
    """Accuracy with no layers dropped ("none") and with vision tokens dropped in each range of `span` layers."""
    results = {"none": score(evaluate(assistant, questions, batch_size))["all"]["accuracy"]}
    for layers in layer_ranges(len(assistant.model.get_decoder().layers), span):
        with drop_vision_tokens(assistant.model, layers):
            results[range_label(layers)] = score(evaluate(assistant, questions, batch_size))["all"][
                "accuracy"
            ]
    return results


# Plots (Figures 2-5) ------------------------------------------------------------------------------
def plot_shares(shares: torch.Tensor, path: Path) -> Path:
    """Figure 2: per source type, the share of attention to each target type across layers."""
    from matplotlib.ticker import MaxNLocator

    layers = torch.arange(1, shares.shape[0] + 1)
    sources = [a for a in range(len(TOKEN_TYPES)) if not torch.isnan(shares[:, a]).all()]
    figure, axes = new_figure(1, len(sources), figsize=(4.5 * len(sources), 3.6), squeeze=False)
    for axis, source in zip(axes[0], sources, strict=True):
        for target, name in enumerate(TOKEN_TYPES):
            axis.plot(layers, shares[:, source, target], marker="o", markersize=3, label=f"-> {name}")
        axis.set_title(f"from {TOKEN_TYPES[source]} tokens")
        axis.set_xlabel("layer")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylim(0, 1)
        axis.legend(fontsize=8)
    axes[0][0].set_ylabel("average attention")
    return save_figure(figure, path, dpi=110)


def plot_entropy(entropy: torch.Tensor, normalised: torch.Tensor, path: Path) -> Path:
    """Figure 3: entropy of the attention over vision tokens per layer (nats and normalised)."""
    from matplotlib.ticker import MaxNLocator

    layers = torch.arange(1, entropy.shape[0] + 1)
    figure, axis = new_figure(figsize=(5, 3.6))
    axis.plot(layers, entropy, marker="o", markersize=3, color="tab:blue", label="entropy (nats)")
    axis.set_xlabel("layer")
    axis.set_ylabel("entropy (nats)")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.ticklabel_format(axis="y", useOffset=False)
    twin = axis.twinx()
    twin.plot(layers, normalised, linestyle="--", color="tab:orange", label="normalised")
    twin.set_ylim(0, 1.05)
    twin.set_ylabel("entropy / log |V|")
    lines = axis.get_lines() + twin.get_lines()
    axis.legend(lines, [line.get_label() for line in lines], loc="lower left", fontsize=8)
    axis.set_title("attention entropy over vision tokens")
    return save_figure(figure, path, dpi=110)


def plot_maps(maps: Sequence[torch.Tensor], types: torch.Tensor, path: Path, columns: int = 8) -> Path:
    """Figure 4: head-averaged attention map of each layer (log colour scale), vision span outlined."""
    from matplotlib.colors import LogNorm

    columns = min(columns, len(maps))
    rows = math.ceil(len(maps) / columns)
    figure, axes = new_figure(rows, columns, figsize=(2.4 * columns, 2.4 * rows), squeeze=False)
    vision = (types == VISION).nonzero().flatten()
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= len(maps):
            continue
        image = maps[index].clamp_min(1e-5)
        shown = axis.imshow(
            image.numpy(), norm=LogNorm(vmin=1e-5, vmax=1.0), cmap="viridis", interpolation="nearest"
        )
        if vision.numel():
            for edge in (int(vision.min()) - 0.5, int(vision.max()) + 0.5):
                axis.axvline(edge, color="white", linewidth=0.5)
        axis.set_title(f"layer {index + 1}", fontsize=8)
    figure.tight_layout()
    figure.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.8, label="attention (log)")
    return save_figure(figure, path, dpi=110, tight=False)


def plot_ablation(ablation: dict[str, float], path: Path) -> Path:
    """Figure 5: accuracy with vision tokens dropped in each layer range; dashed line: nothing dropped."""
    labels = [key for key in ablation if key != "none"]
    figure, axis = new_figure(figsize=(max(4.0, 0.6 * len(labels) + 2), 3.6))
    axis.bar(labels, [100 * ablation[key] for key in labels], color="tab:blue")
    axis.axhline(100 * ablation["none"], color="tab:red", linestyle="--", label="no tokens dropped")
    axis.set_xlabel("layers without vision tokens")
    axis.set_ylabel("accuracy (%)")
    axis.set_ylim(0, 100)
    axis.tick_params(axis="x", rotation=45)
    axis.legend(fontsize=8)
    return save_figure(figure, path, dpi=110)


# Command line -------------------------------------------------------------------------------------
def analyze_attention(
    assistant: LlavaMini,
    questions: Sequence[Question],
    out: Path,
    span: int | None = None,
    batch_size: int = 8,
    ablation: bool = True,
    model_name: str = "model",
) -> AttentionAnalysis:
    """Statistics, ablation and the four figures for `questions`; writes attention.json and PNGs to `out`."""
    if not questions:
        raise ValueError("no questions to analyse")
    shares, entropy, normalised, (maps, types) = collect_statistics(assistant, questions)
    num_layers = shares.shape[0]
    span = span or max(1, math.ceil(num_layers / 8))
    analysis = AttentionAnalysis(
        model=model_name,
        samples=len(questions),
        layers=num_layers,
        shares=shares.tolist(),
        entropy=entropy.tolist(),
        normalised_entropy=normalised.tolist(),
        ablation=drop_ablation(assistant, questions, span, batch_size) if ablation else {},
    )
    out.mkdir(parents=True, exist_ok=True)
    plot_shares(shares, out / "attention_shares.png")
    plot_entropy(entropy, normalised, out / "vision_entropy.png")
    plot_maps(maps, types, out / "attention_maps.png")
    if analysis.ablation:
        plot_ablation(analysis.ablation, out / "drop_vision_layers.png")
    (out / "attention.json").write_text(json.dumps(json_safe(asdict(analysis)), indent=2) + "\n")
    return analysis


def json_safe(value):
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def load_eager(model: str | None, device: str, dtype: torch.dtype) -> LlavaMini:
    """A model with eager attention (the only kind that returns attention weights) and its processor."""
    from llava_mini.inference.generate import resolve_model_path

    path = resolve_model_path(model)
    network = LlavaMiniForConditionalGeneration.from_pretrained(
        path, dtype=dtype, attn_implementation="eager"
    )
    return LlavaMini(network.to(device), LlavaMiniProcessor.from_pretrained(path))


def add_attention_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None, help="local directory or hub id (default: the shipped model)"
    )
    parser.add_argument(
        "--data", required=True, help="folder (or questions.jsonl) from `llava-mini data synth`"
    )
    parser.add_argument("--limit", type=int, default=32, help="analyse the first N questions")
    parser.add_argument(
        "--out", default="attention-analysis", help="folder for attention.json and the PNG figures"
    )
    parser.add_argument(
        "--drop-span", type=int, default=None, help="layers per dropped range (default: layers / 8)"
    )
    parser.add_argument("--no-ablation", action="store_true", help="skip the accuracy ablation (Figure 5)")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="questions per generation batch in the ablation"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


def run_attention(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    assistant = load_eager(args.model, args.device, getattr(torch, args.dtype))
    questions = load_questions(args.data, args.limit)
    analysis = analyze_attention(
        assistant,
        questions,
        Path(args.out),
        span=args.drop_span,
        batch_size=args.batch_size,
        ablation=not args.no_ablation,
        model_name=str(args.model or "shipped"),
    )
    print(
        f"analysed {analysis.samples} samples over {analysis.layers} layers; wrote {args.out}/attention.json"
    )
    for layer, (shares, normalised) in enumerate(
        zip(analysis.shares, analysis.normalised_entropy, strict=True)
    ):
        to_vision = ", ".join(
            f"{TOKEN_TYPES[a]}->vision {row[VISION]:.3f}"
            for a, row in enumerate(shares)
            if not math.isnan(row[VISION])
        )
        print(f"layer {layer + 1:2d}: {to_vision}; normalised vision entropy {normalised:.3f}")
    if analysis.ablation:
        print(
            "accuracy with vision tokens dropped: "
            + ", ".join(f"{k} {100 * v:.1f}%" for k, v in analysis.ablation.items())
        )
    return 0
