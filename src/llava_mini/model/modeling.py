"""The LLaVA-Mini model: vision tower -> compression -> projection -> pre-fusion -> LLM (paper sec. 4).

Shape letters: B batch, L text length, P pictures in the batch (images and video frames), S views per
picture (1, or ratio*ratio HD crops plus the global view), N vision tokens of a picture, K vision tokens
per picture that reach the LLM (C*C, or N for the baseline), D widths.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.utils import ModelOutput

from llava_mini.model.compressor import QueryCompressor, build_compressor, sincos_2d_table
from llava_mini.model.configuration import LlavaMiniConfig
from llava_mini.model.inside_llm import inside_llm_forward
from llava_mini.model.pictures import PictureStream, picture_chunks
from llava_mini.model.prefusion import ModalityPreFusion
from llava_mini.model.projector import build_projector
from llava_mini.model.vision import VisionTower

IGNORE_INDEX = -100


@dataclass
class LlavaMiniCausalLMOutputWithPast(ModelOutput):
    """Language-model outputs plus the compressor's attention over each picture (P, K, N) at prefill."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    compressor_attentions: torch.FloatTensor | None = None


@dataclass
class EncodedPictures:
    """What the pictures contribute to the LLM input.

    vision_tokens: (P, K, D) tokens for the placeholder slots, in picture order.
    fused_text: (B, L_fused, D) pre-fused text averaged over each sample's pictures (None without pre-fusion).
    compressor_attention: (P, K, N) or None.
    """

    vision_tokens: torch.Tensor
    fused_text: torch.Tensor | None
    compressor_attention: torch.Tensor | None


class LlavaMiniPreTrainedModel(PreTrainedModel):
    config_class = LlavaMiniConfig
    config: LlavaMiniConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["LlamaDecoderLayer", "Qwen2DecoderLayer", "CLIPEncoderLayer", "SiglipEncoderLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, QueryCompressor):
            init.normal_(module.query, mean=0.0, std=0.02)
            init.copy_(module.pos_embed, sincos_2d_table(module.grid_size, module.query.shape[1]))


class LlavaMiniForConditionalGeneration(LlavaMiniPreTrainedModel, GenerationMixin):
    """LLaVA-Mini: the LLM sees K vision tokens per picture and text pre-fused with all N of them.

    forward: input_ids (B, L) with K `image_token_id` slots per picture, pixel_values (P, S, 3, H, W)
    -> logits (B, L, vocab). Pictures fill the slots in row-major order of the placeholders.
    """

    def __init__(self, config: LlavaMiniConfig) -> None:
        super().__init__(config)
        self.vision_tower = VisionTower(
            config.vision_config, config.vision_feature_layer, config.vision_feature_select
        )
        vision_dim = self.vision_tower.hidden_size
        text_dim = int(config.text_config.hidden_size)
        compressor_dim = vision_dim if config.arrangement == "release" else text_dim
        self.projector = build_projector(config.projector_type, vision_dim, text_dim)
        self.compressor = build_compressor(
            config.compressor_type, compressor_dim, config.compressor_size, config.compressor_num_heads
        )
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.prefusion = (
            ModalityPreFusion(self.language_model, config.prefusion_layers) if config.prefusion_layers > 0 else None
        )
        self.post_init()

    # Hugging Face plumbing -------------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def get_decoder(self) -> nn.Module:
        return self.language_model.get_decoder()

    def init_prefusion_from_language_model(self) -> None:
        """Copy the LLM's first N layers into the pre-fusion block (`prefusion_init="llm"`)."""
        if self.prefusion is not None:
            self.prefusion.copy_from_language_model(self.language_model)

    # Picture encoding (sec. 4.1, 4.2) --------------------------------------------------------------
    def encode_views(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Vision features of each picture: (P, S, 3, H, W) -> (all tokens (P, N, Dv), compressor grid (P, G, Dv)).

        One view: both are the patch grid. HD: the crops' grids are stitched into one (ratio*g)^2 grid
        for the compressor, and pre-fusion sees [stitched crops ; global view] (spec, "High resolution").
        """
        num_pictures, num_views = pixel_values.shape[:2]
        features = self.vision_tower(pixel_values.flatten(0, 1))  # (P*S, n, Dv)
        features = features.view(num_pictures, num_views, features.shape[1], features.shape[2])
        if num_views == 1:
            return features[:, 0], features[:, 0]
        ratio = self.config.hd_grid_side(num_views)
        side = self.config.patch_grid_side
        crops = features[:, :-1].reshape(num_pictures, ratio, ratio, side, side, -1)  # (P, r, r, g, g, Dv)
        stitched = crops.permute(0, 1, 3, 2, 4, 5).reshape(num_pictures, ratio * side * ratio * side, -1)
        return torch.cat([stitched, features[:, -1]], dim=1), stitched

    def compress_and_project(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(P, S, 3, H, W) -> (projected vision tokens (P, N, D), compressed tokens (P, K, D), attention (P, K, G))."""
        all_tokens, grid = self.encode_views(pixel_values)
        if self.compressor is None:
            projected = self.projector(all_tokens)
            return projected, projected, None
        if self.config.arrangement == "release":  # compress in the vision tower's space, then project
            compressed, attention = self.compressor(grid)
            return self.projector(all_tokens), self.projector(compressed), attention
        projected = self.projector(all_tokens)  # paper text: project, then compress in the LLM's space
        grid_length = grid.shape[1]
        compressed, attention = self.compressor(projected[:, :grid_length])
        return projected, compressed, attention

    def encode_pictures(
        self,
        pixel_values: torch.Tensor | PictureStream,
        picture_to_sample: torch.Tensor,
        text_embeds: torch.Tensor | None,
    ) -> EncodedPictures:
        """Encode, compress, project and pre-fuse pictures in chunks of `encode_chunk_size`.

        pixel_values: (P, S, 3, H, W), as a tensor or a stream that decodes them chunk by chunk.
        text_embeds: (B, L_fused, D) right-padded text each sample contributes to pre-fusion (None: no
        pre-fusion). The fused text of a sample is the mean over its pictures (frames of a video, sec. 4.2).
        Memory holds one chunk of pictures plus the K tokens kept per picture.
        """
        num_pictures = picture_to_sample.shape[0]
        # Outputs are allocated once and filled in place: growing lists of small per-chunk tensors fragment
        # the CPU heap, which made a 10,000-frame video cost ~75 KB per frame instead of ~1 KB.
        vision_tokens: torch.Tensor | None = None
        attentions: torch.Tensor | None = None
        fused_sum = torch.zeros_like(text_embeds) if text_embeds is not None and self.prefusion else None
        start = 0
        for pixels in picture_chunks(pixel_values, self.config.encode_chunk_size):
            projected, compressed, attention = self.compress_and_project(pixels)
            end = start + pixels.shape[0]
            if end > num_pictures:
                raise ValueError(f"expected {num_pictures} pictures, the pixel source gave more")
            samples = picture_to_sample[start:end]
            if fused_sum is not None:
                fused_text, fused_compressed = self.prefuse(projected, compressed, text_embeds[samples])
                fused_sum.index_add_(0, samples, fused_text)
                if self.config.arrangement == "release":
                    compressed = fused_compressed
            if vision_tokens is None:
                vision_tokens = compressed.new_empty((num_pictures, *compressed.shape[1:]))
            vision_tokens[start:end] = compressed
            if attention is not None:
                if attentions is None:
                    attentions = attention.new_empty((num_pictures, *attention.shape[1:]))
                attentions[start:end] = attention
            start = end
        if start != num_pictures:
            raise ValueError(f"expected {num_pictures} pictures, the pixel source gave {start}")
        fused_text = None
        if fused_sum is not None:
            counts = torch.bincount(picture_to_sample, minlength=fused_sum.shape[0]).clamp(min=1)
            fused_text = fused_sum / counts.to(fused_sum.dtype).view(-1, 1, 1)
        return EncodedPictures(vision_tokens=vision_tokens, fused_text=fused_text, compressor_attention=attentions)

    def prefuse(
        self, projected: torch.Tensor, compressed: torch.Tensor, text: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-fusion over [vision (N) ; compressed (K) ; text (L)] -> (fused text (P, L, D), fused compressed (P, K, D))."""
        num_vision, num_compressed = projected.shape[1], compressed.shape[1]
        hidden = self.prefusion(torch.cat([projected, compressed, text.to(projected.dtype)], dim=1))
        start = num_vision + num_compressed
        return hidden[:, start:], hidden[:, num_vision:start]

    # Assembling the LLM input ----------------------------------------------------------------------
    def prefusion_text_mask(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor | None
    ) -> torch.Tensor:
        """(B, L) True where a text token enters pre-fusion: real, not a placeholder, not a training target.

        Response tokens keep their raw embeddings, as at generation time (spec, "Modality pre-fusion").
        """
        mask = input_ids != self.config.image_token_id
        if attention_mask is not None:
            mask = mask & attention_mask.bool()
        if labels is not None:
            mask = mask & (labels == IGNORE_INDEX)
        return mask

    def picture_to_sample(self, input_ids: torch.Tensor, num_pictures: int, views: int) -> torch.Tensor:
        """(P,) the batch row of each picture, read from its placeholder slots; checks the counts."""
        tokens_per_picture = self.config.num_vision_tokens(views)
        slots = (input_ids == self.config.image_token_id).nonzero()  # (P*K, 2) row-major
        if slots.shape[0] != num_pictures * tokens_per_picture:
            raise ValueError(
                f"the prompt has {slots.shape[0]} image placeholder tokens but {num_pictures} pictures need "
                f"{num_pictures * tokens_per_picture} ({tokens_per_picture} each); "
                "build inputs with LlavaMiniProcessor so placeholders and media match"
            )
        return slots[::tokens_per_picture, 0]

    def embed_multimodal(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | PictureStream | None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        check_placeholders: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """LLM input embeddings (B, L, D): vision tokens in the slots, pre-fused text at text positions."""
        embeds = self.get_input_embeddings()(input_ids)
        if pixel_values is None:
            if check_placeholders and (input_ids == self.config.image_token_id).any():
                raise ValueError("the prompt has image placeholder tokens but no pixel_values were given")
            return embeds, None
        if isinstance(pixel_values, torch.Tensor):
            if pixel_values.dim() == 4:  # (P, 3, H, W): one view per picture
                pixel_values = pixel_values.unsqueeze(1)
            num_pictures, num_views = pixel_values.shape[:2]
        else:
            num_pictures, num_views = pixel_values.num_pictures, pixel_values.num_views
        picture_to_sample = self.picture_to_sample(input_ids, num_pictures, num_views)
        text_mask = self.prefusion_text_mask(input_ids, attention_mask, labels) if self.prefusion else None
        packed_text = None
        if text_mask is not None:
            lengths = text_mask.sum(1)
            packed_text = embeds.new_zeros(embeds.shape[0], int(lengths.max()), embeds.shape[2])
            packed_mask = torch.arange(packed_text.shape[1], device=embeds.device) < lengths.unsqueeze(1)
            packed_text[packed_mask] = embeds[text_mask]
        encoded = self.encode_pictures(pixel_values, picture_to_sample, packed_text)
        embeds = embeds.clone()
        slots = input_ids == self.config.image_token_id
        if self.config.vision_tokens_to_llm:  # else the slots keep the plain <image> embedding (a marker)
            embeds[slots] = encoded.vision_tokens.reshape(-1, embeds.shape[2]).to(embeds.dtype)
        if encoded.fused_text is not None:
            has_picture = torch.zeros(embeds.shape[0], dtype=torch.bool, device=embeds.device)
            has_picture[picture_to_sample] = True
            text_mask = text_mask & has_picture.unsqueeze(1)
            embeds[text_mask] = encoded.fused_text[packed_mask & has_picture.unsqueeze(1)].to(embeds.dtype)
        return embeds, encoded.compressor_attention

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | PictureStream | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> LlavaMiniCausalLMOutputWithPast:
        if self.config.arrangement == "inside_llm":  # compression inside the LLM (Table 12): see inside_llm.py
            if input_ids is None or inputs_embeds is not None:
                raise ValueError("arrangement='inside_llm' takes input_ids, not inputs_embeds")
            inside = inside_llm_forward(
                self, input_ids, pixel_values, attention_mask, position_ids, past_key_values, labels, use_cache,
                logits_to_keep, num_items_in_batch=kwargs.get("num_items_in_batch"),
            )
            return LlavaMiniCausalLMOutputWithPast(
                loss=inside.loss,
                logits=inside.logits,
                past_key_values=inside.past_key_values,
                compressor_attentions=inside.compressor_attention,
            )
        compressor_attention = None
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids (or inputs_embeds)")
            # Decoding steps feed generated tokens with their raw embeddings (the pictures were used at prefill).
            prefill = past_key_values is None or past_key_values.get_seq_length() == 0
            inputs_embeds, compressor_attention = self.embed_multimodal(
                input_ids, pixel_values, attention_mask, labels, check_placeholders=prefill
            )
        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2:
            # Count only real tokens, so a left-padded row gets the positions it would have alone.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -inputs_embeds.shape[1] :]
        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        return LlavaMiniCausalLMOutputWithPast(
            loss=outputs.loss,
            logits=outputs.logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            compressor_attentions=compressor_attention,
        )


__all__ = ["LlavaMiniForConditionalGeneration", "LlavaMiniPreTrainedModel", "LlavaMiniCausalLMOutputWithPast"]
