"""How well one compressed token says where a single object is: a linear probe of its (x, y).

Renders single objects of the synthetic world at random places, takes the compressor's token after the
projector (the one token the LLM gets per image or video frame) and the mean of the tower's patch tokens,
fits ridge regressions to the object's pixel coordinates on 3/4 of them and prints R^2 on the rest.
A token that keeps the place scores near 1; the motion questions need it.

    python benchmarks/position_probe.py                      # the shipped model
    python benchmarks/position_probe.py --model DIR --samples 1000 --json
"""

from __future__ import annotations

import argparse
import json
import random

import torch

from llava_mini.data.synthetic import COLOURS, IMAGE_SIZE, SHAPES, Thing, render
from llava_mini.inference.generate import LlavaMini


def ridge_r2(features: torch.Tensor, targets: torch.Tensor, train_fraction: float = 0.75, ridge: float = 1e-2) -> list[float]:
    """R^2 per target column of a ridge regression fitted on the first `train_fraction` of the rows."""
    inputs = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.double)], dim=1)
    targets = targets.double()
    split = int(train_fraction * len(inputs))
    train, test = slice(0, split), slice(split, None)
    gram = inputs[train].T @ inputs[train] + ridge * torch.eye(inputs.shape[1], dtype=torch.double)
    weights = torch.linalg.solve(gram, inputs[train].T @ targets[train])
    residual = ((inputs[test] @ weights - targets[test]) ** 2).sum(0)
    spread = ((targets[test] - targets[test].mean(0)) ** 2).sum(0)
    return (1 - residual / spread).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory or hub id (default: the shipped model)")
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.samples < 8:
        parser.error(f"--samples must be at least 8, got {args.samples}")

    chat = LlavaMini.load(args.model)
    image_processor = chat.processor.image_processor
    rng = random.Random(args.seed)
    pixels, places = [], []
    for _ in range(args.samples):
        x, y = rng.randint(18, IMAGE_SIZE - 18), rng.randint(18, IMAGE_SIZE - 18)
        thing = Thing(rng.choice(SHAPES), rng.choice(list(COLOURS)), x, y, 24)
        pixels.append(image_processor.preprocess_image(render([thing]))[0])
        places.append((x, y))
    pixel_values = torch.stack(pixels).unsqueeze(1)  # (M, 1 view, 3, H, W)
    with torch.no_grad():
        patches, _ = chat.model.encode_views(pixel_values)  # (M, N, Dv)
        _, compressed, _ = chat.model.compress_and_project(pixel_values)  # (M, K, D)
    targets = torch.tensor(places)
    results = {
        "samples": args.samples,
        "compressed_token_r2_xy": ridge_r2(compressed.flatten(1), targets),
        "mean_patch_token_r2_xy": ridge_r2(patches.mean(1), targets),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.samples} single objects, R^2 of a linear probe of (x, y) on held-out quarter:")
    for name in ("compressed_token_r2_xy", "mean_patch_token_r2_xy"):
        print(f"  {name.removesuffix('_r2_xy').replace('_', ' '):>18}: x {results[name][0]:.2f}, y {results[name][1]:.2f}")


if __name__ == "__main__":
    main()
