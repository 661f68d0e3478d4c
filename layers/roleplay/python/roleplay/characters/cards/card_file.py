"""One uploaded card file, whatever it is: PNG, CHARX zip or JSON, read to our character.

The bytes decide the format (a PNG signature, a zip header, else JSON); a content type
that names one format while the bytes are another is refused, so a client learns its
mistake instead of getting a guess.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from roleplay.characters.cards import card_json, charx, png
from roleplay.characters.cards.errors import UnsupportedCardMedia, card_too_large, invalid_card
from roleplay.characters.cards.multipart import form_file
from roleplay.characters.model import CharacterCreate
from roleplay.core.settings import get_settings

PNG_TYPES = {"image/png", "image/apng"}
ZIP_TYPES = {"application/zip", "application/x-zip-compressed", "application/charx",
             "application/x-charx"}
JSON_TYPES = {"application/json", "text/json", "text/plain"}
SNIFFED_TYPES = {"", "application/octet-stream"}


@dataclass(frozen=True)
class CardFile:
    fields: CharacterCreate
    image: bytes | None = None
    """The PNG the card came in, kept so the export embeds the card in the same picture."""


def uploaded_file(body: bytes, content_type: str | None) -> tuple[bytes, str]:
    """The file of a request: the body itself, or a multipart body's field `file` (read
    within `MULTIPART_MAX_PARTS`, see `cards.multipart`)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "multipart/form-data":
        return body, media
    return form_file(body, content_type or "", "file", get_settings().multipart_max_parts)


def _json_document(data: bytes, max_depth: int, what: str = "card") -> Any:
    return card_json.load_json(data.removeprefix(b"\xef\xbb\xbf"), max_depth, what)


def _format(data: bytes, media: str) -> str:
    if png.is_png(data):
        found = "png"
    elif charx.is_zip(data):
        found = "charx"
    else:
        found = "json"
    declared = ("png" if media in PNG_TYPES else "charx" if media in ZIP_TYPES
                else "json" if media in JSON_TYPES else None)
    if declared is None and media not in SNIFFED_TYPES:
        raise UnsupportedCardMedia(f"cannot import {media!r}: send image/png, application/json "
                                   "or application/zip (CHARX)")
    if declared == "png" and found != "png":
        raise invalid_card("the body is not a PNG file", code="invalid_png")
    if declared == "charx" and found != "charx":
        raise invalid_card("the body is not a zip (CHARX) file", code="invalid_charx")
    return found


def _base64_json(text: str, max_depth: int) -> Any:
    compact = "".join(text.split())
    try:
        decoded = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_card("the PNG's card chunk is not valid base64",
                           code="invalid_base64") from None
    return card_json.load_json(decoded, max_depth)


def read_card(body: bytes, content_type: str | None, limit: int, max_depth: int) -> CardFile:
    """The card in an upload, or a 4xx naming what is wrong with it. CPU-bound (an 8 MB
    card is parsed, walked and validated): callers run it in a worker thread (`card_work`)."""
    if len(body) > limit:
        raise card_too_large(limit)
    data, media = uploaded_file(body, content_type)
    if not data:
        raise invalid_card("the card file is empty", code="empty_card")
    kind = _format(data, media)
    if kind == "png":
        document = _base64_json(png.card_text(data), max_depth)
        return CardFile(card_json.character_fields(card_json.card_data(document)), image=data)
    raw = charx.card_json(data, limit) if kind == "charx" else data
    return CardFile(card_json.character_fields(card_json.card_data(_json_document(raw, max_depth))))


def read_lorebook(body: bytes, content_type: str | None, limit: int, max_depth: int) -> Any:
    """A standalone lorebook file (`lorebook_v3` JSON), as its parsed document; CPU-bound
    as `read_card` is."""
    if len(body) > limit:
        raise card_too_large(limit, "lorebook file")
    data, media = uploaded_file(body, content_type)
    if media not in JSON_TYPES | SNIFFED_TYPES:
        raise UnsupportedCardMedia(f"cannot import a lorebook from {media!r}: send application/json")
    return card_json.lorebook(_json_document(data, max_depth, "lorebook"))
