"""Supervised pre-training of a vision tower on dense scene labels (the tiny recipe's stand-in for CLIP).

The real model starts from CLIP ViT-L, pre-trained on 400M image-text pairs. Nothing pretrained can be
downloaded offline, and a tower trained from scratch only through the LLM's loss learns shapes far too
slowly on a CPU budget, so the tiny recipe first teaches its tower to see: linear heads on every patch
token name what the 3 x 3 cell under that patch holds (empty, or shape x colour; and, separately, its shape
and its colour), which word is written in the image, where the patch itself lies (its row and column), and,
regressed, the place of the object on it ("place": the centred (row, column) of its cell, zero on empty
patches). Each patch token then carries its own cell's content and its place, as CLIP's patch tokens do, so
the LLM, the compressor and the pre-fusion layers can find an object by its shape or by its colour and tell
where it is. The place regression lays positions along one direction of the feature space, on objects
only: any average over patches (one compressed token of a single moving object, attention over one named
object) then reads as that object's coordinates, and two of them compare by a difference. Only the tower's
weights are kept.

scenes.jsonl lines: {"image": relative path, "cells": [9 ints], "word": int} (`llava-mini data synth`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from llava_mini.data.synthetic import COLOURS, NUM_CELL_CLASSES, NUM_WORD_CLASSES, SHAPES
from llava_mini.model.vision import VisionTower
from llava_mini.processing.image import LlavaMiniImageProcessor, load_image
from llava_mini.train.checkpoint import (
    STATE_FILE,
    atomic_directory_write,
    load_training_state,
    save_training_state,
)

logger = logging.getLogger(__name__)


@dataclass
class VisionPretrainingArgs:
    """The `vision_pretraining` block of a stage: labels file, epochs and optimiser settings."""

    data: str = "scenes.jsonl"
    epochs: float = 8.0
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_ratio: float = 0.05
    place_weight: float = 1.0  # weight of the object-place regression; 0 leaves it out
    save_every: int = 200  # steps between resumable checkpoints (when a checkpoint folder is given)


def footprint_labels(objects: list[list[float]], grid_side: int) -> torch.Tensor:
    """(g*g,) class of the object under each patch: 0, or 1 + shape x colour of the last-drawn object whose
    square footprint holds the patch's centre; an object smaller than a patch still labels the patch holding
    its centre. `objects`: [shape index, colour index, centre x, centre y, half size] in drawing order, as
    fractions of the padded square's side."""
    centres = (torch.arange(grid_side) + 0.5) / grid_side
    labels = torch.zeros(grid_side, grid_side, dtype=torch.long)
    for shape, colour, x, y, half in objects:
        label = 1 + int(shape) * len(COLOURS) + int(colour)
        inside = ((centres.view(-1, 1) - y).abs() <= half) & ((centres.view(1, -1) - x).abs() <= half)
        labels[inside] = label
        labels[min(grid_side - 1, int(y * grid_side)), min(grid_side - 1, int(x * grid_side))] = label
    return labels.flatten()


class SceneLabels(torch.utils.data.Dataset):
    """All labelled images preprocessed once: pixels (M, 3, H, W) and labels cells (M, 9), word (M,), and,
    where scenes.jsonl gives each object's place and size ("objects", the randomized world), the object
    under every patch, footprints (M, g*g); -1 (ignored) elsewhere."""

    def __init__(self, path: Path, image_processor: LlavaMiniImageProcessor, grid_side: int) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (made by `llava-mini data synth`)")
        pixels, cells, words, footprints = [], [], [], []
        for line_number, line in enumerate(path.read_text().splitlines(), start=1):
            try:
                entry = json.loads(line)
                image = load_image(path.parent / entry["image"])
                cells.append(torch.tensor(entry["cells"], dtype=torch.long))
                words.append(int(entry["word"]))
                objects = entry.get("objects")
                footprints.append(footprint_labels(objects, grid_side) if objects is not None
                                  else torch.full((grid_side * grid_side,), -1, dtype=torch.long))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{path}:{line_number}: not a scene label line ({error})") from error
            pixels.append(image_processor.preprocess_image(image)[0])
        if not pixels:
            raise ValueError(f"{path} has no labelled images")
        self.pixels = torch.stack(pixels)
        self.cells = torch.stack(cells)
        self.words = torch.tensor(words, dtype=torch.long)
        self.footprints = torch.stack(footprints)

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.pixels[index], self.cells[index], self.words[index], self.footprints[index]


class SceneHead(nn.Module):
    """Per-patch classifiers over the tower's tokens (B, N, D), N = g*g patches.

    forward -> dict of logits (B, N, classes): "cell" (empty or shape x colour of the cell under the patch),
    "shape" and "colour" of that cell (0 = empty), "word" written in the image, and the patch's own "row"
    and "column" in the g x g grid; and "place" (B, N, 2), the regressed (row, column) of an object's cell
    in -1, 0, 1 (0, 0 on empty cells). `patch_cells` (N,) maps each patch to the 3 x 3 cell holding its centre.
    """

    def __init__(self, dim: int, grid_side: int, place_weight: float = 1.0) -> None:
        super().__init__()
        self.place_weight = place_weight
        centres = (torch.arange(grid_side) + 0.5) / grid_side  # patch centres as a fraction of the side
        cell_of = (centres * 3).long()  # row or column of the 3 x 3 cell
        self.register_buffer("patch_cells", (cell_of.view(-1, 1) * 3 + cell_of.view(1, -1)).flatten())
        self.register_buffer("patch_rows", torch.arange(grid_side).repeat_interleave(grid_side))
        self.register_buffer("patch_columns", torch.arange(grid_side).repeat(grid_side))
        # (row, column) of each patch's cell, centred to -1, 0, 1: the "place" target where the cell is occupied.
        cell_places = torch.stack([self.patch_cells // 3, self.patch_cells % 3], dim=-1).float() - 1.0
        self.register_buffer("cell_places", cell_places)  # (N, 2)
        self.norm = nn.LayerNorm(dim)
        self.classifiers = nn.ModuleDict(
            {
                "cell": nn.Linear(dim, NUM_CELL_CLASSES),
                "shape": nn.Linear(dim, 1 + len(SHAPES)),
                "colour": nn.Linear(dim, 1 + len(COLOURS)),
                "word": nn.Linear(dim, NUM_WORD_CLASSES),
                "row": nn.Linear(dim, grid_side),
                "column": nn.Linear(dim, grid_side),
                "place": nn.Linear(dim, 2),
                # the object under the patch itself (where footprints are known), and its shape and colour
                "footprint": nn.Linear(dim, NUM_CELL_CLASSES),
                "footprint_shape": nn.Linear(dim, 1 + len(SHAPES)),
                "footprint_colour": nn.Linear(dim, 1 + len(COLOURS)),
            }
        )

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        normed = self.norm(features)
        return {name: classifier(normed) for name, classifier in self.classifiers.items()}

    def targets(self, cells: torch.Tensor, words: torch.Tensor, footprints: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 9) cell classes, (B,) words and (B, N) footprints (-1: unknown) -> (B, N) class targets for every
        head (-1 is ignored), (B, N, 2) for "place"."""
        cell = cells[:, self.patch_cells]  # (B, N)
        occupied = cell > 0
        known, under = footprints >= 0, footprints.clamp(min=1) - 1
        return {
            "footprint": footprints,
            "footprint_shape": torch.where(known, torch.where(footprints > 0, 1 + under // len(COLOURS), 0), -1),
            "footprint_colour": torch.where(known, torch.where(footprints > 0, 1 + under % len(COLOURS), 0), -1),
            "place": occupied.unsqueeze(-1) * self.cell_places,
            "cell": cell,
            "shape": torch.where(occupied, 1 + (cell - 1) // len(COLOURS), 0),
            "colour": torch.where(occupied, 1 + (cell - 1) % len(COLOURS), 0),
            "word": words.unsqueeze(1).expand_as(cell),
            "row": self.patch_rows.expand_as(cell),
            "column": self.patch_columns.expand_as(cell),
        }

    def loss(
        self, features: torch.Tensor, cells: torch.Tensor, words: torch.Tensor, footprints: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed cross-entropy of the class heads over every patch plus `place_weight` times the place
        regression's mean squared error; also (B,) whether every patch of an image was read right (cell and word)."""
        if features.shape[1] != self.patch_cells.shape[0]:
            raise ValueError(
                f"vision pre-training needs patch tokens only ({self.patch_cells.shape[0]}), got {features.shape[1]}; "
                "use vision_feature_select='patch'"
            )
        logits, targets = self(features), self.targets(cells, words, footprints)
        place = logits.pop("place")
        # a head whose targets are all unknown (no footprints in the batch) adds nothing
        loss = sum(
            F.cross_entropy(logits[name].flatten(0, 1), targets[name].flatten(), ignore_index=-1, reduction="sum")
            / (targets[name] >= 0).sum().clamp(min=1)
            for name in logits
        )
        loss = loss + self.place_weight * F.mse_loss(place, targets["place"])
        right = (logits["cell"].argmax(-1) == targets["cell"]) & (logits["word"].argmax(-1) == targets["word"])
        return loss, right.all(-1)


def pretrain_vision_tower(
    tower: VisionTower,
    image_processor: LlavaMiniImageProcessor,
    data_root: Path,
    settings: VisionPretrainingArgs,
    seed: int = 0,
    checkpoint: Path | None = None,
    resume: bool = False,
    main_process: bool = True,
) -> dict:
    """Train `tower` in place on dense scene labels; returns the loss curve and the final train accuracy.

    With `checkpoint`, the run's state (tower, heads, optimizer, scheduler, step, losses, RNG) is written there
    atomically every `settings.save_every` steps; with `resume` a run continues from it and ends with the same
    weights as an uninterrupted run. Several processes pass the same folder; only the `main_process` writes it,
    shows the progress bar and logs the summary line.
    """
    if settings.save_every < 1:
        raise ValueError(f"vision_pretraining.save_every must be >= 1, got {settings.save_every}")
    grid_side = int(tower.model.config.image_size) // int(tower.model.config.patch_size)
    dataset = SceneLabels(data_root / settings.data, image_processor, grid_side)
    generator = torch.Generator().manual_seed(seed)
    head = SceneHead(tower.hidden_size, grid_side, settings.place_weight)
    parameters = [*tower.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(dataset) / settings.batch_size)
    total_steps = max(1, round(settings.epochs * steps_per_epoch))
    scheduler = get_cosine_schedule_with_warmup(optimizer, round(settings.warmup_ratio * total_steps), total_steps)
    tower.train()
    tower.requires_grad_(True)
    losses, correct, seen, start_step = [], 0, 0, 0
    order = torch.cat([torch.randperm(len(dataset), generator=generator) for _ in range(math.ceil(settings.epochs) + 1)])
    modules = {"tower": tower, "head": head, "optimizer": optimizer, "scheduler": scheduler}
    if resume and checkpoint is not None and (checkpoint / STATE_FILE).is_file():
        state = load_training_state(checkpoint)
        for name, module in modules.items():
            module.load_state_dict(state[name])
        torch.set_rng_state(state["rng"])
        losses, correct, seen, start_step = state["losses"], state["correct"], state["seen"], state["step"]
        logger.info("vision pre-training resumes at step %d of %d", start_step, total_steps)
    started = time.perf_counter()
    progress = tqdm(
        range(start_step, total_steps),
        initial=start_step,
        total=total_steps,
        desc="vision pre-training",
        disable=not main_process,
    )
    for step in progress:
        batch = order[step * settings.batch_size : (step + 1) * settings.batch_size]
        pixels, cells, words = dataset.pixels[batch], dataset.cells[batch], dataset.words[batch]
        loss, image_right = head.loss(tower(pixels), cells, words, dataset.footprints[batch])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step >= total_steps - steps_per_epoch:  # accuracy over (about) the last epoch
            correct += int(image_right.sum())
            seen += len(batch)
        rate = (step + 1 - start_step) * settings.batch_size / (time.perf_counter() - started)
        progress.set_postfix(loss=f"{losses[-1]:.4f}", images_per_s=f"{rate:.0f}")
        if checkpoint is not None and (step + 1) % settings.save_every == 0 and step + 1 < total_steps:
            state = {name: module.state_dict() for name, module in modules.items()}
            state.update(rng=torch.get_rng_state(), losses=losses, correct=correct, seen=seen, step=step + 1)
            if main_process:
                atomic_directory_write(checkpoint, partial(save_training_state, state=state))
    summary = {"losses": losses, "last_epoch_scene_accuracy": correct / max(1, seen), "images": len(dataset)}
    if main_process:
        logger.info("vision pre-training: final loss %.4f, scene accuracy %.3f", losses[-1], summary["last_epoch_scene_accuracy"])
    return summary
