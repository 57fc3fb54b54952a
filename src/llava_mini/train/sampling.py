"""Sample order of a training stage: seeded epoch permutations, optionally grouped by modality (and length).

Right padding makes every sample of a batch as long as its longest one, so one video (hundreds of vision
tokens in stage 0) in a batch of images multiplies the batch's cost. Grouping, as LLaVA's
`group_by_modality_length` does, sorts a window of consecutive global batches by a key, cuts it into global
batches again and shuffles their order: every sample is still seen once per epoch. With `modality_key` each
batch holds one modality and stays a random draw within it; `length_key` also sorts by text length, which
pads least but puts similar samples (captions, long conversations) together.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llava_mini.data.records import MARKERS, ConversationRecord

GROUP_WINDOW_BATCHES = 16  # global batches sorted together; a larger window groups better but shuffles less
# Text-only records first, then each medium of the record format in its order (image, video).
KIND_RANK = {None: 0, **{kind: rank for rank, kind in enumerate(MARKERS, start=1)}}


def epoch_order(num_samples: int, total_samples: int, seed: int) -> list[int]:
    """Epoch permutations seeded by (seed, epoch), concatenated to `total_samples` indices: deterministic,
    so a resumed run continues with the same samples."""
    if num_samples < 1:
        raise ValueError("a stage needs at least one training sample")
    order: list[int] = []
    epoch = 0
    while len(order) < total_samples:
        generator = torch.Generator().manual_seed(seed * 1000 + epoch)
        order.extend(torch.randperm(num_samples, generator=generator).tolist())
        epoch += 1
    return order[:total_samples]


def modality_key(record: ConversationRecord) -> tuple[int, int]:
    """(modality rank, 0): sorting is stable, so samples of one modality keep their shuffled order."""
    return KIND_RANK.get(record.media_kind, len(KIND_RANK)), 0


def length_key(record: ConversationRecord) -> tuple[int, int]:
    """(modality rank, characters of text): a cheap proxy for a sample's token count, without encoding it."""
    return modality_key(record)[0], sum(len(text) for _, text in record.turns)


GROUP_KEYS = {"modality": modality_key, "length": length_key}


def group_batches(
    order: Sequence[int],
    keys: Sequence[tuple[int, int]],
    global_batch: int,
    seed: int,
    window_batches: int = GROUP_WINDOW_BATCHES,
) -> list[int]:
    """Regroup `order` (a multiple of `global_batch` long) window by window: sort each window of
    `window_batches` global batches by `keys[index]`, then shuffle its batches (seeded)."""
    if len(order) % global_batch:
        raise ValueError(f"order has {len(order)} samples, not a multiple of the global batch {global_batch}")
    generator = torch.Generator().manual_seed(seed)
    grouped: list[int] = []
    window = window_batches * global_batch
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda index: keys[index])
        batches = [chunk[i : i + global_batch] for i in range(0, len(chunk), global_batch)]
        for position in torch.randperm(len(batches), generator=generator).tolist():
            grouped.extend(batches[position])
    return grouped
