"""LlavaMiniConfig: a vision config, a text config and the LLaVA-Mini fields (paper sec. 4, appendix B)."""

from __future__ import annotations

import math
from typing import Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

CompressorType = Literal["query", "pool", "none"]
Arrangement = Literal["release", "paper", "inside_llm"]


def views_per_picture(resolution_ratio: int) -> int:
    """S views per picture: 1, or ratio*ratio HD crops plus the global view (sec. 4.2)."""
    return 1 if resolution_ratio <= 1 else resolution_ratio**2 + 1


class LlavaMiniConfig(PreTrainedConfig):
    r"""Configuration of a LLaVA-Mini model.

    The defaults describe the released checkpoint: CLIP ViT-L/14-336 and LLaMA (sizes from `text_config`),
    one compressed vision token per image (`compressor_size=1`), four pre-fusion layers.

    Args:
        vision_config: any Hugging Face vision model config (CLIP by default; SigLIP works too).
        text_config: any Hugging Face causal LM config (LLaMA by default; Qwen2 works too).
        image_token_id: id of the `<image>` placeholder token; each picture fills
            `num_vision_tokens(views)` consecutive placeholder positions.
        compressor_type: "query" (learned queries, sec. 4.1), "pool" (average pooling, Table 8)
            or "none" (every vision token reaches the LLM: the LLaVA-v1.5 baseline when N = 0).
        compressor_size: C, the side of the compressed grid: C*C tokens per picture reach the LLM.
        compressor_num_heads: heads of the compressor's cross-attention.
        prefusion_layers: N, the number of modality pre-fusion layers (0 disables pre-fusion).
        prefusion_init: "random" (as released) or "llm" (copy the LLM's first N layers).
        arrangement: "release" compresses in the vision tower's space before the projector and
            hands the LLM the pre-fused compressed slots; "paper" projects first, compresses in the
            LLM's space, and hands the LLM the compressor's output directly (Figure 6); "inside_llm"
            compresses inside the LLM (Table 12): its first `inside_llm_layers` layers see every vision
            token, then the compressor squeezes their hidden states to C*C tokens for the remaining layers.
        inside_llm_layers: LLM layers that see all vision tokens with `arrangement="inside_llm"` (else 0).
        vision_tokens_to_llm: False hands the LLM no vision tokens (the "pre-fusion only" ablation): each
            picture keeps one placeholder slot holding the plain `<image>` embedding, so pictures reach the
            LLM only through the pre-fused text.
        vision_feature_layer: which hidden state of the vision tower to use (-2 as in LLaVA).
        vision_feature_select: "patch" drops the class token, "full" keeps every token.
        projector_type: "mlp2x_gelu" or "linear".
        resolution_ratio: HD crops per side (1 = standard, 2 = 672 px as in sec. 4.2).
        video_fps: frames sampled per second of video.
        video_max_frames: upper bound on sampled frames (None = no bound).
        encode_chunk_size: pictures encoded, compressed and pre-fused at once (bounds memory for video).
    """

    model_type = "llava_mini"

    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="clip_vision_model",
            init_kwargs={
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "patch_size": 14,
                "image_size": 336,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "projection_dim": 768,
            },
        ),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 0
    compressor_type: CompressorType = "query"
    compressor_size: int = 1
    compressor_num_heads: int = 8
    prefusion_layers: int = 4
    prefusion_init: Literal["random", "llm"] = "random"
    arrangement: Arrangement = "release"
    inside_llm_layers: int = 0
    vision_tokens_to_llm: bool = True
    vision_feature_layer: int = -2
    vision_feature_select: Literal["patch", "full"] = "patch"
    projector_type: Literal["mlp2x_gelu", "linear"] = "mlp2x_gelu"
    resolution_ratio: int = 1
    video_fps: float = 1.0
    video_max_frames: int | None = None
    encode_chunk_size: int = 64
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs) -> None:
        super().__post_init__(**kwargs)
        self.validate_llava_mini_fields()

    def validate_llava_mini_fields(self) -> None:
        """Raise ValueError naming the field when a LLaVA-Mini setting is out of range."""
        choices = {
            "compressor_type": ("query", "pool", "none"),
            "prefusion_init": ("random", "llm"),
            "arrangement": ("release", "paper", "inside_llm"),
            "vision_feature_select": ("patch", "full"),
            "projector_type": ("mlp2x_gelu", "linear"),
        }
        for field_name, allowed in choices.items():
            if getattr(self, field_name) not in allowed:
                raise ValueError(f"{field_name}={getattr(self, field_name)!r}; expected one of {allowed}")
        integers = (
            "image_token_id", "compressor_size", "compressor_num_heads", "prefusion_layers", "inside_llm_layers",
            "vision_feature_layer", "resolution_ratio", "encode_chunk_size",
        )
        for field_name in integers:
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{field_name} must be an integer, got {value!r}")
        if not isinstance(self.vision_tokens_to_llm, bool):
            raise ValueError(f"vision_tokens_to_llm must be true or false, got {self.vision_tokens_to_llm!r}")
        positive = ("compressor_size", "compressor_num_heads", "resolution_ratio", "encode_chunk_size")
        for field_name in positive:
            if getattr(self, field_name) < 1:
                raise ValueError(f"{field_name} must be >= 1, got {getattr(self, field_name)}")
        if self.prefusion_layers < 0:
            raise ValueError(f"prefusion_layers must be >= 0, got {self.prefusion_layers}")
        self.validate_tower_fields()
        self.validate_ablation_fields()
        if isinstance(self.video_fps, bool) or not isinstance(self.video_fps, (int, float)) or not self.video_fps > 0:
            raise ValueError(f"video_fps must be a number > 0, got {self.video_fps!r}")
        if self.video_max_frames is not None and (
            isinstance(self.video_max_frames, bool) or not isinstance(self.video_max_frames, int) or self.video_max_frames < 1
        ):
            raise ValueError(f"video_max_frames must be an integer >= 1 or None, got {self.video_max_frames!r}")
        if self.compressor_size > self.patch_grid_side:
            raise ValueError(
                f"compressor_size={self.compressor_size} exceeds the vision grid side {self.patch_grid_side}"
            )

    def validate_tower_fields(self) -> None:
        """Fields that must agree with the vision tower's and the LLM's own configs."""
        tower_layers = int(self.vision_config.num_hidden_layers)
        if not -(tower_layers + 1) <= self.vision_feature_layer <= tower_layers:
            raise ValueError(
                f"vision_feature_layer={self.vision_feature_layer} is out of range: the vision tower has "
                f"{tower_layers} layers, so hidden states {-(tower_layers + 1)}..{tower_layers}"
            )
        if self.image_token_id < 0:  # it may equal the vocabulary size: a token added with the tokenizer's <image>
            raise ValueError(f"image_token_id must be >= 0, got {self.image_token_id}")
        if self.compressor_type == "query":
            width = int(self.vision_config.hidden_size if self.arrangement == "release" else self.text_config.hidden_size)
            if width % self.compressor_num_heads:
                raise ValueError(
                    f"compressor_num_heads={self.compressor_num_heads} does not divide the compressor's width {width}"
                )
        llm_layers = int(self.text_config.num_hidden_layers)
        if self.prefusion_init == "llm" and self.prefusion_layers > llm_layers:
            raise ValueError(
                f"prefusion_layers={self.prefusion_layers} with prefusion_init='llm' exceeds the LLM's {llm_layers} layers"
            )

    def validate_ablation_fields(self) -> None:
        """The ablation switches (`inside_llm_layers`, `vision_tokens_to_llm`) must describe one model."""
        if self.arrangement == "inside_llm":
            llm_layers = int(self.text_config.num_hidden_layers)
            if not 1 <= self.inside_llm_layers < llm_layers:
                raise ValueError(
                    f"inside_llm_layers must be in [1, {llm_layers - 1}] (the LLM has {llm_layers} layers), "
                    f"got {self.inside_llm_layers}"
                )
            if self.compressor_type == "none" or self.prefusion_layers != 0:
                raise ValueError(
                    "arrangement='inside_llm' needs a compressor (compressor_type 'query' or 'pool') and "
                    f"prefusion_layers=0, got {self.compressor_type!r} and {self.prefusion_layers}"
                )
        elif self.inside_llm_layers != 0:
            raise ValueError(f"inside_llm_layers={self.inside_llm_layers} needs arrangement='inside_llm'")
        if not self.vision_tokens_to_llm and (self.prefusion_layers < 1 or self.arrangement == "inside_llm"):
            raise ValueError(
                "vision_tokens_to_llm=False needs pre-fusion (prefusion_layers >= 1, arrangement 'release' or "
                "'paper'): otherwise no picture information reaches the LLM"
            )

    @property
    def patch_grid_side(self) -> int:
        """Side of the vision tower's patch grid (24 for CLIP ViT-L/14 at 336 px)."""
        return int(self.vision_config.image_size) // int(self.vision_config.patch_size)

    @property
    def num_patches(self) -> int:
        return self.patch_grid_side**2

    @property
    def views_per_picture(self) -> int:
        """Views the image processor produces per picture: 1, or ratio*ratio crops plus the global view."""
        return views_per_picture(self.resolution_ratio)

    def num_vision_tokens(self, views: int | None = None) -> int:
        """Placeholder slots per picture (image or video frame): the vision tokens the LLM sees (with
        "inside_llm": its later layers), or one content-free marker slot with `vision_tokens_to_llm=False`."""
        views = self.views_per_picture if views is None else views
        if not self.vision_tokens_to_llm:
            return 1
        if self.compressor_type == "none":
            return views * self.num_patches
        return self.compressor_size**2

    @property
    def stitched_grid_side(self) -> int:
        """Side of the grid the compressor reads: the patch grid, or the stitched HD crops."""
        return self.patch_grid_side * self.resolution_ratio

    def hd_grid_side(self, views: int) -> int:
        """Crops per side for a picture given as `views` views (1 view -> 1)."""
        if views == 1:
            return 1
        ratio = math.isqrt(views - 1)
        if ratio * ratio != views - 1:
            raise ValueError(f"{views} views is not ratio*ratio crops plus one global view")
        return ratio


__all__ = ["LlavaMiniConfig"]
