"""Supervised vision-tower pre-training on the synthetic world's dense scene labels (tiny recipe, stage 0)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llava_mini.data.synthetic import CELL, NUM_CELL_CLASSES, WORDS, Thing, generate_dataset, scene_labels
from llava_mini.model.vision import VisionTower
from llava_mini.processing.image import LlavaMiniImageProcessor
from llava_mini.train.recipe import run_recipe
from llava_mini.train.vision_pretraining import SceneHead, VisionPretrainingArgs, pretrain_vision_tower
from tests.conftest import tiny_vision_config
from tests.train.test_recipe import stage, write_recipe


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scenes")
    generate_dataset(out, seed=3, num_images=24, num_videos=2)
    return out


def test_scene_labels_name_the_cell_shape_colour_and_word():
    red_circle_centre = Thing("circle", "red", CELL // 2, CELL // 2, 20)
    green_star_bottom_right = Thing("star", "green", 2 * CELL + CELL // 2, 2 * CELL + CELL // 2, 20)
    labels = scene_labels([red_circle_centre, green_star_bottom_right])
    assert labels["cells"][0] == 1 + 0 * 8 + 0  # circle, red
    assert labels["cells"][8] == 1 + 3 * 8 + 1  # star, green
    assert labels["cells"][1:8] == [0] * 7 and labels["word"] == 0
    assert scene_labels([], "dog")["word"] == 1 + WORDS.index("dog")
    assert max(labels["cells"]) < NUM_CELL_CLASSES


def test_scene_head_targets_factor_each_patch_into_shape_colour_and_place():
    head = SceneHead(dim=16, grid_side=6)  # 6 x 6 patches: each 3 x 3 cell covers 2 x 2 of them
    red_circle_top_left = 1 + 0 * 8 + 0
    green_star_bottom_right = 1 + 3 * 8 + 1
    cells = torch.tensor([[red_circle_top_left, 0, 0, 0, 0, 0, 0, 0, green_star_bottom_right]])
    unknown = torch.full((1, 36), -1)
    targets = {name: value.view(6, 6, -1).squeeze(-1) for name, value in head.targets(cells, torch.tensor([0]), unknown).items()}
    assert all(targets[name].eq(-1).all() for name in ("footprint", "footprint_shape", "footprint_colour"))
    assert (targets["shape"][:2, :2] == 1).all() and (targets["colour"][:2, :2] == 1).all()
    assert (targets["shape"][4:, 4:] == 4).all() and (targets["colour"][4:, 4:] == 2).all()
    assert targets["shape"][2:4].eq(0).all() and targets["colour"][:, 2:4].eq(0).all()
    assert targets["row"][:, 0].tolist() == list(range(6)) and targets["column"][0].tolist() == list(range(6))
    place = targets["place"]
    assert (place[:2, :2] == torch.tensor([-1.0, -1.0])).all() and (place[4:, 4:] == torch.tensor([1.0, 1.0])).all()
    assert place[2:4].eq(0).all() and place[:, 2:4].eq(0).all()  # empty cells have no place
    logits = head(torch.zeros(1, 36, 16))
    assert {name: tensor.shape[-1] for name, tensor in logits.items()} == {
        "cell": NUM_CELL_CLASSES, "shape": 6, "colour": 9, "word": len(WORDS) + 1, "row": 6, "column": 6, "place": 2,
        "footprint": NUM_CELL_CLASSES, "footprint_shape": 6, "footprint_colour": 9,
    }


def test_footprints_label_the_patches_under_each_object():
    from llava_mini.train.vision_pretraining import footprint_labels

    # 4 x 4 patches; a big red circle (shape 0, colour 0) over the top-left 2 x 2 patches, a tiny green star
    # (shape 3, colour 1) smaller than a patch at the bottom right, and a blue square drawn last over the circle.
    labels = footprint_labels([[0, 0, 0.25, 0.25, 0.24], [3, 1, 0.9, 0.9, 0.02], [1, 2, 0.125, 0.125, 0.05]], 4).view(4, 4)
    assert labels[0, 0] == 1 + 1 * 8 + 2  # the square, drawn last, hides the circle under its own patch
    assert labels[0, 1] == labels[1, 0] == labels[1, 1] == 1 + 0 * 8 + 0
    assert labels[3, 3] == 1 + 3 * 8 + 1  # the patch holding the star's centre
    assert int((labels > 0).sum()) == 5
    head = SceneHead(dim=16, grid_side=4)
    targets = head.targets(torch.zeros(1, 9, dtype=torch.long), torch.tensor([0]), labels.view(1, 16))
    assert targets["footprint_shape"].view(4, 4)[3, 3] == 4 and targets["footprint_colour"].view(4, 4)[3, 3] == 2
    assert targets["footprint_shape"].view(4, 4)[2, 2] == 0


def test_every_synthetic_image_has_a_label_line(world):
    lines = [json.loads(line) for line in (world / "scenes.jsonl").read_text().splitlines()]
    assert len(lines) == 24 and all((world / line["image"]).is_file() and len(line["cells"]) == 9 for line in lines)


def test_pretraining_fits_the_labels(world):
    torch.manual_seed(0)
    vision = dict(tiny_vision_config(), image_size=96, patch_size=12)
    from llava_mini.model.configuration import LlavaMiniConfig

    config = LlavaMiniConfig(vision_config=vision, text_config={"model_type": "llama"})
    tower = VisionTower(config.vision_config, -2, "patch")
    settings = VisionPretrainingArgs(epochs=30, batch_size=8, lr=3e-3, warmup_ratio=0.0)
    summary = pretrain_vision_tower(tower, LlavaMiniImageProcessor(size=96), world, settings)
    losses = summary["losses"]
    assert len(losses) == 90
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5


def test_the_recipe_runs_it_once_and_a_resumed_run_reuses_it(tmp_path, world):
    block = {"data": "scenes.jsonl", "epochs": 1, "batch_size": 8}
    recipe = write_recipe(tmp_path, world, [stage("components", "components", vision_pretraining=block)])
    final = run_recipe(str(recipe))
    saved = final.parent / "vision-pretrained"
    assert json.loads((saved / "summary.json").read_text())["images"] == 24
    tower = load_file(str(saved / "vision_tower.safetensors"))
    assert tower and all(torch.isfinite(t).all() for t in tower.values())
    modified = saved.stat().st_mtime_ns
    (final.parent / "final").rename(final.parent / "old-final")  # rerun the stage: the saved tower is reused
    run_recipe(str(recipe))
    assert saved.stat().st_mtime_ns == modified


def test_a_bad_block_is_named(tmp_path, world):
    recipe = write_recipe(tmp_path, world, [stage("components", "components", vision_pretraining={"epoch": 1})])
    with pytest.raises(ValueError, match="vision_pretraining"):
        run_recipe(str(recipe))


def test_an_interrupted_pretraining_resumes_to_the_same_tower(tmp_path, world):
    vision = dict(tiny_vision_config(), image_size=96, patch_size=12)
    from llava_mini.model.configuration import LlavaMiniConfig

    config = LlavaMiniConfig(vision_config=vision, text_config={"model_type": "llama"})
    settings = VisionPretrainingArgs(epochs=2, batch_size=8, lr=3e-3, save_every=2)  # 6 steps
    processor = LlavaMiniImageProcessor(size=96)

    def fresh_tower() -> VisionTower:
        torch.manual_seed(0)
        return VisionTower(config.vision_config, -2, "patch")

    full = fresh_tower()
    expected = pretrain_vision_tower(full, processor, world, settings)
    tower, checkpoint, steps = fresh_tower(), tmp_path / "checkpoint", []
    original = torch.optim.AdamW.step

    def killed_at_step_five(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == 5:
            raise KeyboardInterrupt("killed")
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.AdamW, "step", killed_at_step_five)
        with pytest.raises(KeyboardInterrupt):
            pretrain_vision_tower(tower, processor, world, settings, checkpoint=checkpoint)
    assert (checkpoint / "trainer_state.pt").is_file() and not list(tmp_path.glob(".checkpoint*"))
    resumed = pretrain_vision_tower(fresh_tower(), processor, world, settings, checkpoint=checkpoint, resume=True)
    assert resumed["losses"] == pytest.approx(expected["losses"], rel=1e-5)
    assert len(resumed["losses"]) == 6


def test_the_recipe_resumes_an_interrupted_pretraining(tmp_path, world, monkeypatch):
    block = {"data": "scenes.jsonl", "epochs": 2, "batch_size": 8, "save_every": 2}
    recipe = write_recipe(tmp_path, world, [stage("components", "components", vision_pretraining=block)])
    import llava_mini.train.recipe as recipe_module

    original, runs = recipe_module.pretrain_vision_tower, []

    def record(*args, **kwargs):
        runs.append(kwargs["resume"])
        return original(*args, **kwargs)

    monkeypatch.setattr(recipe_module, "pretrain_vision_tower", record)
    final = run_recipe(str(recipe), resume=True)
    stage_dir = final.parent
    assert runs == [True] and (stage_dir / "vision-pretrained" / "vision_tower.safetensors").is_file()
    assert not (stage_dir / "vision-pretraining-checkpoint").exists()  # removed once the tower is saved
