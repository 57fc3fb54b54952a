"""The ablation experiment on tiny models: each arm builds the intended model, result files, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from llava_mini.cli import main
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
    run_ablations,
    select_questions,
    without_media,
)
from llava_mini.inference.generate import GenerationSettings, LlavaMini
from llava_mini.model.modeling import LlavaMiniForConditionalGeneration
from llava_mini.train.recipe import run_recipe
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
SMOKE = Budget(
    "smoke",
    max_steps=2,
    epochs=1.0,
    batch_size=2,
    lr=1e-3,
    multimodal_lr=None,
    warmup_ratio=0.0,
    save_every=10**9,
    eval_limit=6,
    eval_batch_size=6,
    timing_repeats=1,
    seeds=1,
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
def stage1(world: Path, tmp_path_factory) -> Path:
    """A tiny stage-1 checkpoint: stage 0 (components) and stage 1 (align), two steps each."""
    root = tmp_path_factory.mktemp("stage1")
    steps = {"max_steps": 2, "batch_size": 2, "lr": 1e-3}
    recipe = {
        "output_dir": str(root / "out"),
        "data_root": str(world),
        "preset": "tiny",
        "threads": 1,
        "tokenizer_vocab_size": 300,
        "model": TINY_MODEL,
        "video_max_frames": 3,
        "stages": [
            {
                "name": "components",
                "mode": "components",
                "data": ["captions.json", "instructions.json"],
                **steps,
            },
            {"name": "align", "mode": "align", "data": ["captions.json"], **steps},
        ],
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return run_recipe(str(root / "recipe.yaml"))


@pytest.fixture(scope="module")
def settings(world: Path, stage1: Path, tmp_path_factory) -> AblationSettings:
    return AblationSettings(
        out=tmp_path_factory.mktemp("ablations"),
        init=stage1,
        data=world,
        train_data=world,
        budget=SMOKE,
        seeds=(0, 1),
        arms=ARMS,
    )


@pytest.fixture(scope="module")
def report(settings: AblationSettings) -> dict:
    return run_ablations(settings)


def result_of(settings: AblationSettings, arm: str) -> dict:
    return json.loads((settings.out / arm / "seed0" / "result.json").read_text())


def final_of(settings: AblationSettings, arm: str) -> Path:
    return Path(result_of(settings, arm)["train"]["final"])


def image_batch(assistant: LlavaMini, world: Path) -> dict:
    question = next(q for q in select_questions(world, None) if q.modality == "image")
    media = [assistant.medium(question.media_path)]
    return assistant.prepare([assistant.question_messages(question.question, media)], [media])


def test_smoke_run_of_every_arm_writes_the_result_files(settings, report):
    assert [summary["arm"] for summary in report["arms"]] == [arm.name for arm in ARMS]
    for arm in ARMS:
        for seed in (0, 1):
            run_dir = settings.out / arm.name / f"seed{seed}"
            result = json.loads((run_dir / "result.json").read_text())
            assert result["seed"] == seed and result["eval"]["questions"] == SMOKE.eval_limit
            assert (run_dir / "answers.jsonl").is_file() and result["train"]["steps"] == SMOKE.max_steps
            assert set(result["cost"]) == {"image", "video"} and result["cost"]["image"]["flops"] > 0
    assert all(summary["seeds"] == [0, 1] for summary in report["arms"])
    losses = [
        json.loads((settings.out / "mini-c1-n2" / f"seed{seed}" / "result.json").read_text())
        for seed in (0, 1)
    ]
    assert losses[0]["train"]["final_loss"] != losses[1]["train"]["final_loss"]  # seeds differ
    saved = json.loads((settings.out / "results.json").read_text())
    assert saved["arms"] == json.loads(json.dumps(report["arms"]))
    table = (settings.out / "results.md").read_text()
    assert all(f"| {arm.name} |" in table for arm in ARMS)
    for plot in ("accuracy_vs_flops.png", "accuracy_vs_n.png", "accuracy_vs_cc.png"):
        assert (settings.out / plot).read_bytes()[:4] == b"\x89PNG"
    baseline = next(summary for summary in report["arms"] if summary["arm"] == BASELINE_ARM)
    assert baseline["cost"]["image"]["prefill_ratio_vs_baseline"] == pytest.approx(1.0)


def test_flops_tool_counts_each_modelled_arm_and_skips_the_others(report):
    tool = {summary["arm"]: summary["flops_tool_gflops"] for summary in report["arms"]}
    assert tool["text-only"] is None and tool["inside-llm-c1-m2"] is None
    assert tool["mini-c1-n1"]["image"] < tool["mini-c1-n2"]["image"] < tool["mini-c1-n4"]["image"]
    assert tool["query-c1-n0"]["image"] < tool[BASELINE_ARM]["image"]  # 1 LLM vision token instead of all
    assert tool["mini-c1-n2"]["video"] > tool["mini-c1-n2"]["image"]
    assert tool["mini-c1-n2"] == tool["mini-c1-n2-llm-init"]  # the initialisation costs nothing at inference


@pytest.mark.parametrize("arm", [arm.name for arm in ARMS])
def test_each_arm_builds_the_intended_model(settings, report, stage1, arm):
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


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("arm", [arm.name for arm in ARMS])
def test_every_arm_starts_from_the_stage1_weights_and_trains_only_its_modules(settings, report, stage1, arm):
    start = LlavaMiniForConditionalGeneration.from_pretrained(stage1)
    tuned = LlavaMiniForConditionalGeneration.from_pretrained(final_of(settings, arm))
    assert same_weights(start.vision_tower, tuned.vision_tower)  # frozen in stage 2
    assert not same_weights(start.language_model, tuned.language_model)
    # The projector learns from pictures; the text-only arm never shows it one.
    assert same_weights(start.projector, tuned.projector) == (arm == "text-only")


def test_llm_init_arm_copies_the_llms_first_layers(settings, tmp_path):
    recipe, stage = arm_recipe(arms_by_name(["mini-c1-n2-llm-init"])[0], 0, settings, tmp_path)
    model, _ = recipe.build(stage, settings.init, [])
    for prefused, llm_layer in zip(
        model.prefusion.layers, model.language_model.get_decoder().layers[:2], strict=True
    ):
        for (name, a), b in zip(prefused.state_dict().items(), llm_layer.state_dict().values(), strict=True):
            assert torch.equal(a, b), name
    recipe, stage = arm_recipe(arms_by_name(["mini-c1-n2"])[0], 0, settings, tmp_path)
    model, _ = recipe.build(stage, settings.init, [])
    first = model.language_model.get_decoder().layers[0].mlp.up_proj.weight
    assert not torch.equal(model.prefusion.layers[0].mlp.up_proj.weight, first)


def test_inside_llm_arm_drops_the_vision_tokens_after_its_layers(settings, report, world):
    assistant = LlavaMini.load(final_of(settings, "inside-llm-c1-m2"))
    batch = image_batch(assistant, world)
    length = batch["input_ids"].shape[1]
    with torch.no_grad():
        cache = assistant.model(**batch, use_cache=True).past_key_values
    lengths = [cache.layers[index].keys.shape[-2] for index in range(LLM_LAYERS)]
    assert lengths == [
        length + PATCHES - 1,
        length + PATCHES - 1,
        length,
    ]  # 2 layers see all 16, then 1 token
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
    recipe, stage = arm_recipe(arms_by_name(["text-only"])[0], 0, settings, settings.out / "unused")
    assert isinstance(recipe, AblationRecipe)
    assert all(not record.media for record in recipe.read_records(stage))


def test_a_rerun_skips_finished_arms_and_resumes_unfinished_ones(settings, report, monkeypatch):
    (settings.out / "mini-c1-n1" / "seed0" / "result.json").unlink()  # trained, but stopped before its result

    def no_training(*args, **kwargs):
        raise AssertionError("a finished arm was retrained")

    monkeypatch.setattr(AblationRecipe, "run_stage", no_training)
    evaluated = []
    original = ablations.evaluate
    monkeypatch.setattr(ablations, "evaluate", lambda *a, **k: evaluated.append(1) or original(*a, **k))
    again = run_ablations(settings)
    assert evaluated == [1]  # only the arm without result.json was evaluated again
    assert [s["accuracy"] for s in again["arms"]] == [s["accuracy"] for s in report["arms"]]


def test_aggregate_reports_mean_and_spread_over_seeds_and_prefill_ratios():
    def result(arm: str, seed: int, accuracy: float, seconds: float) -> dict:
        cost = {"image": {"flops": 10, "prefill_seconds": seconds}}
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
            "train": {"seconds": 1.0},
            "eval": {"accuracy": {"all": {"accuracy": accuracy}}},
            "cost": cost,
        }

    summaries = aggregate(
        [
            result(BASELINE_ARM, 0, 0.5, 4.0),
            result(BASELINE_ARM, 1, 0.7, 2.0),
            result("mini-c1-n2", 0, 0.4, 1.0),
            result("mini-c1-n2", 1, 0.4, 2.0),
        ]
    )
    baseline, mini = summaries
    assert baseline["accuracy"]["all"]["mean"] == pytest.approx(0.6)
    assert baseline["accuracy"]["all"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert mini["accuracy"]["all"]["std"] == 0.0 and mini["seeds"] == [0, 1]
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


def test_cli_lists_arms_and_names_bad_inputs(tmp_path, capsys):
    assert main(["experiment", "ablations", "--list"]) == 0
    assert "inside-llm-c1-m2" in capsys.readouterr().out
    assert main(["experiment", "ablations", "--arms", "nope"]) == 2
    assert "unknown arm(s) nope" in capsys.readouterr().err
    assert main(["experiment", "ablations", "--init", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "train the stage-1 checkpoint first" in capsys.readouterr().err
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
