"""Vision token compression (paper sec. 4.1, eq. 2): learned queries or average pooling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sincos_2d_table(grid_side: int, dim: int) -> torch.Tensor:
    """MAE-style fixed 2D sine-cosine table for a grid_side x grid_side grid.

    Half of the dimensions encode the row, half the column; each half is split into sin and cos with
    frequencies 1 / 10000^(k / (dim/4)).  Returns (grid_side*grid_side, dim), row-major.
    """
    if dim % 4 != 0:
        raise ValueError(f"the sine-cosine table needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(grid_side, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def encode(positions: torch.Tensor) -> torch.Tensor:  # (G*G,) -> (G*G, dim/2)
        angles = positions.reshape(-1, 1) * frequencies.reshape(1, -1)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    # MAE encodes the width axis in the first half, the height axis in the second.
    return torch.cat([encode(cols), encode(rows)], dim=1).float()


def resize_position_table(table: torch.Tensor, grid_side: int) -> torch.Tensor:
    """Resize a (C*C, D) table to (grid_side*grid_side, D) with bicubic interpolation."""
    source_side = math.isqrt(table.shape[0])
    if source_side == grid_side:
        return table
    image = table.reshape(1, source_side, source_side, -1).permute(0, 3, 1, 2)  # (1, D, C, C)
    image = F.interpolate(image.float(), size=(grid_side, grid_side), mode="bicubic", align_corners=False)
    return image.permute(0, 2, 3, 1).reshape(grid_side * grid_side, -1).to(table.dtype)


def grid_side_of(num_tokens: int) -> int:
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"the compressor needs a square grid of tokens, got {num_tokens}")
    return side


class QueryCompressor(nn.Module):
    """Squeeze a square grid of vision tokens into C*C tokens with learnable queries (sec. 4.1).

    query = ln_q(queries) + pos(C x C); key = ln_kv(x) + pos resized to the grid; value = ln_kv(x);
    multi-head cross-attention, no residual, no MLP (the release's computation).

    forward: x (B, N, D) with N = H*W  ->  tokens (B, C*C, D), attention (B, C*C, N) averaged over heads
    """

    def __init__(self, dim: int, grid_size: int, num_heads: int) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.query = nn.Parameter(torch.empty(grid_size * grid_size, dim))
        nn.init.normal_(self.query, std=0.02)
        self.register_buffer("pos_embed", sincos_2d_table(grid_size, dim), persistent=True)
        self.ln_q = nn.LayerNorm(dim)
        self.ln_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size, num_tokens, _ = x.shape
        key_positions = resize_position_table(self.pos_embed, grid_side_of(num_tokens)).to(x.dtype)
        values = self.ln_kv(x)  # (B, N, D)
        keys = values + key_positions.unsqueeze(0)
        queries = self.ln_q(self.query) + self.pos_embed.to(self.query.dtype)  # (C*C, D)
        queries = queries.unsqueeze(0).expand(batch_size, -1, -1).to(x.dtype)
        tokens, attention = self.attn(queries, keys, values, need_weights=True, average_attn_weights=True)
        return tokens, attention


class PoolCompressor(nn.Module):
    """Average-pool a square grid of vision tokens to C x C (the pooling ablation of Table 8).

    forward: x (B, N, D)  ->  tokens (B, C*C, D), attention (B, C*C, N): each output's pooling weights
    """

    def __init__(self, grid_size: int) -> None:
        super().__init__()
        self.grid_size = grid_size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size, num_tokens, dim = x.shape
        side = grid_side_of(num_tokens)
        grid = x.transpose(1, 2).reshape(batch_size, dim, side, side)  # (B, D, H, W)
        pooled = F.adaptive_avg_pool2d(grid, self.grid_size)  # (B, D, C, C)
        tokens = pooled.flatten(2).transpose(1, 2)  # (B, C*C, D)
        # The pooling weights, found by pooling one-hot maps of the grid positions.
        eye = torch.eye(num_tokens, device=x.device, dtype=x.dtype).reshape(num_tokens, 1, side, side)
        weights = F.adaptive_avg_pool2d(eye, self.grid_size).reshape(num_tokens, -1).T  # (C*C, N)
        return tokens, weights.unsqueeze(0).expand(batch_size, -1, -1)


def build_compressor(kind: str, dim: int, grid_size: int, num_heads: int) -> nn.Module | None:
    """The compressor named by `LlavaMiniConfig.compressor_type` ("none" -> no module)."""
    if kind == "query":
        return QueryCompressor(dim, grid_size, num_heads)
    if kind == "pool":
        return PoolCompressor(grid_size)
    if kind == "none":
        return None
    raise ValueError(f"unknown compressor_type {kind!r}; expected 'query', 'pool' or 'none'")
