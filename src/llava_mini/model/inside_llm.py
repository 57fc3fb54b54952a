"""Compression inside the LLM (paper appendix E.3, Table 12): the `arrangement="inside_llm"` forward pass.

The LLM's first `inside_llm_layers` layers (call them M) run over [all vision tokens ; text], acting as the
pre-fusion; the compressor then squeezes each picture's hidden states at the vision positions into C*C
tokens, and the remaining layers run over [C*C compressed tokens ; text]. `input_ids` carry C*C
placeholder slots per picture (as for LLaVA-Mini); this module widens each picture's slots to its N vision
tokens for the first M layers.

Two sequences share one KV cache: the first M layers cache the expanded sequence (length L + extra), the
later layers only the compressed one (length L), so the dropped vision tokens never reach the later layers'
cache. Rows of a batch can have different numbers of pictures, so the expanded rows are left-padded to a
common length; that padding mask is kept on the cache (attribute `EXPANDED_MASK_ATTRIBUTE`) for the
decoding steps, which only see the new tokens (so beam search, which reorders the cache's rows, is not
supported; greedy and sampling are). Works for LLaMA-style decoders (`layers`, `rotary_emb`, `norm`);
returns no hidden states or attention maps.

Shape letters as in modeling.py; X is the expanded length, M the layers that see every vision token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from transformers.cache_utils import Cache, DynamicCache

from llava_mini.model.pictures import PictureStream, picture_chunks

if TYPE_CHECKING:
    from llava_mini.model.modeling import LlavaMiniForConditionalGeneration

EXPANDED_MASK_ATTRIBUTE = "llava_mini_expanded_prefix_mask"


class InsideLlmOutput(NamedTuple):
    loss: torch.Tensor | None
    logits: torch.Tensor
    past_key_values: Cache | None
    compressor_attention: torch.Tensor | None


class ExpandedPrefix(NamedTuple):
    """Kept on the cache at prefill: the first layers' padding mask (B, X) of the prompt of `length` tokens."""

    mask: torch.Tensor
    length: int


class ExpandedSequence(NamedTuple):
    """The prompt with every picture's slots widened to its N vision tokens, left-padded per row.

    embeds: (B, X, D); mask: (B, X) 1 at real tokens; source_index: (B, L) the expanded column of each
    original position (for a picture's slots: its first vision token); vision_index: (P, N) flat indices
    into (B*X) of each picture's vision tokens.
    """

    embeds: torch.Tensor
    mask: torch.Tensor
    source_index: torch.Tensor
    vision_index: torch.Tensor


def additive_causal_mask(key_mask: torch.Tensor, query_length: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, Kv) key padding mask -> (B, 1, q, Kv) additive mask: causal over the last q keys, padding blocked."""
    batch_size, key_length = key_mask.shape
    past = key_length - query_length
    query_positions = torch.arange(query_length, device=key_mask.device).view(-1, 1) + past
    key_positions = torch.arange(key_length, device=key_mask.device).view(1, -1)
    allowed = (key_positions <= query_positions).unsqueeze(0) & key_mask.bool().unsqueeze(1)  # (B, q, Kv)
    additive = torch.zeros(allowed.shape, dtype=dtype, device=key_mask.device)
    return additive.masked_fill(~allowed, torch.finfo(dtype).min).unsqueeze(1)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, S) padding mask -> (B, S) positions counting real tokens only (as the model's forward does)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def expand_slots(
    embeds: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    vision_tokens: torch.Tensor,
    image_token_id: int,
    slots_per_picture: int,
) -> ExpandedSequence:
    """Replace each picture's `slots_per_picture` slots of (B, L) by its (N, D) vision tokens."""
    num_pictures, tokens_per_picture, _ = vision_tokens.shape
    batch_size, length = input_ids.shape
    slots = input_ids == image_token_id
    if int(slots.sum()) != num_pictures * slots_per_picture:
        raise ValueError(
            f"the prompt has {int(slots.sum())} image placeholder tokens but {num_pictures} pictures need "
            f"{num_pictures * slots_per_picture} ({slots_per_picture} each)"
        )
    first_slot = torch.zeros_like(slots)
    slot_rows, slot_cols = slots.nonzero(as_tuple=True)
    first_slot[slot_rows[::slots_per_picture], slot_cols[::slots_per_picture]] = True
    widths = torch.ones_like(input_ids)
    widths[slots] = 0
    widths[first_slot] = tokens_per_picture
    row_lengths = widths.sum(1)
    expanded_length = int(row_lengths.max())
    # Left padding, so the last token of every row sits at the last column (as generation expects).
    start = widths.cumsum(1) - widths + (expanded_length - row_lengths).unsqueeze(1)  # (B, L)
    expanded = embeds.new_zeros(batch_size, expanded_length, embeds.shape[2])
    mask = attention_mask.new_zeros(batch_size, expanded_length)
    rows = torch.arange(batch_size, device=input_ids.device).unsqueeze(1).expand(-1, length)
    text = ~slots
    expanded[rows[text], start[text]] = embeds[text]
    mask[rows[text], start[text]] = attention_mask[text]
    picture_rows, picture_starts = rows[first_slot], start[first_slot]  # (P,), row-major = picture order
    columns = picture_starts.unsqueeze(1) + torch.arange(
        tokens_per_picture, device=input_ids.device
    )  # (P, N)
    vision_index = picture_rows.unsqueeze(1) * expanded_length + columns
    expanded.view(-1, embeds.shape[2])[vision_index.reshape(-1)] = vision_tokens.reshape(
        -1, embeds.shape[2]
    ).to(embeds.dtype)
    mask.view(-1)[vision_index.reshape(-1)] = 1
    return ExpandedSequence(expanded, mask, start, vision_index)


def project_all_tokens(
    model: LlavaMiniForConditionalGeneration, pixel_values: torch.Tensor | PictureStream
) -> tuple[torch.Tensor, int]:
    """(P, S, 3, H, W) -> every projected vision token (P, N, D) and the compressor grid's length G."""
    if isinstance(pixel_values, torch.Tensor) and pixel_values.dim() == 4:
        pixel_values = pixel_values.unsqueeze(1)
    pieces, grid_length = [], 0
    for pixels in picture_chunks(pixel_values, model.config.encode_chunk_size):
        all_tokens, grid = model.encode_views(pixels)
        pieces.append(model.projector(all_tokens))
        grid_length = grid.shape[1]
    return torch.cat(pieces), grid_length


def run_layers(
    layers,
    hidden: torch.Tensor,
    key_mask: torch.Tensor,
    position_ids: torch.Tensor,
    rotary_emb,
    cache: Cache | None,
) -> torch.Tensor:
    """Run decoder layers over hidden (B, q, D); key_mask (B, Kv) covers the cached and the new tokens."""
    mask = additive_causal_mask(key_mask, hidden.shape[1], hidden.dtype)
    position_embeddings = rotary_emb(hidden, position_ids=position_ids)
    for layer in layers:
        hidden = layer(
            hidden,
            attention_mask=mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=cache is not None,
            position_embeddings=position_embeddings,
        )
    return hidden


def inside_llm_forward(
    model: LlavaMiniForConditionalGeneration,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor | PictureStream | None,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    past_key_values: Cache | None,
    labels: torch.Tensor | None,
    use_cache: bool | None,
    logits_to_keep: int | torch.Tensor = 0,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> InsideLlmOutput:
    """input_ids (B, q) (the whole prompt at prefill, new tokens when decoding) -> logits (B, q, vocab)."""
    config = model.config
    decoder = model.language_model.get_decoder()
    early, late = decoder.layers[: config.inside_llm_layers], decoder.layers[config.inside_llm_layers :]
    if attention_mask is None:
        past = past_key_values.get_seq_length(len(early)) if past_key_values is not None else 0
        attention_mask = torch.ones(
            input_ids.shape[0], past + input_ids.shape[1], dtype=torch.long, device=input_ids.device
        )
    if position_ids is None:
        position_ids = positions_from_mask(attention_mask)[:, -input_ids.shape[1] :]
    if use_cache and past_key_values is None:
        past_key_values = DynamicCache()
    prefill = past_key_values is None or past_key_values.get_seq_length() == 0
    has_slots = bool((input_ids == config.image_token_id).any())
    embeds = model.get_input_embeddings()(input_ids)
    compressor_attention = None

    if prefill and pixel_values is not None:
        if attention_mask.shape[1] != input_ids.shape[1]:
            raise ValueError("compression inside the LLM needs the whole prompt at prefill")
        vision_tokens, grid_length = project_all_tokens(model, pixel_values)
        sequence = expand_slots(
            embeds,
            input_ids,
            attention_mask,
            vision_tokens,
            config.image_token_id,
            config.num_vision_tokens(1),
        )
        hidden = run_layers(
            early,
            sequence.embeds,
            sequence.mask,
            positions_from_mask(sequence.mask),
            decoder.rotary_emb,
            past_key_values,
        )
        if past_key_values is not None:
            setattr(
                past_key_values, EXPANDED_MASK_ATTRIBUTE, ExpandedPrefix(sequence.mask, input_ids.shape[1])
            )
        vision_hidden = hidden.flatten(0, 1)[sequence.vision_index]  # (P, N, D)
        compressed, compressor_attention = model.compressor(vision_hidden[:, :grid_length])
        hidden = hidden.gather(1, sequence.source_index.unsqueeze(-1).expand(-1, -1, hidden.shape[2]))
        hidden[input_ids == config.image_token_id] = compressed.reshape(-1, hidden.shape[2]).to(hidden.dtype)
    else:
        if has_slots and prefill:
            raise ValueError("the prompt has image placeholder tokens but no pixel_values were given")
        if has_slots:
            raise ValueError("compression inside the LLM takes pictures only at prefill, not while decoding")
        if prefill:  # text only: both layer groups see the same sequence
            key_mask = attention_mask
            if past_key_values is not None:
                setattr(
                    past_key_values,
                    EXPANDED_MASK_ATTRIBUTE,
                    ExpandedPrefix(attention_mask, input_ids.shape[1]),
                )
        else:
            prefix = getattr(past_key_values, EXPANDED_MASK_ATTRIBUTE, None)
            if prefix is None:
                raise ValueError(
                    "this cache was not filled by an inside-the-LLM prefill (no expanded mask on it)"
                )
            key_mask = torch.cat([prefix.mask, attention_mask[:, prefix.length :]], dim=1)
        early_positions = positions_from_mask(key_mask)[:, -input_ids.shape[1] :]
        hidden = run_layers(early, embeds, key_mask, early_positions, decoder.rotary_emb, past_key_values)

    hidden = run_layers(late, hidden, attention_mask, position_ids, decoder.rotary_emb, past_key_values)
    hidden = decoder.norm(hidden)
    keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
    logits = model.language_model.lm_head(hidden[:, keep])
    loss = None
    if labels is not None:
        loss = model.language_model.loss_function(
            logits=logits,
            labels=labels,
            vocab_size=int(config.text_config.vocab_size),
            num_items_in_batch=num_items_in_batch,
        )
    return InsideLlmOutput(loss, logits, past_key_values, compressor_attention)


__all__ = ["inside_llm_forward", "expand_slots", "additive_causal_mask", "InsideLlmOutput"]
