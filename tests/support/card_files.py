"""Character card files built byte by byte, independently of roleplay.cards: PNG chunks
with struct and zlib as the PNG spec lays them out, base64 JSON in tEXt, CHARX zips."""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
import zlib
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def text_chunk(keyword: str, value: str) -> bytes:
    return chunk(b"tEXt", keyword.encode("latin-1") + b"\x00" + value.encode("latin-1"))


def tiny_png_chunks(rgb: tuple[int, int, int] = (255, 0, 0)) -> list[bytes]:
    """A 2x1 RGB image: IHDR, IDAT (no IEND)."""
    header = struct.pack(">IIBBBBB", 2, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" + bytes(rgb) * 2)
    return [chunk(b"IHDR", header), chunk(b"IDAT", pixels)]


def b64_json(document: Any) -> str:
    return base64.b64encode(json.dumps(document, ensure_ascii=False).encode()).decode()


def png_card(*texts: tuple[str, str], rgb: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    """A PNG with `texts` as (keyword, value) tEXt chunks between IDAT and IEND."""
    return PNG_SIGNATURE + b"".join(tiny_png_chunks(rgb)) + b"".join(
        text_chunk(keyword, value) for keyword, value in texts) + chunk(b"IEND", b"")


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk, read as the spec says."""
    assert data[:8] == PNG_SIGNATURE
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind = data[offset + 4:offset + 8]
        body = data[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc
        chunks.append((kind, body))
        offset += 12 + length
    return chunks


def png_texts(data: bytes) -> dict[str, Any]:
    """The JSON of each tEXt card chunk, by keyword."""
    found = {}
    for kind, body in png_chunks(data):
        if kind == b"tEXt":
            keyword, _, value = body.partition(b"\x00")
            found[keyword.decode()] = json.loads(base64.b64decode(value))
    return found


def charx(card: Any, *, extra: dict[str, bytes] | None = None, name: str = "card.json") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, json.dumps(card, ensure_ascii=False))
        for path, data in (extra or {}).items():
            archive.writestr(path, data)
    return buffer.getvalue()


V1 = {"name": "민지", "description": "{{char}}는 밝은 바리스타다.", "personality": "다정함",
      "scenario": "{{user}}가 카페에 들어온다", "first_mes": "어서 와, {{user}}!",
      "mes_example": "<START>\n{{user}}: 안녕\n{{char}}: 안녕!"}

BOOK = {
    "name": "카페 설정", "scan_depth": 2, "token_budget": 500, "extensions": {"st/x": 1},
    "entries": [
        {"keys": ["사과"], "content": "{{char}}의 카페는 사과 파이가 유명하다. {{user}}도 안다.",
         "extensions": {}, "enabled": True, "insertion_order": 10, "id": 1, "name": "apple",
         "use_regex": False},
        {"keys": [], "content": "카페 이름은 달빛이다.", "extensions": {}, "enabled": True,
         "insertion_order": 0, "constant": True, "id": 2, "use_regex": False},
        {"keys": ["비밀"], "content": "숨겨진 방이 있다.", "extensions": {}, "enabled": False,
         "insertion_order": 5, "id": 3, "use_regex": False},
    ],
}


def v2_card(**data: Any) -> dict[str, Any]:
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": {
        **V1, "creator_notes": "notes", "system_prompt": "", "post_history_instructions": "",
        "alternate_greetings": ["{{char}}: 또 왔네, <USER>?"], "tags": ["cafe"],
        "creator": "tester", "character_version": "1.2",
        "extensions": {"talkativeness": "0.5", "depth_prompt": {"depth": 4, "weight": 0.25},
                       "other/tool": {"keep": [1, 2.5, None]}},
        "character_book": BOOK, **data}}


def v3_card(**data: Any) -> dict[str, Any]:
    card = v2_card(**data)
    card["spec"], card["spec_version"] = "chara_card_v3", "3.0"
    card["data"] = {"nickname": "민짱", "group_only_greetings": [], "source": ["https://x"],
                    "creation_date": 1700000000, "modification_date": 1700000500,
                    "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
                    **card["data"]}
    return card
