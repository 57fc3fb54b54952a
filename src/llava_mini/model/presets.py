"""Named configurations: the paper's backbones (for FLOPs and benchmarks) and a tiny CPU model."""

from __future__ import annotations

from llava_mini.model.configuration import LlavaMiniConfig

CLIP_VIT_L_336 = dict(
    model_type="clip_vision_model",
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
    projection_dim=768,
)

LLAMA_3_1_8B = dict(
    model_type="llama",
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    bos_token_id=128000,
    eos_token_id=[128001, 128008, 128009],
)

VICUNA_7B = dict(
    model_type="llama",
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    vocab_size=32000,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
)

TINY_VISION = dict(
    model_type="clip_vision_model",
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    image_size=96,
    patch_size=12,
)

TINY_TEXT = dict(
    model_type="llama",
    hidden_size=192,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=6,
    num_key_value_heads=2,
    max_position_embeddings=2048,
)

# A CPU-sized backbone with the paper's proportions (for `llava-mini bench` on a CPU): a CLIP-like tower
# (224 px, patch 14: 256 patches) much smaller than a Vicuna-like LLM, pre-fusion 1/8 of the LLM's depth.
BENCH_CPU = dict(
    vision_config=dict(
        model_type="clip_vision_model",
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=224,
        patch_size=14,
    ),
    text_config=dict(
        model_type="llama",
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        vocab_size=8000,
        max_position_embeddings=4096,
    ),
    image_token_id=7999,
    prefusion_layers=1,
    compressor_num_heads=4,
)

PRESETS: dict[str, dict] = {
    "llava-mini-llama3.1-8b": dict(
        vision_config=CLIP_VIT_L_336, text_config=LLAMA_3_1_8B, image_token_id=128256, prefusion_layers=4
    ),
    "llava-mini-vicuna-7b": dict(
        vision_config=CLIP_VIT_L_336, text_config=VICUNA_7B, image_token_id=32000, prefusion_layers=4
    ),
    "llava-v1.5-vicuna-7b": dict(
        vision_config=CLIP_VIT_L_336,
        text_config=VICUNA_7B,
        image_token_id=32000,
        compressor_type="none",
        prefusion_layers=0,
    ),
    "bench-cpu": BENCH_CPU,
    "tiny": dict(
        vision_config=TINY_VISION, text_config=TINY_TEXT, prefusion_layers=2, compressor_num_heads=4
    ),
}


def preset_config(name: str, **overrides) -> LlavaMiniConfig:
    """The named configuration with field overrides, e.g. `preset_config("tiny", compressor_size=2)`."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    settings = {
        key: dict(value) if isinstance(value, dict) else value for key, value in PRESETS[name].items()
    }
    for key in ("vision_config", "text_config"):
        if key in overrides and isinstance(overrides[key], dict):
            settings[key].update(overrides.pop(key))
    settings.update(overrides)
    return LlavaMiniConfig(**settings)
