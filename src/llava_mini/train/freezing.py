"""Which parameters train in each stage, and the optimizer's parameter groups (appendix B Table 9)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from llava_mini.model.modeling import LlavaMiniForConditionalGeneration

MULTIMODAL_MODULES = ("projector", "compressor", "prefusion")
TRAINABLE_BY_MODE = {
    "components": ("vision_tower", "projector", "compressor", "prefusion", "language_model"),
    "align": ("projector",),
    "instruct": ("projector", "compressor", "prefusion", "language_model"),
}


def set_trainable(
    model: LlavaMiniForConditionalGeneration, mode: str, frozen: Sequence[str] = ()
) -> list[str]:
    """Freeze everything but the stage's modules (minus `frozen`); returns the trainable parameter names."""
    if mode not in TRAINABLE_BY_MODE:
        raise ValueError(f"unknown stage mode {mode!r}; expected one of {sorted(TRAINABLE_BY_MODE)}")
    unknown = sorted(set(frozen) - set(TRAINABLE_BY_MODE["components"]))
    if unknown:
        raise ValueError(f"cannot freeze unknown module(s) {unknown}; choose from {TRAINABLE_BY_MODE['components']}")
    model.requires_grad_(False)
    for name in TRAINABLE_BY_MODE[mode]:
        module = getattr(model, name)
        if module is not None and name not in frozen:
            module.requires_grad_(True)
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


def parameter_groups(
    model: nn.Module, lr: float, multimodal_lr: float | None, weight_decay: float
) -> list[dict]:
    """AdamW groups: multimodal modules at `multimodal_lr` (if given), the rest at `lr`; no decay on norms/biases."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        multimodal = multimodal_lr is not None and name.split(".")[0] in MULTIMODAL_MODULES
        decay = parameter.dim() >= 2
        groups.setdefault((multimodal, decay), []).append(parameter)
    return [
        {
            "params": params,
            "lr": multimodal_lr if multimodal else lr,
            "weight_decay": weight_decay if decay else 0.0,
        }
        for (multimodal, decay), params in groups.items()
    ]
