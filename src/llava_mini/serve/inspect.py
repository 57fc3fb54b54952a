"""What the one token sees: the compressor's attention over each picture of a request, and token counts.

`POST /v1/inspect` (a llava-mini extension; the OpenAI endpoints are unchanged) takes the body of a chat
completions request and answers, without generating:

    {"object": "inspection", "model": ..., "prompt_tokens": int,
     "vision_tokens": int, "baseline_vision_tokens": int,
     "media": [{"type": "image_url" | "video_url", "pictures": P, "queries": K, "grid": g,
                "vision_tokens": P*K, "baseline_vision_tokens": P*N,
                "frames": [{"picture": "data:image/jpeg;base64,...", "attention": [[g*g floats] * K]}] * P}]}

`prompt_tokens` is the prompt the language model receives for this conversation (the chat endpoint's
`usage.prompt_tokens`); `vision_tokens` the placeholder slots the pictures fill (C*C per picture, sec. 4.1);
`baseline_vision_tokens` what a LLaVA-1.5-style model on the same vision tower would feed the language model
(every patch of every view). Each frame's `picture` is the square the compressor reads (the image padded to a
square, or the HD crops tiled), and `attention[k]` is query k's distribution over its g x g grid, row-major.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

import torch
from PIL import Image

from llava_mini.analysis.compression import displayed_picture, medium_attention
from llava_mini.analysis.flops import baseline_config
from llava_mini.serve.media import load_request_medium
from llava_mini.serve.schemas import ChatCompletionRequest

if TYPE_CHECKING:
    from llava_mini.serve.app import ServerState

PICTURE_JPEG_QUALITY = 85
ATTENTION_DECIMALS = 5


def picture_data_url(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=PICTURE_JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def message_text(content: list) -> str:
    """The text parts of one message's content, joined (the question that came with its media)."""
    return " ".join(part.text for part in content if part.type == "text" and part.text).strip()


def inspect_request(state: ServerState, request: ChatCompletionRequest, prompt_tokens: int) -> dict:
    """The inspection of a request whose conversation encodes to `prompt_tokens` tokens (see the module doc).

    state: the server's `ServerState` (its assistant and media policy). Each medium's attention comes from
    one forward pass over that medium with the text of the message that carried it (pre-fusion reads it).
    """
    assistant = state.assistant
    config = assistant.config
    image_processor = assistant.processor.image_processor
    per_picture = config.num_vision_tokens()
    baseline_per_picture = baseline_config(config).num_vision_tokens()
    media = []
    for message in request.messages:
        if isinstance(message.content, str) or message.content is None:
            continue
        question = message_text(message.content) or "Describe the image briefly."
        for part in message.content:
            if part.type == "text":
                continue
            reference = part.image_url if part.type == "image_url" else part.video_url
            medium, _ = load_request_medium(part.type, reference.url, state.policy, image_processor)
            attention = medium_attention(assistant, medium, question)  # (P, K, g, g)
            pictures = list(medium) if isinstance(medium, torch.Tensor) else [medium]  # video: (T, S, 3, H, W)
            frames = [
                {
                    "picture": picture_data_url(displayed_picture(picture, image_processor)),
                    "attention": [
                        [round(float(value), ATTENTION_DECIMALS) for value in query.flatten()] for query in maps
                    ],
                }
                for picture, maps in zip(pictures, attention, strict=True)
            ]
            media.append(
                {
                    "type": part.type,
                    "pictures": len(pictures),
                    "queries": int(attention.shape[1]),
                    "grid": int(attention.shape[-1]),
                    "vision_tokens": len(pictures) * per_picture,
                    "baseline_vision_tokens": len(pictures) * baseline_per_picture,
                    "frames": frames,
                }
            )
    return {
        "object": "inspection",
        "model": state.model_id,
        "prompt_tokens": prompt_tokens,
        "vision_tokens": sum(item["vision_tokens"] for item in media),
        "baseline_vision_tokens": sum(item["baseline_vision_tokens"] for item in media),
        "media": media,
    }
