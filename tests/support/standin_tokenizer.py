"""The stand-ins' own tokenizer and chat template: not cl100k, so Server B's estimate is off
by a ratio that depends on the text, as it is against a real model.

The template is Gemma 3's (google/gemma-3-*-it tokenizer_config.json `chat_template`):
`<bos>`, the system message folded into the first user turn, `<start_of_turn>role\\n ...
<end_of_turn>\\n` per message (assistant is "model"), then `<start_of_turn>model\\n`. The
tokenizer counts one token per Hangul syllable, per Latin word, per digit, per other
non-space character and per special tag: Korean costs more than cl100k says.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_TOKEN = re.compile(r"<[a-z_]+>|[가-힣]|[A-Za-z]+|\d|\S")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def render_gemma(messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """Gemma 3's chat template; raises ValueError as its `raise_exception` does."""
    prefix, loop = "", list(messages)
    if loop and loop[0]["role"] == "system":
        prefix, loop = loop[0]["content"] + "\n\n", loop[1:]
    parts = ["<bos>"]
    for index, message in enumerate(loop):
        if (message["role"] == "user") != (index % 2 == 0):
            raise ValueError("Conversation roles must alternate user/assistant/user/assistant/...")
        role = "model" if message["role"] == "assistant" else message["role"]
        first = prefix if index == 0 else ""
        parts.append(f"<start_of_turn>{role}\n{first}{message['content'].strip()}<end_of_turn>\n")
    if add_generation_prompt:
        parts.append("<start_of_turn>model\n")
    return "".join(parts)


def prompt_tokens(messages: Sequence[dict[str, str]]) -> int:
    return len(tokenize(render_gemma(messages)))
