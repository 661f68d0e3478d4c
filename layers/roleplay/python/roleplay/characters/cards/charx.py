"""CHARX: a zip with the V3 card as `card.json` at its root. Assets are not unpacked; the
card's own `assets` list says what they were.

A zip can claim anything in its headers, so `card.json` is read through a cap: more
than `limit` bytes out of it is a bomb (or just too large), and it is refused as such
before it can fill memory.
"""

from __future__ import annotations

from roleplay.characters.cards.errors import card_too_large, invalid_card

MAX_MEMBERS = 10_000
MAX_RATIO = 200
"""A card.json compresses maybe 5:1; hundreds to one is a decompression bomb."""


def is_zip(data: bytes) -> bool:
    return data.startswith(b"PK\x03\x04")


def card_json(data: bytes, limit: int) -> bytes:
    import io  # imported on use: most imports are PNG or JSON, and cold starts count
    import zipfile

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError):
        raise invalid_card("not a readable zip (CHARX) file", code="invalid_charx") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise invalid_card(f"the CHARX holds more than {MAX_MEMBERS} files", code="invalid_charx")
        info = next((m for m in members if m.filename == "card.json"), None)
        if info is None:
            raise invalid_card("the CHARX has no card.json at its root", code="no_card_in_charx")
        if info.file_size > limit:
            raise card_too_large(limit, "CHARX's card.json")
        if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and \
                info.file_size > 1024 * 1024:
            raise invalid_card("the CHARX's card.json expands like a decompression bomb",
                               code="decompression_bomb")
        try:
            with archive.open(info) as member:
                body = member.read(limit + 1)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError,
                OSError, RuntimeError) as error:
            raise invalid_card(f"card.json cannot be read from the CHARX: {error}",
                               code="invalid_charx") from None
        if len(body) > limit:
            raise invalid_card("the CHARX's card.json inflates past its declared size",
                               code="decompression_bomb")
        return body
