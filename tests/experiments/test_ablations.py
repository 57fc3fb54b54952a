"""The ablation experiment on tiny models: the shared start (built once, never shown a picture), stage 1 and
stage 2 of every arm from it, learning curves (resumable), the timing run, merging partial runs, errors."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from llava_mini.cli import main
from llava_mini.data.independent import generate_independent
from llava_mini.data.records import ConversationRecord
from llava_mini.data.synthetic import generate_dataset
from llava_mini.experiments import ablations
from llava_mini.experiments.ablations import (
    ARMS,
    BASELINE_ARM,
    AblationRecipe,
    AblationSettings,
    Budget,
    aggregate,
    arm_recipe,
    arms_by_name,
    merge_ablations,
    prepare,
    read_base_recipe,
    run_ablations,
    select_questions,
    start_recipe,
    without_media,
)
from llava_mini.inference.generate import GenerationSettings, LlavaMini
from llava_mini.model.modeling import LlavaMiniForConditionalGeneration
from tests.conftest import tiny_config

PATCHES = 16  # 32 px images, 8 px patches: a 4 x 4 grid
LLM_LAYERS = 3  # the inside-the-LLM arm keeps 2 layers over all tokens, so the LLM needs more than 2
TINY_MODEL = {
    "vision_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 32,
        "patch_size": 8,
    },
    "text_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": LLM_LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
    "compressor_num_heads": 4,
}
TIMING_LLM = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2}
SMOKE = Budget(
    "smoke",
    vision_epochs=1.0,
    text_steps=2,
    align_steps=2,
    instruct_steps=4,
    batch_size=2,
    eval_every=2,
    curve_limit=4,
    eval_limit=6,
    eval_batch_size=6,
    timing_repeats=1,
    seeds=2,
    threads=1,
)
# Per arm: vision tokens per picture in the LLM's input, and the modules stage 2 trains.
EXPECTED = {
    "llava-v1.5": (PATCHES, {"projector", "language_model"}),
    "query-c1-n0": (1, {"projector", "compressor", "language_model"}),
    "pool-c1-n0": (1, {"projector", "language_model"}),  # pooling has no parameters
    "mini-c1-n1": (1, {"projector", "compressor", "prefusion", "language_model"}),
    "mini-c1-n2": (1, {"projector", "compressor", "prefusion", "language_model"}),
    "mini-c1-n4": (1, {"projector", "compressor", "prefusion", "language_model"}),
    "mini-c4-n2": (4, {"projector", "compressor", "prefusion", "language_model"}),
    "mini-c16-n2": (16, {"projector", "compressor", "prefusion", "language_model"}),
    "mini-c1-n2-llm-init": (1, {"projector", "compressor", "prefusion", "language_model"}),
    "prefusion-only": (0, {"projector", "compressor", "prefusion", "language_model"}),
    "text-only": (0, {"projector", "language_model"}),
    "inside-llm-c1-m2": (1, {"projector", "compressor", "language_model"}),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate_dataset(out, seed=3, num_images=12, num_videos=4)
    return out


@pytest.fixture(scope="module")
def test_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("independent")
    generate_independent(out, seed=0, num_images=4, num_videos=2)
    return out


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    """A tiny base recipe: the tiny preset shrunk, one stage of each mode the experiment reads."""
    path = tmp_path_factory.mktemp("recipe") / "recipe.yaml"
    steps = {"max_steps": 50, "batch_size": 16, "lr": 1e-3, "group_by": "modality"}
    recipe = {
        "output_dir": "unused",
        "preset": "tiny",
        "tokenizer_vocab_size": 300,
        "model": TINY_MODEL,
        "video_max_frames": 3,
        "stages": [
            {"name": "components", "mode": "components", "data": ["captions.json"], **steps,
             "vision_pretraining": {"epochs": 5, "batch_size": 8, "lr": 1e-3}},
            {"name": "align", "mode": "align", "data": ["captions.json"], **steps},
            {"name": "instruct", "mode": "instruct", "data": ["instructions.json"], **steps,
             "repeat": {"video": 2}},
        ],
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def make_settings(out: Path, world: Path, test_set: Path, recipe: Path, **changes) -> AblationSettings:
    settings = AblationSettings(
        out=out, recipe=recipe, train_data=world, data=world, test_data=test_set, budget=SMOKE, seeds=(0, 1),
        arms=ARMS, timing_llm=TIMING_LLM,
    )
    return replace(settings, **changes)


@pytest.fixture(scope="module")
def settings(world: Path, test_set: Path, recipe: Path, tmp_path_factory) -> AblationSettings:
    return make_settings(tmp_path_factory.mktemp("ablations"), world, test_set, recipe)


@pytest.fixture(scope="module")
def start_pictures(settings: AblationSettings) -> list:
    """Builds the shared start while recording the pictures every model forward received."""
    seen = []
    forward = LlavaMiniForConditionalGeneration.forward

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("pixel_values"))
        return forward(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LlavaMiniForConditionalGeneration, "forward", spy)
        ablations.build_start(settings, read_base_recipe(settings.recipe))
    return seen


@pytest.fixture(scope="module")
def report(settings: AblationSettings, start_pictures) -> dict:
    return run_ablations(settings)


def result_of(settings: AblationSettings, arm: str, seed: int = 0) -> dict:
    return json.loads((settings.out / arm / f"seed{seed}" / "result.json").read_text())


def final_of(settings: AblationSettings, arm: str) -> Path:
    return Path(result_of(settings, arm)["train"]["final"])


def start_of(settings: AblationSettings) -> Path:
    return settings.out / "start" / "stage0-text" / "final"


def align_of(settings: AblationSettings, seed: int = 0) -> Path:
    return settings.out / "align" / f"seed{seed}" / "stage0-align" / "final"


def load(path: Path) -> LlavaMiniForConditionalGeneration:
    return LlavaMiniForConditionalGeneration.from_pretrained(path)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def image_batch(assistant: LlavaMini, world: Path) -> dict:
    question = next(q for q in select_questions(world, None) if q.modality == "image")
    media = [assistant.medium(question.media_path)]
    return assistant.prepare([assistant.question_messages(question.question, media)], [media])


def copy_start(source: AblationSettings, target: Path) -> None:
    """What a parallel session gets: the shared start and stage 1, copied."""
    for part in ("start", "align"):
        shutil.copytree(source.out / part, target / part)


# The shared start ----------------------------------------------------------------------------------------
def test_the_start_llm_is_trained_on_text_only(settings, start_pictures):
    assert start_pictures and all(pixels is None for pixels in start_pictures)  # forwards ran, none with pictures
    recipe, stage = start_recipe(settings, read_base_recipe(settings.recipe))
    records = recipe.read_records(stage)
    assert records and all(not record.media and record.media_kind is None for record in records)
    assert not any("<image>" in text or "<video>" in text for record in records for _, text in record.turns)
    config = json.loads((start_of(settings) / "config.json").read_text())
    assert config["compressor_type"] == "none" and config["prefusion_layers"] == 0
    # The tower is the vision pre-training's, kept frozen while the LLM learned the text.
    from safetensors.torch import load_file

    pretrained = load_file(str(start_of(settings).parent / "vision-pretrained" / "vision_tower.safetensors"))
    tower = load(start_of(settings)).vision_tower.state_dict()
    assert all(torch.equal(tower[key], value) for key, value in pretrained.items())


def test_the_start_and_stage1_are_built_once_and_reused(settings, report, monkeypatch):
    assert sorted(path.name for path in (settings.out / "align").iterdir()) == ["seed0", "seed1"]
    hashes = {json.loads(path.read_text())["start"]["sha256"] for path in settings.out.glob("*/seed*/result.json")}
    assert len(hashes) == 1 and report["start"]["sha256"] in hashes

    def no_training(*args, **kwargs):
        raise AssertionError("something finished was trained again")

    monkeypatch.setattr(AblationRecipe, "run_stage", no_training)
    again = run_ablations(settings)
    assert [s["accuracy"] for s in again["arms"]] == [s["accuracy"] for s in report["arms"]]
    with pytest.raises(ValueError, match="was made with other settings .instruct_steps: 4 -> 6.; use another --out"):
        run_ablations(replace(settings, budget=replace(SMOKE, instruct_steps=6)))


def test_prepare_builds_the_same_start_and_stage1_and_no_arm(settings, report, tmp_path):
    prepare(replace(settings, out=tmp_path))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["align", "experiment.json", "start"]
    assert ablations.fingerprint(tmp_path / "start" / "stage0-text" / "final") == report["start"]["sha256"]
    for seed in (0, 1):
        rebuilt = load(tmp_path / "align" / f"seed{seed}" / "stage0-align" / "final")
        assert same_weights(rebuilt, load(align_of(settings, seed)))  # the same machine rebuilds it bit for bit


# Each arm ------------------------------------------------------------------------------------------------
def test_every_arm_runs_stage1_and_stage2_from_the_shared_start(settings, report):
    start, align = load(start_of(settings)), load(align_of(settings))
    assert same_weights(start.language_model, align.language_model)  # stage 1: the LLM frozen
    assert same_weights(start.vision_tower, align.vision_tower)
    assert not same_weights(start.projector, align.projector)  # stage 1 trains the projector
    for arm in ARMS:
        result = result_of(settings, arm.name)
        assert result["align"]["path"] == str(align_of(settings)) and result["start"]["path"] == str(start_of(settings))
        tuned = load(final_of(settings, arm.name))
        assert same_weights(start.vision_tower, tuned.vision_tower)  # frozen everywhere after pre-training
        assert not same_weights(align.language_model, tuned.language_model)  # stage 2 tunes the LLM
        # The projector learns from pictures; the text-only arm never shows it one.
        assert same_weights(align.projector, tuned.projector) == (arm.name == "text-only"), arm.name
    seeds = [load(align_of(settings, seed)).projector for seed in (0, 1)]
    assert not same_weights(*seeds)  # seeds differ from stage 1 on


def test_smoke_run_writes_results_tables_and_plots(settings, report):
    assert [summary["arm"] for summary in report["arms"]] == [arm.name for arm in ARMS]
    for arm in ARMS:
        for seed in (0, 1):
            result = result_of(settings, arm.name, seed)
            assert result["seed"] == seed and result["eval"]["questions"] == SMOKE.eval_limit
            assert result["test"]["questions"] == 6 and result["train"]["steps"] == SMOKE.instruct_steps
            run_dir = settings.out / arm.name / f"seed{seed}"
            assert (run_dir / "answers.jsonl").is_file() and (run_dir / "test_answers.jsonl").is_file()
            assert result["train"]["seconds_per_step"] > 0 and result["budget"]["name"] == "smoke"
            assert result["train"]["cpu_seconds_per_step"] == result["curve"][1]["cpu_seconds_per_step"]
    assert all(summary["seeds"] == [0, 1] for summary in report["arms"])
    assert all("all" in summary["test_accuracy"] for summary in report["arms"])
    saved = json.loads((settings.out / "results.json").read_text())
    assert saved["arms"] == json.loads(json.dumps(report["arms"]))
    table = (settings.out / "results.md").read_text()
    assert all(f"| {arm.name} |" in table for arm in ARMS) and "independent test set" in table
    plots = ["curves_table7", "curves_table8", "curves_table12", "curves_floors", "accuracy_vs_flops",
             "accuracy_vs_n", "accuracy_vs_cc"]
    for plot in plots:
        assert (settings.out / f"{plot}.png").read_bytes()[:4] == b"\x89PNG", plot


def test_learning_curves_are_written_during_stage2(settings, report):
    for arm in ARMS:
        curve = [json.loads(line) for line in (settings.out / arm.name / "seed0" / "curve.jsonl").read_text().splitlines()]
        assert [point["step"] for point in curve] == [2, 4]
        assert all(0 <= point["accuracy"]["all"] <= 1 and point["questions"] == SMOKE.curve_limit for point in curve)
        assert result_of(settings, arm.name)["curve"] == curve
    summary = next(s for s in report["arms"] if s["arm"] == BASELINE_ARM)
    assert [point["step"] for point in summary["curve"]] == [2, 4] and len(summary["curve"][0]["values"]) == 2


def test_a_killed_arm_resumes_from_its_last_curve_point(settings, report, tmp_path, monkeypatch):
    copy_start(settings, tmp_path)
    rerun = replace(settings, out=tmp_path, arms=arms_by_name(["mini-c1-n2"]), seeds=(0,), timing=False)
    record = ablations.LearningCurve.record

    def killed_at_step_4(self, step, model, processor):
        if step == 4:
            raise KeyboardInterrupt
        return record(self, step, model, processor)

    monkeypatch.setattr(ablations.LearningCurve, "record", killed_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        run_ablations(rerun)
    run_dir = tmp_path / "mini-c1-n2" / "seed0"
    assert not (run_dir / "result.json").exists()
    assert [json.loads(line)["step"] for line in (run_dir / "curve.jsonl").read_text().splitlines()] == [2]
    assert (run_dir / "train" / "stage0-instruct" / "checkpoint-2").is_dir()
    recorded = []
    monkeypatch.setattr(
        ablations.LearningCurve, "record", lambda self, step, *rest: recorded.append(step) or record(self, step, *rest)
    )
    resumed = run_ablations(rerun)
    assert recorded == [4]  # resumed from checkpoint-2, not trained again from step 0
    assert [point["step"] for point in resumed["runs"][0]["curve"]] == [2, 4]
    assert same_weights(load(final_of(settings, "mini-c1-n2")), load(run_dir / "train" / "stage0-instruct" / "final"))
    assert resumed["arms"][0]["accuracy"]["all"]["values"] == [result_of(settings, "mini-c1-n2")["eval"]["accuracy"]["all"]["accuracy"]]


def test_merge_of_two_partial_runs_equals_one_run(settings, report, tmp_path):
    folders = []
    for name in ("query-c1-n0", "pool-c1-n0"):
        folder = tmp_path / name
        copy_start(settings, folder)
        run_ablations(replace(settings, out=folder, arms=arms_by_name([name]), timing=False))
        folders.append(folder)
    shutil.copy(settings.out / "timing.json", folders[0] / "timing.json")
    merged = merge_ablations(folders, tmp_path / "merged")
    one_run = {summary["arm"]: summary for summary in report["arms"]}
    assert [summary["arm"] for summary in merged["arms"]] == ["query-c1-n0", "pool-c1-n0"]
    for summary in merged["arms"]:
        for key in ("accuracy", "test_accuracy", "curve", "seeds"):
            assert summary[key] == one_run[summary["arm"]][key], (summary["arm"], key)
    assert (tmp_path / "merged" / "curves_table8.png").is_file() and merged["timing"] == report["timing"]
    with pytest.raises(ValueError, match="is in both"):
        merge_ablations([folders[0], folders[0]], tmp_path / "twice")
    other = tmp_path / "other-start"
    shutil.copytree(folders[1] / "pool-c1-n0", other / "pool-c1-n0")
    changed = other / "pool-c1-n0" / "seed0" / "result.json"
    result = json.loads(changed.read_text())
    result["start"]["sha256"] = "0" * 64
    changed.write_text(json.dumps(result))
    with pytest.raises(ValueError, match="different shared starts"):
        merge_ablations([folders[0], other], tmp_path / "bad")
    result["start"]["sha256"], result["budget"]["instruct_steps"] = report["start"]["sha256"], 6
    changed.write_text(json.dumps(result))
    with pytest.raises(ValueError, match="different budgets"):
        merge_ablations([folders[0], other], tmp_path / "bad")


def test_timing_puts_every_arm_on_the_wider_llm(settings, report):
    timing = json.loads((settings.out / "timing.json").read_text())
    arms = timing["arms"]
    assert set(arms) == {arm.name for arm in ARMS} and timing["llm_layers"] == TIMING_LLM["num_hidden_layers"]
    assert arms[BASELINE_ARM]["prefill_ratio_vs_baseline"] == pytest.approx(1.0)
    assert arms[BASELINE_ARM]["llm_vision_tokens"] == PATCHES and arms["mini-c1-n2"]["llm_vision_tokens"] == 1
    assert arms["text-only"]["flops_tool"] is None and arms["inside-llm-c1-m2"]["flops_tool"] is None
    tool = {name: arms[name]["flops_tool"]["image"] for name in ("mini-c1-n1", "mini-c1-n2", "mini-c1-n4")}
    assert tool["mini-c1-n1"] < tool["mini-c1-n2"] < tool["mini-c1-n4"]
    assert arms["query-c1-n0"]["flops"] < arms[BASELINE_ARM]["flops"]
    assert arms["mini-c1-n2"]["flops_tool"] == arms["mini-c1-n2-llm-init"]["flops_tool"]
    assert arms[BASELINE_ARM]["parameters"] > sum(p.numel() for p in load(start_of(settings)).parameters())
    assert report["timing"] == timing


@pytest.mark.parametrize("arm", [arm.name for arm in ARMS])
def test_each_arm_builds_the_intended_model(settings, report, arm):
    tokens, modules = EXPECTED[arm]
    result = result_of(settings, arm)
    assert result["llm_vision_tokens_per_picture"] == tokens
    assert set(result["trainable_parameters"]) == modules
    config = json.loads((final_of(settings, arm) / "config.json").read_text())
    for key, value in arms_by_name([arm])[0].fields.items():
        assert config[key] == value, key
    slots = {"prefusion-only": 1, "text-only": PATCHES}.get(arm, tokens)  # a marker; unused without media
    processor = json.loads((final_of(settings, arm) / "processor_config.json").read_text())
    assert processor["num_vision_tokens"] == slots


def test_llm_init_arm_copies_the_llms_first_layers(settings, report, tmp_path):
    base = read_base_recipe(settings.recipe)
    recipe, stage = arm_recipe(arms_by_name(["mini-c1-n2-llm-init"])[0], 0, settings, base, tmp_path)
    model, _ = recipe.build(stage, align_of(settings), [])
    for prefused, llm_layer in zip(
        model.prefusion.layers, model.language_model.get_decoder().layers[:2], strict=True
    ):
        for (name, a), b in zip(prefused.state_dict().items(), llm_layer.state_dict().values(), strict=True):
            assert torch.equal(a, b), name
    recipe, stage = arm_recipe(arms_by_name(["mini-c1-n2"])[0], 0, settings, base, tmp_path)
    model, _ = recipe.build(stage, align_of(settings), [])
    first = model.language_model.get_decoder().layers[0].mlp.up_proj.weight
    assert not torch.equal(model.prefusion.layers[0].mlp.up_proj.weight, first)


def test_inside_llm_arm_drops_the_vision_tokens_after_its_layers(settings, report, world):
    assistant = LlavaMini.load(final_of(settings, "inside-llm-c1-m2"))
    batch = image_batch(assistant, world)
    length = batch["input_ids"].shape[1]
    with torch.no_grad():
        cache = assistant.model(**batch, use_cache=True).past_key_values
    lengths = [cache.layers[index].keys.shape[-2] for index in range(LLM_LAYERS)]
    assert lengths == [length + PATCHES - 1, length + PATCHES - 1, length]  # 2 layers see all 16, then 1 token
    settings_ = GenerationSettings(max_new_tokens=4)
    with torch.no_grad():
        cached = assistant.model.generate(**assistant._generate_kwargs(batch, settings_))
        uncached = assistant.model.generate(**assistant._generate_kwargs(batch, settings_), use_cache=False)
    assert torch.equal(cached, uncached)


def test_prefusion_only_arm_gives_the_llm_a_marker_and_pictures_through_text(settings, report, world):
    assistant = LlavaMini.load(final_of(settings, "prefusion-only"))
    batch = image_batch(assistant, world)
    model = assistant.model
    with torch.no_grad():
        embeds, _ = model.embed_multimodal(batch["input_ids"], batch["pixel_values"], batch["attention_mask"])
        other, _ = model.embed_multimodal(
            batch["input_ids"], batch["pixel_values"].flip(-1), batch["attention_mask"]
        )
    slots = batch["input_ids"] == model.config.image_token_id
    assert int(slots.sum()) == 1
    marker = model.get_input_embeddings().weight[model.config.image_token_id]
    assert torch.equal(embeds[slots][0], marker) and torch.equal(other[slots][0], marker)
    assert not torch.allclose(embeds[~slots], other[~slots])  # the picture still reaches the pre-fused text


def test_text_only_arm_sees_no_media(settings, report):
    record = ConversationRecord(
        "x", "image", [Path("a.png")], [("user", "<image>\nWhat colour?"), ("assistant", "red")]
    )
    stripped = without_media(record)
    assert (
        stripped.media == [] and stripped.media_kind is None and stripped.turns[0] == ("user", "What colour?")
    )
    text_only, baseline = result_of(settings, "text-only"), result_of(settings, BASELINE_ARM)
    assert (
        text_only["cost"]["image"]["prompt_tokens"] < baseline["cost"]["image"]["prompt_tokens"] - PATCHES + 1
    )
    base = read_base_recipe(settings.recipe)
    recipe, stage = arm_recipe(arms_by_name(["text-only"])[0], 0, settings, base, settings.out / "unused")
    assert all(not record.media for record in recipe.read_records(stage))


def test_aggregate_reports_mean_and_spread_over_seeds_and_prefill_ratios():
    def result(arm: str, seed: int, accuracy: float, seconds: float) -> dict:
        return {
            "arm": arm,
            "seed": seed,
            "description": "",
            "paper": "",
            "fields": {},
            "text_only": False,
            "llm_vision_tokens_per_picture": 1,
            "prefusion_layers": 2,
            "compressed_tokens": 1,
            "trainable_parameters": {"projector": 5},
            "train": {"seconds": 1.0, "steps": 4, "cpu_seconds_per_step": 0.25},
            "curve": [{"step": 2, "accuracy": {"all": accuracy / 2}}, {"step": 4, "accuracy": {"all": accuracy}}],
            "eval": {"accuracy": {"all": {"accuracy": accuracy}}},
            "test": None,
            "cost": {"image": {"flops": 10, "prefill_seconds": seconds}},
        }

    summaries = aggregate(
        [
            result(BASELINE_ARM, 1, 0.7, 2.0),
            result(BASELINE_ARM, 0, 0.5, 4.0),
            result("mini-c1-n2", 0, 0.4, 1.0),
            result("mini-c1-n2", 1, 0.4, 2.0),
        ]
    )
    baseline, mini = summaries
    assert baseline["accuracy"]["all"]["mean"] == pytest.approx(0.6) and baseline["seeds"] == [0, 1]
    assert baseline["accuracy"]["all"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert baseline["curve"][1]["step"] == 4 and baseline["curve"][1]["mean"] == pytest.approx(0.6)
    assert mini["accuracy"]["all"]["std"] == 0.0 and mini["test_accuracy"] == {}
    assert mini["cpu_seconds_per_step"] == [0.25, 0.25]
    assert mini["cost"]["image"]["prefill_ratio_vs_baseline"] == pytest.approx(1.5 / 3.0)


def test_held_out_questions_are_taken_evenly_over_types(world):
    everything = select_questions(world, None)
    kinds = {(q.modality, q.type) for q in everything}
    assert len(kinds) < len(everything)
    questions = select_questions(world, len(kinds))
    assert sorted((q.modality, q.type) for q in questions) == sorted(kinds)  # one of each type
    assert len(select_questions(world, len(everything) + 5)) == len(everything)


def test_config_switches_are_validated():
    with pytest.raises(ValueError, match="inside_llm_layers must be in"):
        tiny_config(arrangement="inside_llm", inside_llm_layers=2, prefusion_layers=0)  # the LLM has 2 layers
    with pytest.raises(ValueError, match="prefusion_layers=0"):
        tiny_config(arrangement="inside_llm", inside_llm_layers=1)
    with pytest.raises(ValueError, match="needs arrangement='inside_llm'"):
        tiny_config(inside_llm_layers=1)
    with pytest.raises(ValueError, match="vision_tokens_to_llm=False needs pre-fusion"):
        tiny_config(vision_tokens_to_llm=False, prefusion_layers=0)
    assert tiny_config(vision_tokens_to_llm=False).num_vision_tokens() == 1


def test_cli_lists_arms_and_names_bad_inputs(world, test_set, recipe, tmp_path, capsys):
    assert main(["experiment", "ablations", "--list"]) == 0
    assert "inside-llm-c1-m2" in capsys.readouterr().out
    assert main(["experiment", "ablations", "--arms", "nope"]) == 2
    assert "unknown arm(s) nope" in capsys.readouterr().err
    common = ["experiment", "ablations", "--recipe", str(recipe), "--out", str(tmp_path / "o")]
    assert main([*common, "--train-data", str(tmp_path), "--data", str(world)]) == 2
    assert "no captions.json, instructions.json, scenes.jsonl" in capsys.readouterr().err
    assert main([*common, "--train-data", str(world), "--data", str(tmp_path)]) == 2
    assert f"--data {tmp_path}: no questions.jsonl" in capsys.readouterr().err
    assert main([*common, "--train-data", str(world), "--data", str(world), "--test-data", str(tmp_path)]) == 2
    assert f"--test-data {tmp_path}: no questions.jsonl" in capsys.readouterr().err
    partial = tmp_path / "partial.yaml"
    partial.write_text(yaml.safe_dump({**yaml.safe_load(recipe.read_text()), "stages": [
        {"name": "align", "mode": "align", "data": ["captions.json"]}]}))
    bad = ["experiment", "ablations", "--recipe", str(partial), "--out", str(tmp_path / "o"),
           "--train-data", str(world), "--data", str(world), "--test-data", "none"]
    assert main(bad) == 2
    assert "needs stages of modes components, align and instruct; no components, instruct" in capsys.readouterr().err
    assert main(["experiment", "ablations", "--merge", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "no such results folder" in capsys.readouterr().err
    assert main(["experiment", "ablations", "--merge", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "no finished arm x seed" in capsys.readouterr().err
    assert main(["experiment", "ablations", "--seeds", "0"]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err
    assert main(["experiment", "ablations", "--first-seed", "-1"]) == 2
    assert "--first-seed must be >= 0" in capsys.readouterr().err
    assert main(["experiment", "ablations", "--list", "--seeds", "2", "--first-seed", "3"]) == 0
    assert "seeds 3..4" in capsys.readouterr().out


def test_inside_llm_cache_matches_a_full_forward_on_a_left_padded_mixed_batch():
    torch.manual_seed(0)
    model = LlavaMiniForConditionalGeneration(
        tiny_config(arrangement="inside_llm", inside_llm_layers=1, prefusion_layers=0)
    ).eval()
    ids = torch.randint(5, 200, (2, 12))
    ids[0, 4], ids[1, 2:5] = 300, 300  # one picture in row 0, three in row 1
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding
    pixels = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        full = model(input_ids=ids, pixel_values=pixels, attention_mask=mask).logits
        prefill = model(
            input_ids=ids[:, :-2], pixel_values=pixels, attention_mask=mask[:, :-2], use_cache=True
        )
        cache = prefill.past_key_values
        step1 = model(
            input_ids=ids[:, -2:-1], attention_mask=mask[:, :-1], past_key_values=cache, use_cache=True
        )
        step2 = model(input_ids=ids[:, -1:], attention_mask=mask, past_key_values=cache, use_cache=True)
    real = mask[:, :-2].bool()
    torch.testing.assert_close(prefill.logits[real], full[:, :-2][real])
    torch.testing.assert_close(torch.cat([step1.logits, step2.logits], 1), full[:, -2:])
    assert [cache.layers[i].keys.shape[-2] for i in range(2)] == [12 + 3 * (PATCHES - 1), 12]
    labels = ids.masked_fill((ids == 300) | (mask == 0), -100)
    model(input_ids=ids, pixel_values=pixels, attention_mask=mask, labels=labels).loss.backward()
    for module in (model.compressor, model.projector):  # the loss reaches the compressor through the LLM
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
