"""Modality pre-fusion (paper sec. 4.1, eq. 3): N decoder layers of the LLM's own class."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel


class ModalityPreFusion(nn.Module):
    """Causal Transformer over [vision tokens ; compressed tokens ; text tokens] of one picture.

    The layers are built from the language model's own decoder-layer and rotary classes and its config,
    so the block shares the backbone's structure (sec. 4.1). Sequences are right-padded; with a causal
    mask the padding never reaches a real position, so no padding mask is needed.

    forward: hidden (B, S, D)  ->  hidden (B, S, D); positions 0..S-1, no final norm (as released)
    """

    def __init__(self, language_model: PreTrainedModel, num_layers: int) -> None:
        super().__init__()
        decoder = language_model.get_decoder()
        text_config = language_model.config
        layer_class = type(decoder.layers[0])
        self.layers = nn.ModuleList(layer_class(text_config, layer_idx=index) for index in range(num_layers))
        self.rotary_emb = type(decoder.rotary_emb)(config=text_config)

    def copy_from_language_model(self, language_model: PreTrainedModel) -> None:
        """Initialise layer i from the LLM's layer i (an alternative to random initialisation)."""
        source_layers = language_model.get_decoder().layers
        if len(source_layers) < len(self.layers):
            raise ValueError(f"the LLM has {len(source_layers)} layers; pre-fusion needs {len(self.layers)}")
        for target, source in zip(self.layers, source_layers, strict=False):
            target.load_state_dict(source.state_dict())

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        batch_size, length, _ = hidden.shape
        position_ids = torch.arange(length, device=hidden.device).unsqueeze(0).expand(batch_size, -1)
        position_embeddings = self.rotary_emb(hidden, position_ids=position_ids)
        # An explicit additive causal mask: some attention implementations read "no mask" as bidirectional.
        blocked = torch.ones(length, length, dtype=torch.bool, device=hidden.device).triu(1)
        causal_mask = torch.zeros(length, length, dtype=hidden.dtype, device=hidden.device)
        causal_mask = causal_mask.masked_fill(blocked, torch.finfo(hidden.dtype).min)
        causal_mask = causal_mask.view(1, 1, length, length).expand(batch_size, 1, -1, -1)
        for layer in self.layers:
            hidden = layer(
                hidden,
                attention_mask=causal_mask,
                position_ids=position_ids,
                position_embeddings=position_embeddings,
            )
        return hidden
