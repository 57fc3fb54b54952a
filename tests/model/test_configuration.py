"""LlavaMiniConfig refuses out-of-range integer and choice fields, naming the field and the value."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_config


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"vision_feature_layer": 3}, r"vision_feature_layer=3 is out of range: the vision tower has 2 layers, so hidden states -3..2"),
        ({"vision_feature_layer": -4}, r"vision_feature_layer=-4 is out of range"),
        ({"vision_feature_layer": "-2"}, r"vision_feature_layer must be an integer, got '-2'"),
        ({"compressor_size": 0}, r"compressor_size must be >= 1, got 0"),
        ({"compressor_size": 2.0}, r"compressor_size must be an integer, got 2.0"),
        ({"compressor_num_heads": 3}, r"compressor_num_heads=3 does not divide the compressor's width 32"),
        ({"prefusion_layers": -1}, r"prefusion_layers must be >= 0, got -1"),
        ({"prefusion_layers": 3, "prefusion_init": "llm"}, r"prefusion_layers=3 with prefusion_init='llm' exceeds"),
        ({"image_token_id": -200}, r"image_token_id must be >= 0, got -200"),
        ({"encode_chunk_size": True}, r"encode_chunk_size must be an integer, got True"),
        ({"vision_tokens_to_llm": "no"}, r"vision_tokens_to_llm must be true or false, got 'no'"),
        ({"video_fps": 0}, r"video_fps must be a number > 0, got 0"),
        ({"video_max_frames": 0}, r"video_max_frames must be an integer >= 1 or None, got 0"),
        ({"projector_type": "mlp3x"}, r"projector_type='mlp3x'; expected one of"),
        ({"compressor_size": 5}, r"compressor_size=5 exceeds the vision grid side 4"),
    ],
)
def test_out_of_range_fields_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**fields)


def test_every_hidden_state_of_the_tower_can_be_chosen():
    for layer in (-3, -2, 0, 2):
        assert tiny_config(vision_feature_layer=layer).vision_feature_layer == layer
