"""Vision tower: any Hugging Face vision model, read at one hidden layer (paper sec. 4.1)."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import torch
from torch import nn
from transformers import AutoModel, PreTrainedConfig


class VisionFeatureCache:
    """Tower features of recently seen views, by a hash of their pixels (LRU, thread-safe).

    A server answering follow-up questions about the same image skips the tower for it. Only the tower's
    output is cached: compression is cheap and pre-fusion depends on the question.
    """

    def __init__(self, max_entries: int = 64) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self.entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.lock = threading.Lock()

    @staticmethod
    def key(view: torch.Tensor) -> str:
        """(3, H, W) -> a digest of its shape, dtype and values."""
        data = view.detach().to("cpu").contiguous()
        digest = hashlib.blake2b(data.numpy().tobytes(), digest_size=16)
        digest.update(f"{tuple(data.shape)}{data.dtype}".encode())
        return digest.hexdigest()

    def get(self, key: str) -> torch.Tensor | None:
        with self.lock:
            features = self.entries.get(key)
            if features is None:
                self.misses += 1
                return None
            self.entries.move_to_end(key)
            self.hits += 1
            return features

    def put(self, key: str, features: torch.Tensor) -> None:
        with self.lock:
            self.entries[key] = features.detach()
            self.entries.move_to_end(key)
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)


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
        self.feature_cache: VisionFeatureCache | None = None  # set by servers; used only without gradients

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.feature_cache is None or torch.is_grad_enabled():
            return self.encode(pixel_values)
        cache = self.feature_cache
        keys = [cache.key(view) for view in pixel_values]
        found = [cache.get(key) for key in keys]
        missing = [index for index, features in enumerate(found) if features is None]
        if missing:
            computed = self.encode(pixel_values[missing])
            for position, index in enumerate(missing):
                found[index] = computed[position]
                cache.put(keys[index], computed[position])
        return torch.stack(found)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The tower itself: (P, 3, H, W) -> (P, N, D)."""
        track_grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.model.parameters())
        dtype = next(self.model.parameters()).dtype
        with torch.set_grad_enabled(track_grad):
            outputs = self.model(pixel_values=pixel_values.to(dtype), output_hidden_states=True)
            features = outputs.hidden_states[self.feature_layer]  # (P, N or N+1, D)
        if self.select == "patch" and features.shape[1] == self.num_patches + 1:
            features = features[:, 1:]
        return features
