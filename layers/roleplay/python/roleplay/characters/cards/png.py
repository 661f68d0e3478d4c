"""PNG chunks, as far as cards need them: read the `tEXt` card, write it back, and make a
placeholder image when a character has none.

A card is a `tEXt` chunk whose value is base64 of UTF-8 JSON, keyword `chara` (V2) or
`ccv3` (V3). Writing follows SillyTavern's `src/character-card-parser.js`: drop every
old `chara`/`ccv3` chunk, then put `chara` and `ccv3` just before `IEND`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from roleplay.characters.cards.errors import invalid_card

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYWORDS = ("ccv3", "chara")
"""In the order a reader prefers them."""


@dataclass(frozen=True)
class Chunk:
    type: bytes
    data: bytes

    def encode(self) -> bytes:
        crc = zlib.crc32(self.type + self.data) & 0xFFFFFFFF
        return struct.pack(">I", len(self.data)) + self.type + self.data + struct.pack(">I", crc)

    def text(self) -> tuple[str, bytes] | None:
        """A `tEXt` chunk's keyword and value."""
        if self.type != b"tEXt" or b"\x00" not in self.data:
            return None
        keyword, _, value = self.data.partition(b"\x00")
        return keyword.decode("latin-1"), value


def is_png(data: bytes) -> bool:
    return data.startswith(SIGNATURE)


def read_chunks(data: bytes) -> Iterator[Chunk]:
    """Every chunk up to `IEND`; a truncated file or a bad CRC is a 400."""
    if not is_png(data):
        raise invalid_card("not a PNG file", code="invalid_png")
    offset = len(SIGNATURE)
    while True:
        if offset + 8 > len(data):
            raise invalid_card("the PNG ends before its IEND chunk", code="invalid_png")
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        end = offset + 8 + length + 4
        if end > len(data):
            raise invalid_card("a PNG chunk runs past the end of the file", code="invalid_png")
        body = data[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise invalid_card(f"the PNG's {kind!r} chunk fails its CRC", code="invalid_png")
        yield Chunk(kind, body)
        if kind == b"IEND":
            return
        offset = end


def card_text(data: bytes) -> str:
    """The card's base64 payload: `ccv3` when present, else `chara`, keywords in any case."""
    found: dict[str, bytes] = {}
    for chunk in read_chunks(data):
        text = chunk.text()
        if text and text[0].lower() in CARD_KEYWORDS:
            found.setdefault(text[0].lower(), text[1])
    for keyword in CARD_KEYWORDS:
        if keyword in found:
            return found[keyword].decode("latin-1")
    raise invalid_card("the PNG holds no character card (no tEXt chunk named chara or ccv3)",
                       code="no_card_in_png")


def with_card(image: bytes, chara: str, ccv3: str) -> bytes:
    """`image` with its old card chunks removed and `chara`, `ccv3` written before IEND."""
    kept: list[Chunk] = []
    for chunk in read_chunks(image):
        text = chunk.text()
        if chunk.type == b"IEND" or (text and text[0].lower() in CARD_KEYWORDS):
            continue
        kept.append(chunk)
    kept += [Chunk(b"tEXt", b"chara\x00" + chara.encode("ascii")),
             Chunk(b"tEXt", b"ccv3\x00" + ccv3.encode("ascii")),
             Chunk(b"IEND", b"")]
    return SIGNATURE + b"".join(chunk.encode() for chunk in kept)


def placeholder_png(size: int = 256, rgb: tuple[int, int, int] = (0x5B, 0x6C, 0x8F)) -> bytes:
    """A plain square, for exporting a character that came without an image."""
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    row = b"\x00" + bytes(rgb) * size
    pixels = zlib.compress(row * size, 9)
    return SIGNATURE + b"".join(chunk.encode() for chunk in (
        Chunk(b"IHDR", header), Chunk(b"IDAT", pixels), Chunk(b"IEND", b"")))
