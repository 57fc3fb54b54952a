"""Projection from the vision tower's width to the LLM's embedding width (LLaVA's `mm_projector`)."""

from __future__ import annotations

from torch import nn


def build_projector(kind: str, vision_dim: int, text_dim: int) -> nn.Module:
    """`mlp2x_gelu`: Linear, GELU, Linear (keys `0.*` and `2.*` as released); `linear`: one Linear.

    forward: (..., vision_dim) -> (..., text_dim)
    """
    if kind == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(vision_dim, text_dim), nn.GELU(), nn.Linear(text_dim, text_dim))
    if kind == "linear":
        return nn.Linear(vision_dim, text_dim)
    raise ValueError(f"unknown projector_type {kind!r}; expected 'mlp2x_gelu' or 'linear'")
