"""Training recipes on a tiny model: trainable sets, accumulation, resume, atomic saves, DDP, FSDP config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from llava_mini.data.synthetic import generate_dataset
from llava_mini.eval.synth import load_questions
from llava_mini.inference.generate import LlavaMini
from llava_mini.model.modeling import LlavaMiniForConditionalGeneration
from llava_mini.train.args import load_recipe
from llava_mini.train.checkpoint import atomic_directory_write
from llava_mini.train.freezing import set_trainable
from llava_mini.train.recipe import TrainRecipe, run_recipe
from tests.conftest import REPO_ROOT, tiny_config

TINY_MODEL = {
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4},
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "num_key_value_heads": 2},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate_dataset(out, seed=5, num_images=16, num_videos=4)
    return out


def write_recipe(tmp_path: Path, world: Path, stages: list[dict], **top) -> Path:
    recipe = {
        "output_dir": str(tmp_path / "out"),
        "data_root": str(world),
        "preset": "tiny",
        "threads": 1,
        "tokenizer_vocab_size": 300,
        "model": TINY_MODEL,
        "log_every": 1,
        "stages": stages,
        **top,
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def stage(name: str, mode: str, **fields) -> dict:
    data = ["captions.json"] if mode == "align" else ["instructions.json"]
    return {"name": name, "mode": mode, "data": data, "max_steps": 3, "batch_size": 4, "lr": 1e-3, **fields}


def losses_of(final: Path) -> list[float]:
    return json.loads((final / "training_summary.json").read_text())["losses"]


def test_trainable_parameters_per_stage():
    model = LlavaMiniForConditionalGeneration(tiny_config())
    prefixes = lambda names: {name.split(".")[0] for name in names}  # noqa: E731
    assert prefixes(set_trainable(model, "align")) == {"projector"}
    assert prefixes(set_trainable(model, "instruct")) == {"projector", "compressor", "prefusion", "language_model"}
    assert prefixes(set_trainable(model, "components")) == {
        "vision_tower", "projector", "compressor", "prefusion", "language_model"}
    with pytest.raises(ValueError, match="unknown stage mode"):
        set_trainable(model, "everything")


def test_batch_times_accumulation_splits_give_equal_losses(tmp_path, world):
    one = run_recipe(str(write_recipe(tmp_path / "a", world, [stage("s", "components", batch_size=4)])))
    two = run_recipe(str(write_recipe(tmp_path / "b", world, [stage("s", "components", batch_size=2, grad_accum=2)])))
    assert losses_of(one) == pytest.approx(losses_of(two), rel=1e-5)


def test_media_read_by_a_data_worker_train_what_the_training_process_reads(tmp_path, world):
    inline = run_recipe(str(write_recipe(tmp_path / "a", world, [stage("s", "components", group_by="modality")])))
    worker = run_recipe(str(write_recipe(tmp_path / "b", world, [stage("s", "components", group_by="modality",
                                                                      data_workers=1)])))
    assert losses_of(inline) == pytest.approx(losses_of(worker), rel=1e-6)
    with pytest.raises(ValueError, match="data_workers must be a whole number >= 0"):
        load_recipe(str(write_recipe(tmp_path / "c", world, [stage("s", "components", data_workers=-1)])))


def test_two_stages_chain_and_new_modules_start_fresh(tmp_path, world):
    path = write_recipe(tmp_path, world, [stage("align", "align", max_steps=2),
                                         stage("instruct", "instruct", max_steps=2, model={"prefusion_layers": 1})])
    final = run_recipe(str(path))
    aligned = LlavaMiniForConditionalGeneration.from_pretrained(tmp_path / "out" / "stage0-align" / "final")
    tuned = LlavaMiniForConditionalGeneration.from_pretrained(final)
    assert aligned.config.compressor_type == "none" and aligned.config.prefusion_layers == 0
    assert tuned.config.compressor_type == "query" and tuned.config.prefusion_layers == 1
    # The frozen vision tower came through unchanged from stage 1.
    for (name, a), (_, b) in zip(aligned.vision_tower.state_dict().items(), tuned.vision_tower.state_dict().items(), strict=True):
        assert (a == b).all(), name


def test_resume_after_an_interruption_reproduces_the_uninterrupted_run(tmp_path, world):
    stages = [stage("s", "components", max_steps=4, save_every=2, group_by="length")]
    full = run_recipe(str(write_recipe(tmp_path / "full", world, stages)))
    path = write_recipe(tmp_path / "cut", world, stages)
    interrupted = TrainRecipe(load_recipe(path))
    original_step, calls = interrupted.train_step, []

    def killed_at_step_three(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return original_step(*args, **kwargs)

    interrupted.train_step = killed_at_step_three
    with pytest.raises(KeyboardInterrupt):
        interrupted.run()
    stage_dir = tmp_path / "cut" / "out" / "stage0-s"
    assert (stage_dir / "checkpoint-2").is_dir() and not (stage_dir / "final").exists()
    resumed = run_recipe(str(path), resume=True)
    assert losses_of(resumed) == pytest.approx(losses_of(full), rel=1e-6)


def test_a_failed_save_leaves_no_partial_checkpoint(tmp_path):
    target = tmp_path / "checkpoint-5"

    def broken(directory: Path) -> None:
        (directory / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_directory_write(target, broken)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_unknown_recipe_keys_are_named(tmp_path, world):
    path = write_recipe(tmp_path, world, [stage("s", "components", learning_rate=1)])
    with pytest.raises(ValueError, match="unknown key.*learning_rate"):
        load_recipe(path)
    with pytest.raises(ValueError, match="key=value"):
        load_recipe(path, ["oops"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stages.3.lr=1", r"stages has 1 entries \(0-0\)"),
        ("stages.first.lr=1", r"stages has 1 entries"),
        ("stages.0.name.x=1", r"stages.0.name is a value, not a section"),
        ("stages.0.lr=fast", r"stages\[0\]: lr = 'fast' is invalid"),
        ("stages.0.batch_size=2.5", r"batch_size = 2.5 is invalid"),
        ("seed=yes", r"seed = True is invalid"),
        ("stages.0.mode=pretrain", r"mode = 'pretrain' is invalid"),
    ],
)
def test_bad_overrides_are_named(tmp_path, world, override, message):
    path = write_recipe(tmp_path, world, [stage("s", "components")])
    with pytest.raises(ValueError, match=message):
        load_recipe(path, [override])


def test_numbers_in_exponent_form_are_numbers(tmp_path, world):
    path = write_recipe(tmp_path, world, [stage("s", "components")])
    recipe = load_recipe(path, ["stages.0.lr=1e-4", "stages.0.multimodal_lr=2E-5"])
    assert recipe.stages[0].lr == 1e-4 and recipe.stages[0].multimodal_lr == 2e-5


def test_two_process_ddp_matches_one_process(tmp_path, world):
    grouped = {"group_by": "length"}  # the same global batches for any split
    single = run_recipe(str(write_recipe(tmp_path / "one", world, [stage("s", "components", batch_size=4, **grouped)])))
    path = write_recipe(tmp_path / "ddp", world, [stage("s", "components", batch_size=2, **grouped)])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT / "src"))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
               "-m", "llava_mini.cli", "train", str(path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert losses_of(tmp_path / "ddp" / "out" / "stage0-s" / "final") == pytest.approx(losses_of(single), rel=1e-5)


def test_shipped_fsdp_config_on_two_cpu_processes_trains_what_one_process_trains(tmp_path, world):
    """recipes/accelerate/fsdp.yaml through `accelerate launch`, 2 processes, fp32: same losses, and the saved
    model answers as the one-process model. accelerate 1.15 shards with FSDP only on accelerators: on CPUs it
    runs the config as DDP over gloo, which the recipe says once and records in the summary."""
    grouped = {"group_by": "length"}
    single = run_recipe(str(write_recipe(tmp_path / "one", world, [stage("s", "components", batch_size=4, **grouped)])))
    config = yaml.safe_load((REPO_ROOT / "recipes" / "accelerate" / "fsdp.yaml").read_text())
    (tmp_path / "fsdp.yaml").write_text(yaml.safe_dump({**config, "num_processes": 2, "mixed_precision": "no"}))
    path = write_recipe(tmp_path / "fsdp", world, [stage("s", "components", batch_size=2, **grouped)])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT / "src"))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "fsdp.yaml"),
               "--main_process_port", "29534", "-m", "llava_mini.cli", "train", str(path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    final = tmp_path / "fsdp" / "out" / "stage0-s" / "final"
    assert losses_of(final) == pytest.approx(losses_of(single), rel=1e-5)
    summary = json.loads((final / "training_summary.json").read_text())
    assert (summary["distributed_type"], summary["launched_with"], summary["processes"]) == ("MULTI_CPU", "FSDP", 2)
    assert result.stdout.count("trained model:") == 1  # the main process only
    assert result.stderr.count("launched with a FSDP config but runs MULTI_CPU") == 1
    one, two = LlavaMini.load(str(single)), LlavaMini.load(str(final))
    for question in load_questions(world, limit=4):
        assert two.ask(question.media_path, question.question, max_new_tokens=6) == one.ask(
            question.media_path, question.question, max_new_tokens=6)


def test_building_from_pretrained_vision_tower_and_llm(tmp_path, world):
    """The real-scale path (hub ids on a user's machine) on tiny local 'pretrained' parts."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from llava_mini.processing.tokenizer import train_bpe_tokenizer
    from tests.conftest import TOKENIZER_CORPUS

    tower = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, image_size=32, patch_size=8))
    tower.save_pretrained(tmp_path / "tower")
    tokenizer = train_bpe_tokenizer(TOKENIZER_CORPUS, vocab_size=300)
    llm = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tokenizer)))
    llm.save_pretrained(tmp_path / "llm")
    tokenizer.save_pretrained(tmp_path / "llm")
    path = write_recipe(tmp_path, world, [stage("align", "align", max_steps=1)], preset=None,
                        vision_tower=str(tmp_path / "tower"), language_model=str(tmp_path / "llm"), model={})
    final = run_recipe(str(path))
    model = LlavaMiniForConditionalGeneration.from_pretrained(final)
    torch_equal = [(a == b).all() for a, b in zip(model.vision_tower.model.state_dict().values(),
                                                  tower.state_dict().values(), strict=True)]
    assert all(torch_equal)  # the frozen tower is the pretrained one
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<image>")


def test_stage_repeat_multiplies_records_of_a_media_kind(tmp_path: Path, world: Path) -> None:
    path = write_recipe(tmp_path, world, [stage("instruct", "instruct", repeat={"video": 3})])
    recipe = TrainRecipe(load_recipe(path))
    plain = TrainRecipe(load_recipe(write_recipe(tmp_path / "plain", world, [stage("instruct", "instruct")])))
    repeated, original = recipe.read_records(recipe.args.stages[0]), plain.read_records(plain.args.stages[0])
    kinds = [record.media_kind for record in original]
    assert kinds.count("video") == 4
    assert [record.media_kind for record in repeated].count("video") == 3 * kinds.count("video")
    assert [record.media_kind for record in repeated].count("image") == kinds.count("image")


@pytest.mark.parametrize("repeat, message", [({"audio": 2}, "unknown media kind"), ({"video": 0}, ">= 1")])
def test_stage_repeat_rejects_bad_entries(tmp_path: Path, world: Path, repeat: dict, message: str) -> None:
    path = write_recipe(tmp_path, world, [stage("instruct", "instruct", repeat=repeat)])
    with pytest.raises(ValueError, match=message):  # when the recipe is read, before any stage trains
        load_recipe(path)


def test_stage_group_by_rejects_an_unknown_grouping(tmp_path: Path, world: Path) -> None:
    path = write_recipe(tmp_path, world, [stage("instruct", "instruct", group_by="size")])
    with pytest.raises(ValueError, match="group_by = 'size' is invalid.*modality"):
        load_recipe(path)


def test_a_resumed_run_rewrites_the_log_from_its_step(tmp_path, world):
    stages = [stage("s", "components", max_steps=4, save_every=2, group_by="length")]
    path = write_recipe(tmp_path, world, stages)
    interrupted = TrainRecipe(load_recipe(path))
    original_step, calls = interrupted.train_step, []

    def killed_at_step_four(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")
        return original_step(*args, **kwargs)

    interrupted.train_step = killed_at_step_four
    with pytest.raises(KeyboardInterrupt):
        interrupted.run()
    log = tmp_path / "out" / "stage0-s" / "log.jsonl"
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]  # resumable at 2
    with log.open("a") as handle:
        handle.write('{"step": 4, "loss"')  # a line cut by the kill
    run_recipe(str(path), resume=True)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4]


def test_the_robust_recipe_is_the_grid_one_on_the_randomized_world_with_a_128_px_tower():
    """recipes/tiny_cpu_robust.yaml (issue 17): the grid recipe's stages on the files `data synth --world
    randomized` writes, with a 128 px tower input (still 64 patches), its own step counts and a data worker."""
    robust = load_recipe(REPO_ROOT / "recipes" / "tiny_cpu_robust.yaml")
    grid = load_recipe(REPO_ROOT / "recipes" / "tiny_cpu.yaml")
    assert str(robust.data_root).endswith("synth-robust") and robust.output_dir != grid.output_dir
    assert robust.model == {"vision_config": {"image_size": 128, "patch_size": 16}} and not grid.model
    own = {"max_steps": 0, "data_workers": 0}  # its own step counts and a data worker; the rest as the grid recipe
    assert [replace(stage, **own) for stage in robust.stages] == [replace(stage, **own) for stage in grid.stages]
    assert robust.threads == 1 and [stage.data_workers for stage in robust.stages] == [1, 0, 1]
    written = {"captions.json", "instructions.json", "scenes.jsonl"}
    assert {name for stage in robust.stages for name in stage.data} <= written
    assert robust.stages[0].vision_pretraining["data"] in written
    header = (REPO_ROOT / "recipes" / "tiny_cpu_robust.yaml").read_text()
    assert "llava-mini data synth --world randomized --out runs/synth-robust" in header
