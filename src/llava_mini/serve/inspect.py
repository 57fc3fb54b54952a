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
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from PIL import Image

from llava_mini.analysis.compression import conversation_attention, displayed_picture
from llava_mini.analysis.flops import baseline_config
from llava_mini.serve.schemas import ChatCompletionRequest

if TYPE_CHECKING:
    from llava_mini.serve.app import ServerState

PICTURE_JPEG_QUALITY = 85
ATTENTION_DECIMALS = 5


def picture_data_url(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=PICTURE_JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def inspect_request(
    state: ServerState,
    request: ChatCompletionRequest,
    messages: Sequence[dict],
    media: Sequence[torch.Tensor],
    prompt_tokens: int,
) -> dict:
    """The inspection of a request (see the module doc) from the conversation the chat endpoint would answer:
    `messages` and `media` as `request_to_conversation` builds them (each medium's pixel values (P, S, 3, H, W),
    in the order of the request's media parts) and its prompt length. One forward pass over the conversation
    gives every picture's compressor attention."""
    assistant = state.assistant
    image_processor = assistant.processor.image_processor
    per_picture = assistant.config.num_vision_tokens()
    baseline_per_picture = baseline_config(assistant.config).num_vision_tokens()
    kinds = [
        part.type
        for message in request.messages
        if not isinstance(message.content, str) and message.content is not None
        for part in message.content
        if part.type != "text"
    ]
    attention = conversation_attention(assistant, messages, media) if media else None  # (P_total, K, g, g)
    items, start = [], 0
    for kind, pixels in zip(kinds, media, strict=True):
        pictures = pixels.shape[0]
        maps = attention[start : start + pictures]
        start += pictures
        frames = [
            {
                "picture": picture_data_url(displayed_picture(views, image_processor)),
                "attention": [[round(float(value), ATTENTION_DECIMALS) for value in query.flatten()] for query in picture_maps],
            }
            for views, picture_maps in zip(pixels, maps, strict=True)
        ]
        items.append(
            {
                "type": kind,
                "pictures": pictures,
                "queries": int(maps.shape[1]),
                "grid": int(maps.shape[-1]),
                "vision_tokens": pictures * per_picture,
                "baseline_vision_tokens": pictures * baseline_per_picture,
                "frames": frames,
            }
        )
    return {
        "object": "inspection",
        "model": state.model_id,
        "prompt_tokens": prompt_tokens,
        "vision_tokens": sum(item["vision_tokens"] for item in items),
        "baseline_vision_tokens": sum(item["baseline_vision_tokens"] for item in items),
        "media": items,
    }
