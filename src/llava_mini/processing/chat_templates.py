"""Chat templates (Jinja, as tokenizers store them) for the prompt formats LLaVA-Mini uses.

Message contents are strings in which `<image>` / `<video>` mark where media go (LLaVA's convention).
"""

from __future__ import annotations

RELEASE_SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that "
    "the user provides, and assist the user with a variety of tasks using natural language."
)

VICUNA_SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

# LLaMA-3.1 chat format of the release (header tokens, <|eot_id|> ends every turn).
LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# Vicuna v1: "{system} USER: <image>\n{question} ASSISTANT: {answer}</s>".
VICUNA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] | trim + ' ' }}"
    "{% elif message['role'] == 'user' %}{{ 'USER: ' + message['content'] | trim + ' ' }}"
    "{% else %}{{ 'ASSISTANT: ' + message['content'] | trim + eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

CHAT_TEMPLATES = {"llama3": LLAMA3_CHAT_TEMPLATE, "vicuna": VICUNA_CHAT_TEMPLATE}
