"""Build a small byte-level BPE tokenizer with LLaVA-Mini's special tokens (for from-scratch models)."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from llava_mini.processing.chat_templates import CHAT_TEMPLATES

IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"
SPECIAL_TOKENS = {
    "bos_token": "<|begin_of_text|>",
    "eos_token": "<|eot_id|>",
    "pad_token": "<|pad|>",
    "unk_token": "<|unk|>",
}
EXTRA_SPECIAL_TOKENS = ["<|start_header_id|>", "<|end_header_id|>", IMAGE_TOKEN, VIDEO_TOKEN]


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 512, chat_template: str = "llama3"
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`; `<image>`, `<video>` and the chat-format tokens are special tokens.

    Token id 0 is an ordinary byte token: no special meaning is attached to it anywhere in the model.
    """
    if chat_template not in CHAT_TEMPLATES:
        raise ValueError(f"unknown chat_template {chat_template!r}; expected one of {sorted(CHAT_TEMPLATES)}")
    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)
    tokenizer.add_special_tokens({"additional_special_tokens": EXTRA_SPECIAL_TOKENS})
    tokenizer.chat_template = CHAT_TEMPLATES[chat_template]
    return tokenizer
