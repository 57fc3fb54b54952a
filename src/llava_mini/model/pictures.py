"""Pictures that are produced chunk by chunk, so a long video never sits in memory at once (sec. 4.2).

The model reads its pictures (P, S, 3, H, W) `encode_chunk_size` at a time. A plain tensor is sliced; a
`PictureStream` chains tensors and lazy sources (e.g. a video file decoded as the model goes), so the
memory a video costs is one chunk of frames plus the LLM's K tokens per frame.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class PictureSource(Protocol):
    """Something that yields its `num_pictures` pictures in order as (p, S, 3, H, W) tensors, p <= size."""

    num_pictures: int
    num_views: int

    def chunks(self, size: int) -> Iterator[torch.Tensor]: ...


class PictureStream:
    """Pictures from several parts (tensors or `PictureSource`s) in order; moved to a device/dtype per chunk."""

    def __init__(
        self,
        parts: Sequence[torch.Tensor | PictureSource],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        flat: list[torch.Tensor | PictureSource] = []
        for part in parts:
            flat.extend(part.parts if isinstance(part, PictureStream) else [part])
        if not flat:
            raise ValueError("a picture stream needs at least one part")
        views = {_views(part) for part in flat}
        if len(views) != 1:
            raise ValueError(f"all pictures in a batch need the same number of views, got {sorted(views)}")
        self.parts = flat
        self.device = device
        self.dtype = dtype

    @property
    def num_pictures(self) -> int:
        return sum(picture_count(part) for part in self.parts)

    @property
    def num_views(self) -> int:
        return _views(self.parts[0])

    def to(self, *targets: torch.device | str | torch.dtype) -> PictureStream:
        """Like `Tensor.to(device)` / `.to(dtype)`: applied to each chunk as it is produced."""
        device, dtype = self.device, self.dtype
        for target in targets:
            if isinstance(target, torch.dtype):
                dtype = target
            else:
                device = target
        return PictureStream(self.parts, device, dtype)

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        for part in self.parts:
            pieces = part.split(size) if isinstance(part, torch.Tensor) else part.chunks(size)
            for piece in pieces:
                yield piece.to(device=self.device, dtype=self.dtype)


def picture_chunks(pixel_values: torch.Tensor | PictureStream, size: int) -> Iterator[torch.Tensor]:
    """(P, S, 3, H, W) pictures, `size` at a time, from a tensor or a stream."""
    if isinstance(pixel_values, torch.Tensor):
        yield from pixel_values.split(size)
    else:
        yield from pixel_values.chunks(size)


def concat_pictures(parts: Sequence[torch.Tensor | PictureSource]) -> torch.Tensor | PictureStream:
    """One batch of pictures: a tensor when every part is one, else a stream that produces them lazily."""
    if all(isinstance(part, torch.Tensor) for part in parts):
        return torch.cat(list(parts))
    return PictureStream(parts)


def picture_count(part: torch.Tensor | PictureSource) -> int:
    """P of a (P, S, 3, H, W) tensor or a picture source."""
    return part.shape[0] if isinstance(part, torch.Tensor) else part.num_pictures


def _views(part: torch.Tensor | PictureSource) -> int:
    return part.shape[1] if isinstance(part, torch.Tensor) else part.num_views
