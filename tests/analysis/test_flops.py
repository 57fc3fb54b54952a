"""`llava-mini flops`: counts on the real (meta-device) modules equal hand-derived formulas and the paper's tables."""

from __future__ import annotations

import json

import pytest

from llava_mini.analysis.flops import (
    COMPONENTS,
    PAPER_TEXT_TOKENS,
    baseline_config,
    compare_with_baseline,
    configure,
    count_flops,
    format_table,
    paper_table14,
)
from llava_mini.cli import main
from llava_mini.model.presets import preset_config
from tests.conftest import tiny_config

TEXT = 5  # text tokens in the tiny prompts


# Hand counts: 2 FLOPs per multiply-accumulate. Weight products per token, attention products per sequence.
def decoder_layer_weights(config) -> int:
    """q, k, v, o projections (GQA: k and v have num_key_value_heads heads) and the gated MLP, per token."""
    text = config.text_config
    width, head_dim = text.hidden_size, text.hidden_size // text.num_attention_heads
    query_width, kv_width = text.num_attention_heads * head_dim, text.num_key_value_heads * head_dim
    attention = 2 * width * query_width + 2 * 2 * width * kv_width + 2 * query_width * width
    mlp = 3 * 2 * width * text.intermediate_size  # gate, up, down
    return attention + mlp


def decoder_layer_attention(config, length: int) -> int:
    """Scores Q K^T and values A V over every query head (GQA shares keys, not the work), per sequence."""
    text = config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    return 2 * (2 * text.num_attention_heads * length * length * head_dim)


def llm_flops(config, length: int) -> tuple[int, int]:
    text = config.text_config
    lm_head = 2 * text.hidden_size * text.vocab_size
    layers = text.num_hidden_layers
    weights = length * (layers * decoder_layer_weights(config) + lm_head)
    return weights, layers * decoder_layer_attention(config, length)


def clip_flops(config, pictures: int) -> tuple[int, int]:
    """Patch convolution and every encoder layer (hidden layer -2 still runs them all) over N+1 tokens."""
    vision = config.vision_config
    width, patches = vision.hidden_size, config.num_patches
    tokens = patches + 1
    convolution = 2 * patches * (3 * vision.patch_size**2) * width
    layer = tokens * (4 * 2 * width * width + 2 * 2 * width * vision.intermediate_size)
    attention = 2 * 2 * tokens * tokens * width
    layers = vision.num_hidden_layers
    return pictures * (convolution + layers * layer), pictures * layers * attention


def test_tiny_llama_llm_matches_the_hand_count():
    config = tiny_config()
    assert config.text_config.num_key_value_heads < config.text_config.num_attention_heads  # GQA is exercised
    report = count_flops(config, text_tokens=TEXT)
    weights, attention = llm_flops(config, 1 + TEXT)
    assert report.llm_tokens == 1 + TEXT
    assert report.weight_flops["llm"] == weights
    assert report.attention_flops["llm"] == attention
    with_attention = count_flops(config, text_tokens=TEXT, include_attention=True)
    assert with_attention.flops["llm"] == weights + attention


def test_tiny_llava_mini_components_match_the_hand_count():
    config = tiny_config()  # CLIP 32 wide on a 4 x 4 grid, C = 1, two pre-fusion layers
    report = count_flops(config, text_tokens=TEXT, include_attention=True)
    patches, compressed = config.num_patches, config.compressor_size**2
    vision_width, text_width = config.vision_config.hidden_size, config.text_config.hidden_size
    expected_weights = {
        "vision_encoder": clip_flops(config, 1)[0],
        # the same projector maps the N vision tokens and the K compressed ones
        "projection": (patches + compressed) * 2 * (vision_width * text_width + text_width * text_width),
        # learned queries: q and output projections on K tokens, k and v on N tokens (vision width)
        "compression": 2 * compressed * 2 * vision_width**2 + 2 * patches * 2 * vision_width**2,
        "prefusion": config.prefusion_layers * (patches + compressed + TEXT) * decoder_layer_weights(config),
        "llm": llm_flops(config, compressed + TEXT)[0],
    }
    prefusion_length = patches + compressed + TEXT
    expected_attention = {
        "vision_encoder": clip_flops(config, 1)[1],
        "projection": 0,
        "compression": 2 * 2 * compressed * patches * vision_width,
        "prefusion": config.prefusion_layers * decoder_layer_attention(config, prefusion_length),
        "llm": llm_flops(config, compressed + TEXT)[1],
    }
    assert report.weight_flops == expected_weights
    assert report.attention_flops == expected_attention
    assert report.total == sum(expected_weights.values()) + sum(expected_attention.values())
    assert report.prefusion_tokens == prefusion_length


def test_hd_and_video_scale_the_right_components():
    config = tiny_config()
    image = count_flops(config, text_tokens=TEXT)
    video = count_flops(config, frames=3, text_tokens=TEXT)
    for name in ("vision_encoder", "projection", "compression", "prefusion"):
        assert video.flops[name] == 3 * image.flops[name]  # every frame is encoded and pre-fused alone
    assert video.llm_tokens == 3 * config.compressor_size**2 + TEXT
    assert video.flops["llm"] == llm_flops(config, video.llm_tokens)[0]

    hd = configure(config, resolution=2 * config.vision_config.image_size, compressor_size=2)
    assert (hd.resolution_ratio, hd.views_per_picture, hd.compressor_size) == (2, 5, 2)
    crops_only, with_global = (
        count_flops(hd, text_tokens=TEXT, hd_prefusion_global=flag) for flag in (False, True)
    )
    assert (
        crops_only.flops["vision_encoder"] == 5 * image.flops["vision_encoder"]
    )  # 4 crops + the global view
    stitched = 4 * config.num_patches
    assert crops_only.prefusion_tokens == stitched + 4 + TEXT
    assert with_global.prefusion_tokens == stitched + config.num_patches + 4 + TEXT
    per_token = config.prefusion_layers * decoder_layer_weights(config)
    assert with_global.flops["prefusion"] - crops_only.flops["prefusion"] == config.num_patches * per_token
    for name in ("vision_encoder", "projection", "compression", "llm"):
        assert crops_only.flops[name] == with_global.flops[name]


def test_baseline_hands_every_vision_token_to_the_llm():
    config = tiny_config()
    baseline, mini = compare_with_baseline(config, text_tokens=TEXT)
    assert baseline_config(config).prefusion_layers == 0 and baseline_config(config).compressor_type == "none"
    assert baseline.llm_tokens == config.num_patches + TEXT and mini.llm_tokens == 1 + TEXT
    assert baseline.flops["compression"] == baseline.flops["prefusion"] == 0
    assert mini.flops["compression"] > 0 and mini.flops["prefusion"] > 0
    assert mini.flops["llm"] < baseline.flops["llm"]
    assert mini.flops["vision_encoder"] == baseline.flops["vision_encoder"]


def within(ours: float, paper: float, tolerance: float = 0.01) -> bool:
    return abs(ours - paper) <= tolerance * paper


# Table 14 (TFLOPs): vision, projection, compression, pre-fusion, LLM, total
TABLE_14 = {
    ("LLaVA-v1.5", 336): (0.349, 0.024, None, None, 8.177, 8.55),
    ("LLaVA-Mini", 336): (0.349, 0.024, 0.001, 0.125, 1.460, 1.96),
    ("LLaVA-v1.5", 672): (1.745, 0.121, None, None, 38.623, 40.49),
    ("LLaVA-Mini", 672): (1.745, 0.121, 0.009, 1.183, 4.131, 7.19),
}


def test_paper_table14_totals_within_one_percent():
    reports = paper_table14()
    assert [(report.name, report.resolution) for report in reports] == list(TABLE_14)
    for report in reports:
        paper = TABLE_14[(report.name, report.resolution)]
        ours = [report.flops[name] / 1e12 for name in COMPONENTS]
        assert within(report.total / 1e12, paper[5]), (report.name, report.resolution, report.total / 1e12)
        assert within(ours[0], paper[0]), "vision encoder"
        assert within(ours[1], paper[1], 0.025), "projection"  # HD Mini also projects its 64 tokens (docs)
        if report.name == "LLaVA-v1.5":
            assert within(ours[4], paper[4]), "LLM"
            assert ours[2] == ours[3] == 0
        else:  # the paper splits pre-fusion + LLM differently; their sum agrees (docs/flops.md)
            assert within(ours[3] + ours[4], paper[3] + paper[4])
    mini, baseline = reports[1], reports[0]
    assert 1 - mini.total / baseline.total == pytest.approx(0.77, abs=0.005)  # "reduce FLOPs by 77%"
    assert 1 - reports[3].total / reports[2].total == pytest.approx(0.82, abs=0.005)  # "82% FLOPs reduction"


def test_paper_tables_7_8_and_the_hd_figure_of_section_5_2():
    mini = preset_config("llava-mini-vicuna-7b")
    # Table 7: LLaVA-Mini without pre-fusion (1 token) 0.96 T; with 4 layers 1.96 T (Table 14's row)
    assert within(count_flops(configure(mini, prefusion_layers=0)).total / 1e12, 0.96)
    # Table 8: query-based compression costs +2.42 G (C = 1, Table 14's row) and +2.44 G (C = 2)
    assert within(count_flops(mini).flops["compression"] / 1e9, 2.42)
    assert within(count_flops(configure(mini, compressor_size=2)).flops["compression"] / 1e9, 2.44)
    # Sec. 5.2: "LLaVA-Mini-HD has a computational load of 8.13 TFLOPs": pre-fusion with the global view
    hd = count_flops(configure(mini, resolution=672), hd_prefusion_global=True)
    assert within(hd.total / 1e12, 8.13)


def test_bad_settings_raise_clear_errors():
    config = tiny_config()
    with pytest.raises(ValueError, match="multiple of the vision tower's image size 32"):
        configure(config, resolution=50)
    with pytest.raises(ValueError, match="frames must be >= 1"):
        count_flops(config, frames=0)
    with pytest.raises(ValueError, match="text_tokens must be >= 1"):
        count_flops(config, text_tokens=0)


def test_cli_json_and_table(capsys):
    assert main(["flops", "--preset", "tiny", "--frames", "2", "--text-tokens", "7", "--json"]) == 0
    reports = json.loads(capsys.readouterr().out)
    assert [report["name"] for report in reports] == ["baseline (LLaVA-v1.5)", "tiny"]
    for report in reports:
        assert set(report["flops"]) == set(COMPONENTS)
        assert report["total"] == sum(report["flops"].values()) > 0
        assert (report["frames"], report["text_tokens"]) == (2, 7)
    assert reports[1]["llm_tokens"] == 2 + 7

    assert main(["flops", "--resolution", "672"]) == 0  # default preset: Table 14's LLaVA-Mini (Vicuna-7B)
    table = capsys.readouterr().out
    assert f"{PAPER_TEXT_TOKENS} text tokens" in table and "40.49" in table and "7.19" in table

    assert main(["flops", "--preset", "tiny", "--resolution", "100"]) == 2
    assert "multiple of the vision tower's image size 96" in capsys.readouterr().err


def test_cli_reads_a_saved_config(tmp_path, capsys):
    config = tiny_config(prefusion_layers=1)
    config.save_pretrained(tmp_path)  # only config.json: no weights are needed
    args = ["flops", "--model", str(tmp_path), "--text-tokens", str(TEXT), "--no-baseline", "--json"]
    assert main(args) == 0
    (report,) = json.loads(capsys.readouterr().out)
    expected = count_flops(config, text_tokens=TEXT)
    assert report["flops"] == expected.flops and report["prefusion_tokens"] == config.num_patches + 1 + TEXT


def test_format_table_marks_missing_components():
    baseline = count_flops(baseline_config(tiny_config()), text_tokens=TEXT, name="base")
    title, *_, line = format_table([baseline]).splitlines()
    assert title.startswith("MFLOPs (2 x MACs, weight products only); 5 text tokens")  # a tiny model
    assert line.startswith("base") and line.split().count("-") == 2  # no compression, no pre-fusion
