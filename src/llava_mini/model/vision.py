"""Vision tower: any Hugging Face vision model, read at one hidden layer (paper sec. 4.1)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, PreTrainedConfig


class VisionTower(nn.Module):
    """Encode pictures into a square grid of patch features.

    forward: pixel_values (P, 3, H, W)  ->  features (P, N, D_vision), N = (H/patch)^2 patch tokens
    (the class token is dropped with `select="patch"`; towers without one, like SigLIP, keep all).
    """

    def __init__(self, config: PreTrainedConfig, feature_layer: int = -2, select: str = "patch") -> None:
        super().__init__()
        self.model = AutoModel.from_config(config)
        self.feature_layer = feature_layer
        self.select = select
        self.num_patches = (int(config.image_size) // int(config.patch_size)) ** 2

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        track_grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.model.parameters())
        dtype = next(self.model.parameters()).dtype
        with torch.set_grad_enabled(track_grad):
            outputs = self.model(pixel_values=pixel_values.to(dtype), output_hidden_states=True)
            features = outputs.hidden_states[self.feature_layer]  # (P, N or N+1, D)
        if self.select == "patch" and features.shape[1] == self.num_patches + 1:
            features = features[:, 1:]
        return features
