"""Model parts: vision tower, projector, compressor, pre-fusion and the LLaVA-Mini model."""

from llava_mini.model.configuration import LlavaMiniConfig
from llava_mini.model.modeling import LlavaMiniForConditionalGeneration

__all__ = ["LlavaMiniConfig", "LlavaMiniForConditionalGeneration"]
