"""llava-mini: LLaVA-Mini, the multimodal model that gives the LLM one vision token per image."""

from transformers import AutoConfig, AutoModelForImageTextToText

from llava_mini.model import LlavaMiniConfig, LlavaMiniForConditionalGeneration

# Hugging Face Auto-class registration, so AutoConfig / AutoModelForImageTextToText resolve "llava_mini".
AutoConfig.register(LlavaMiniConfig.model_type, LlavaMiniConfig, exist_ok=True)
AutoModelForImageTextToText.register(LlavaMiniConfig, LlavaMiniForConditionalGeneration, exist_ok=True)

__all__ = ["LlavaMiniConfig", "LlavaMiniForConditionalGeneration"]
__version__ = "0.1.0"
