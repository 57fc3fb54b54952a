"""LlavaMiniProcessor: chat template -> token ids with vision slots, labels, and pixel values.

Each `<image>` in a message becomes K placeholder ids (K = vision tokens per picture that reach the LLM)
and each `<video>` becomes T*K (T sampled frames), so the model only has to fill slots in order.
Labels mark the assistant turns (answer and end-of-turn token); everything else is IGNORE_INDEX.
Control tokens typed inside a message (`<|eot_id|>`, `<|start_header_id|>`, ...) are tokenised as plain text:
only the chat template writes them, and only `<image>` / `<video>` keep their meaning inside a message.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jinja2 import TemplateError
from PIL import Image
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from llava_mini.model.configuration import LlavaMiniConfig
from llava_mini.model.pictures import PictureStream, concat_pictures, picture_count
from llava_mini.processing.image import LlavaMiniImageProcessor
from llava_mini.processing.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN
from llava_mini.processing.video import VideoFile

IGNORE_INDEX = -100
PROCESSOR_CONFIG_NAME = "processor_config.json"
# Stands for the k-th control token typed in a message while the template renders: "\ue000k\ue001". A private-use
# character typed by a client is shielded the same way, so every "\ue000" in a rendered prompt is a stand-in.
SHIELD_OPEN, SHIELD_CLOSE = "\ue000", "\ue001"
SHIELDED = re.compile(SHIELD_OPEN + r"(\d+)" + SHIELD_CLOSE)


@dataclass
class Video:
    """Sampled frames of one video, in time order."""

    frames: list[Image.Image]


Medium = Image.Image | Video | VideoFile | torch.Tensor


@dataclass
class VideoFilePixels:
    """The pixel values (T, S, 3, H, W) of a video file, decoded and preprocessed a chunk at a time."""

    video: VideoFile
    image_processor: LlavaMiniImageProcessor

    @property
    def num_pictures(self) -> int:
        return self.video.num_frames

    @property
    def num_views(self) -> int:
        return self.image_processor.views_per_picture

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        """(p, S, 3, H, W) chunks; each frame is preprocessed as it is decoded (never a chunk of full-size frames)."""
        for frames in self.video.iter_frames(chunk_size=size, transform=self.image_processor.preprocess_frame):
            yield torch.stack(frames)


@dataclass
class EncodedSample:
    """One conversation: ids (L,), labels (L,) (None when not asked for), pixel values (P, S, 3, H, W) or None."""

    input_ids: list[int]
    labels: list[int] | None
    pixel_values: torch.Tensor | PictureStream | None = None
    meta: dict = field(default_factory=dict)


def is_video(medium: Medium) -> bool:
    return isinstance(medium, (Video, VideoFile))


def message_text(content: str | Sequence[dict]) -> str:
    """A message's content as text with `<image>` / `<video>` markers (accepts OpenAI-style part lists)."""
    if isinstance(content, str):
        return content
    pieces = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            pieces.append(part["text"])
        elif kind in ("image", "image_url"):
            pieces.append(IMAGE_TOKEN + "\n")
        elif kind in ("video", "video_url"):
            pieces.append(VIDEO_TOKEN + "\n")
        else:
            raise ValueError(f"unsupported message content part type {kind!r}")
    return "".join(pieces)


class LlavaMiniProcessor:
    """Tokenizer + image processor + the number of vision slots per picture."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: LlavaMiniImageProcessor,
        num_vision_tokens: int,
        system_prompt: str | None = None,
        max_length: int | None = None,
    ) -> None:
        for token in (IMAGE_TOKEN, VIDEO_TOKEN):
            if token not in tokenizer.get_vocab():
                raise ValueError(f"the tokenizer has no {token} token; add it as a special token")
        if tokenizer.chat_template is None:
            raise ValueError("the tokenizer has no chat_template")
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.num_vision_tokens = num_vision_tokens
        self.system_prompt = system_prompt
        self.max_length = max_length
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
        control = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special} - {IMAGE_TOKEN, VIDEO_TOKEN}
        self.control_tokens = re.compile(
            "|".join(re.escape(token) for token in sorted(control | {SHIELD_OPEN}, key=len, reverse=True))
        )
        self._plain_ids: dict[str, list[int]] = {}

    @classmethod
    def for_config(
        cls,
        config: LlavaMiniConfig,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: LlavaMiniImageProcessor,
        system_prompt: str | None = None,
        max_length: int | None = None,
    ) -> LlavaMiniProcessor:
        return cls(tokenizer, image_processor, config.num_vision_tokens(), system_prompt, max_length)

    # Persistence -----------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)
        settings = {
            "processor_class": type(self).__name__,
            "num_vision_tokens": self.num_vision_tokens,
            "system_prompt": self.system_prompt,
            "max_length": self.max_length,
        }
        (directory / PROCESSOR_CONFIG_NAME).write_text(json.dumps(settings, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> LlavaMiniProcessor:
        directory = Path(directory)
        settings_path = directory / PROCESSOR_CONFIG_NAME
        if not settings_path.is_file():
            raise FileNotFoundError(f"{settings_path} not found: not a llava-mini processor directory")
        settings = json.loads(settings_path.read_text())
        settings.pop("processor_class", None)
        return cls(
            AutoTokenizer.from_pretrained(directory),
            LlavaMiniImageProcessor.from_pretrained(directory),
            **settings,
        )

    # Prompt building -------------------------------------------------------------------------------
    def build_messages(self, turns: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
        """(role, text) turns -> chat messages, with the processor's system prompt first if it has one."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return messages + [{"role": role, "content": text} for role, text in turns]

    def render(self, messages: Sequence[dict], add_generation_prompt: bool) -> str:
        """The prompt text the chat template makes of `messages` (content part lists become markers)."""
        return self.apply_template(self.normalise(messages), add_generation_prompt)

    @staticmethod
    def normalise(messages: Sequence[dict]) -> list[dict[str, str]]:
        return [{"role": m["role"], "content": message_text(m["content"])} for m in messages]

    def apply_template(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def shield(self, messages: Sequence[dict[str, str]]) -> tuple[list[dict[str, str]], list[str]]:
        """Replace control tokens typed in message contents by stand-ins; returns the messages and the originals."""
        originals: list[str] = []

        def stand_in(match: re.Match) -> str:
            originals.append(match.group())
            return f"{SHIELD_OPEN}{len(originals) - 1}{SHIELD_CLOSE}"

        shielded = [{"role": m["role"], "content": self.control_tokens.sub(stand_in, m["content"])} for m in messages]
        return shielded, originals

    def target_spans(self, messages: Sequence[dict]) -> list[tuple[int, int]]:
        """Character spans of the assistant turns in the rendered conversation (answer + end of turn).

        A turn starts where the generation prompt after the conversation before it ends, and ends where the
        conversation up to it ends. Linear in the number of messages when the template renders each message
        on its own (the shipped templates do); otherwise two renders per assistant turn.
        """
        messages = self.normalise(messages)
        assistant = [i for i, message in enumerate(messages) if message["role"] == "assistant"]
        layout = self.turn_layout(messages)
        if layout is not None:
            ends, prompt, whole = layout
            if all(whole.startswith(prompt, ends[i]) for i in assistant):
                return [(ends[i] + len(prompt), ends[i + 1]) for i in assistant]
        return [
            (len(self.apply_template(messages[:i], True)), len(self.apply_template(messages[: i + 1], False)))
            for i in assistant
        ]

    def turn_layout(self, messages: Sequence[dict[str, str]]) -> tuple[list[int], str, str] | None:
        """(len(render(messages[:k])) for k = 0..n, the generation prompt, the whole render) from n + 3 renders.

        None when the template does not render each message independently of the others (a system prompt
        it adds, roles it checks, ...): the one-message renders then do not add up to the whole.
        """
        if not messages:
            return None
        try:
            pieces = [self.apply_template([message], False) for message in messages]
            twice = self.apply_template([messages[0]] * 2, False)  # head + piece + piece
            prompt = self.apply_template(messages[:1], True)[len(pieces[0]) :]
            whole = self.apply_template(messages, False)
        except (TemplateError, IndexError, KeyError, TypeError, ValueError):
            return None
        head = pieces[0][: 2 * len(pieces[0]) - len(twice)]
        if not all(piece.startswith(head) for piece in pieces):
            return None
        ends = [len(head)]
        for piece in pieces:
            ends.append(ends[-1] + len(piece) - len(head))
        if head + "".join(piece[len(head) :] for piece in pieces) != whole:
            return None
        return ends, prompt, whole

    # Encoding --------------------------------------------------------------------------------------
    def preprocess_medium(self, medium: Medium) -> torch.Tensor | VideoFilePixels:
        """A medium -> (P, S, 3, H, W): one picture for an image, T for a video (lazily for a video file)."""
        if isinstance(medium, torch.Tensor):
            return medium if medium.dim() == 5 else medium.unsqueeze(0)
        if isinstance(medium, VideoFile):
            return VideoFilePixels(medium, self.image_processor)
        if isinstance(medium, Video):
            return self.image_processor.preprocess_frames(medium.frames)
        if isinstance(medium, Image.Image):
            return self.image_processor.preprocess_image(medium).unsqueeze(0)
        raise TypeError(f"unsupported medium {type(medium).__name__}; pass a PIL image or a Video")

    def encode(
        self,
        messages: Sequence[dict],
        media: Sequence[Medium] = (),
        add_generation_prompt: bool = True,
        with_labels: bool = True,
    ) -> EncodedSample:
        """Render, tokenize and expand one conversation; labels (if asked for) cover the assistant turns.

        Linear in the prompt's length; raises ValueError past `max_length` tokens, before preprocessing media.
        """
        messages, originals = self.shield(self.normalise(messages))
        text = self.apply_template(messages, add_generation_prompt)
        token_ids, starts = self.tokenize(text, originals, with_offsets=with_labels)
        markers = [i for i in token_ids if i in (self.image_token_id, self.video_token_id)]
        if len(markers) != len(media):
            raise ValueError(
                f"the conversation has {len(markers)} media placeholders ({IMAGE_TOKEN}/{VIDEO_TOKEN}) "
                f"but {len(media)} media were given"
            )
        if self.max_length is not None and len(token_ids) - len(markers) > self.max_length:  # before any media
            raise ValueError(
                f"the prompt has {len(token_ids) - len(markers)} text tokens, over the limit of {self.max_length}"
            )
        pictures = [self.preprocess_medium(medium) for medium in media]
        spans = iter(self.target_spans(messages) if with_labels else ())
        span = next(spans, None)
        input_ids: list[int] = []
        labels: list[int] = []
        media_index = 0
        for index, token_id in enumerate(token_ids):
            if token_id in (self.image_token_id, self.video_token_id):
                expected_video = token_id == self.video_token_id
                if is_video(media[media_index]) != expected_video and not isinstance(
                    media[media_index], torch.Tensor
                ):
                    kind = "video" if expected_video else "image"
                    raise ValueError(f"placeholder {media_index + 1} expects a {kind}, got {type(media[media_index]).__name__}")
                count = picture_count(pictures[media_index]) * self.num_vision_tokens
                input_ids.extend([self.image_token_id] * count)
                labels.extend([IGNORE_INDEX] * count)
                media_index += 1
                continue
            input_ids.append(token_id)
            if with_labels:  # token starts only grow: walk the sorted spans alongside
                while span is not None and starts[index] >= span[1]:
                    span = next(spans, None)
                labels.append(token_id if span is not None and span[0] <= starts[index] else IGNORE_INDEX)
        if self.max_length is not None and len(input_ids) > self.max_length:
            raise ValueError(f"the prompt has {len(input_ids)} tokens, over the limit of {self.max_length}")
        pixel_values = concat_pictures(pictures) if pictures else None
        return EncodedSample(input_ids=input_ids, labels=labels if with_labels else None, pixel_values=pixel_values)

    def tokenize(self, text: str, originals: Sequence[str], with_offsets: bool) -> tuple[list[int], list[int]]:
        """Token ids of a rendered prompt and where each starts in `text` (empty unless `with_offsets`).

        Stand-ins for typed control tokens become the ids of their characters as plain text.
        """
        token_ids: list[int] = []
        starts: list[int] = []
        position = 0
        for match in [*SHIELDED.finditer(text), None]:
            end = match.start() if match else len(text)
            segment = self.tokenizer(text[position:end], add_special_tokens=False, return_offsets_mapping=with_offsets)
            token_ids.extend(segment.input_ids)
            if with_offsets:
                starts.extend(position + start for start, _ in segment.offset_mapping)
            if match is None:
                break
            literal = self.plain_ids(originals[int(match.group(1))])
            token_ids.extend(literal)
            starts.extend([match.start()] * len(literal) if with_offsets else ())
            position = match.end()
        return token_ids, starts

    def plain_ids(self, control_token: str) -> list[int]:
        """The ids of a control token's characters as text, one character at a time.

        (Not `split_special_tokens=True`: it flips a flag on the shared Rust tokenizer, racing other threads.)
        """
        if control_token not in self._plain_ids:  # at most one entry per control token
            self._plain_ids[control_token] = [
                token_id for char in control_token for token_id in self.tokenizer(char, add_special_tokens=False).input_ids
            ]
        return self._plain_ids[control_token]

    def collate(self, samples: Sequence[EncodedSample], padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Pad samples into a batch: input_ids, attention_mask, labels (B, L), pixel_values (P, S, 3, H, W)."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        length = max(len(sample.input_ids) for sample in samples)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((len(samples), length), pad_id, dtype=torch.long)
        labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
        for row, sample in enumerate(samples):
            size = len(sample.input_ids)
            columns = slice(length - size, length) if padding_side == "left" else slice(0, size)
            input_ids[row, columns] = torch.tensor(sample.input_ids)
            if sample.labels is not None:
                labels[row, columns] = torch.tensor(sample.labels)
            attention_mask[row, columns] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        pictures = [sample.pixel_values for sample in samples if sample.pixel_values is not None]
        if pictures:
            batch["pixel_values"] = concat_pictures(pictures)
        return batch

    def __call__(
        self,
        conversations: Sequence[Sequence[dict]],
        media: Sequence[Sequence[Medium]] | None = None,
        add_generation_prompt: bool = True,
        padding_side: str = "left",
        return_labels: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Encode a batch of conversations (left padding by default, for generation)."""
        media = media if media is not None else [()] * len(conversations)
        if len(media) != len(conversations):
            raise ValueError(f"{len(conversations)} conversations but {len(media)} media lists")
        samples = [
            self.encode(messages, sample_media, add_generation_prompt, with_labels=return_labels)
            for messages, sample_media in zip(conversations, media, strict=True)
        ]
        batch = self.collate(samples, padding_side=padding_side)
        if not return_labels:
            batch.pop("labels")
        return batch

    def decode(self, token_ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens).strip()
