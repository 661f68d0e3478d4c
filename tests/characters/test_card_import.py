"""POST /api/characters/import: cards as people bring them, built byte by byte, and the
clear 4xx (with nothing stored) for every way a file can be wrong."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import pytest
from fastapi.testclient import TestClient

from tests.support.card_files import (
    BOOK,
    V1,
    b64_json,
    charx,
    chunk,
    png_card,
    text_chunk,
    tiny_png_chunks,
    v2_card,
    v3_card,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _import(client: TestClient, body: bytes, content_type: str):  # type: ignore[no-untyped-def]
    return client.post("/api/characters/import", content=body,
                       headers={"content-type": content_type})


def _imported(client: TestClient, body: bytes, content_type: str) -> dict:
    response = _import(client, body, content_type)
    assert response.status_code == 201, response.text
    assert response.json()["success"] is True
    return response.json()["data"]


def _refused(client: TestClient, body: bytes, content_type: str, status: int, code: str) -> None:
    response = _import(client, body, content_type)
    assert response.status_code == status, response.text
    assert response.json()["success"] is False
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert client.get("/api/characters").json()["data"]["items"] == [], "nothing is stored"


def test_v1_json_maps_onto_our_fields(client: TestClient) -> None:
    character = _imported(client, json.dumps(V1).encode(), "application/json")
    assert character["name"] == "민지"
    assert character["persona"] == "{{char}}는 밝은 바리스타다.\n\n다정함"
    assert character["scenario"]["situation"] == "{{user}}가 카페에 들어온다"
    assert character["first_message"] == "어서 와, {{user}}!"
    assert character["sample_dialogue"].startswith("<START>")
    assert character["has_image"] is False


def test_v2_json_keeps_every_field_and_unknown_extensions(client: TestClient) -> None:
    card = v2_card()
    character = _imported(client, json.dumps(card).encode(), "application/json")
    data = card["data"]
    for field in ("alternate_greetings", "creator_notes", "creator", "character_version", "tags"):
        assert character[field] == data[field], field
    assert character["extensions"] == data["extensions"]
    assert character["character_book"]["entries"][0]["keys"] == ["사과"]
    assert character["character_book"]["extensions"] == {"st/x": 1}


def test_v3_json_keeps_the_v3_fields(client: TestClient) -> None:
    character = _imported(client, json.dumps(v3_card()).encode(), "application/json")
    assert character["nickname"] == "민짱"
    assert character["source"] == ["https://x"]
    assert character["creation_date"] == 1700000000
    assert character["assets"] == [{"type": "icon", "uri": "ccdefault:", "name": "main",
                                    "ext": "png"}]
    assert character["group_only_greetings"] == []


def test_png_chara_chunk_is_a_v2_card(client: TestClient) -> None:
    character = _imported(client, png_card(("chara", b64_json(v2_card()))), "image/png")
    assert character["name"] == "민지"
    assert character["has_image"] is True


def test_png_prefers_ccv3_and_matches_keywords_in_any_case(client: TestClient) -> None:
    body = png_card(("CHARA", b64_json(v2_card(name="옛이름"))),
                    ("CcV3", b64_json(v3_card(name="새이름"))))
    assert _imported(client, body, "image/png")["name"] == "새이름"


def test_chara_written_after_ccv3_still_loses_to_it(client: TestClient) -> None:
    body = png_card(("ccv3", b64_json(v3_card(name="v3"))), ("chara", b64_json(v2_card(name="v2"))))
    assert _imported(client, body, "image/png")["name"] == "v3"


def test_charx_zip_reads_its_card_json(client: TestClient) -> None:
    body = charx(v3_card(), extra={"assets/icon/images/main.png": png_card()})
    character = _imported(client, body, "application/zip")
    assert character["nickname"] == "민짱"
    assert character["assets"][0]["uri"] == "ccdefault:"


def test_multipart_field_file_works_like_a_raw_body(client: TestClient) -> None:
    response = client.post("/api/characters/import", files={
        "file": ("minji.png", png_card(("chara", b64_json(v2_card()))), "image/png")})
    assert response.status_code == 201, response.text
    assert response.json()["data"]["has_image"] is True
    response = client.post("/api/characters/import", files={
        "file": ("minji.json", json.dumps(V1).encode(), "application/json")})
    assert response.status_code == 201, response.text


def test_octet_stream_is_sniffed(client: TestClient) -> None:
    assert _imported(client, charx(V1), "application/octet-stream")["name"] == "민지"


def test_not_a_png(client: TestClient) -> None:
    _refused(client, b"GIF89a not a png at all", "image/png", 400, "invalid_png")


def test_png_without_a_card_chunk(client: TestClient) -> None:
    _refused(client, png_card(("Comment", "just a picture")), "image/png", 400, "no_card_in_png")


def test_truncated_png(client: TestClient) -> None:
    body = png_card(("chara", b64_json(v2_card())))
    _refused(client, body[:-30], "image/png", 400, "invalid_png")


def test_png_chunk_with_a_bad_crc(client: TestClient) -> None:
    good = text_chunk("chara", b64_json(v2_card()))
    bad = good[:-4] + bytes(4 * [0])
    body = PNG_SIGNATURE + b"".join(tiny_png_chunks()) + bad + chunk(b"IEND", b"")
    _refused(client, body, "image/png", 400, "invalid_png")


def test_invalid_base64_in_the_chunk(client: TestClient) -> None:
    _refused(client, png_card(("chara", "***not base64***")), "image/png", 400, "invalid_base64")


def test_base64_of_something_that_is_not_json(client: TestClient) -> None:
    value = base64.b64encode(b"\xff\xfe{ nope").decode()
    _refused(client, png_card(("chara", value)), "image/png", 400, "invalid_card_json")


def test_malformed_json(client: TestClient) -> None:
    _refused(client, b'{"name": "a", ', "application/json", 400, "invalid_card_json")
    _refused(client, b"[1, 2]", "application/json", 400, "invalid_card_json")


@pytest.mark.parametrize("card", [
    {"spec": "chara_card_v9", "data": {"name": "x"}},
    {"spec": "chara_card_v3", "spec_version": "4.0", "data": {"name": "x"}},
    {"hello": "world"},
    {"spec": "lorebook_v3", "data": {"entries": []}},
])
def test_unknown_spec(client: TestClient, card: dict) -> None:
    _refused(client, json.dumps(card).encode(), "application/json", 400, "unknown_card_spec")


def test_v2_card_without_its_data_object(client: TestClient) -> None:
    _refused(client, json.dumps({"spec": "chara_card_v2", "data": "x"}).encode(),
             "application/json", 400, "invalid_card_json")


def test_card_field_that_cannot_be_held_names_the_field(client: TestClient) -> None:
    response = _import(client, json.dumps({**V1, "name": ""}).encode(), "application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_card_field"
    assert "name" in response.json()["error"]["message"]


def test_text_over_the_token_budget_is_refused(client: TestClient) -> None:
    long = "안녕하세요 " * 4000  # 24,000 characters, 16,002 tokens
    _refused(client, json.dumps({**V1, "description": long}).encode(),
             "application/json", 400, "invalid_card_field")


def test_long_card_text_within_the_token_budget_is_accepted(client: TestClient) -> None:
    """Over the old 8,000-character cap, under the token budget."""
    long = "cafe " * 6000  # 30,000 characters, 6,000 tokens
    assert len(_imported(client, json.dumps({**V1, "description": long}).encode(),
                         "application/json")["persona"]) > 8000


def test_oversized_card_is_a_413(client: TestClient, settings_env) -> None:
    settings_env(CARD_MAX_BYTES="2048")
    body = png_card(("chara", b64_json(v2_card(creator_notes="x" * 4000))))
    _refused(client, body, "image/png", 413, "payload_too_large")


def test_card_max_bytes_applies_below_the_body_limit_too(client: TestClient, settings_env) -> None:
    settings_env(CARD_MAX_BYTES="1024", MAX_BODY_BYTES="65536")
    _refused(client, json.dumps(v2_card(creator_notes="x" * 3000)).encode(), "application/json",
             413, "payload_too_large")


def test_a_card_bigger_than_the_chat_body_limit_imports(client: TestClient) -> None:
    """MAX_BODY_BYTES (256 KB) guards the JSON API; a card may be up to CARD_MAX_BYTES."""
    body = png_card(("chara", b64_json(v2_card(creator_notes="x" * 60_000))),
                    ("Comment", "y" * 400_000))
    assert len(body) > 256 * 1024
    assert _imported(client, body, "image/png")["creator_notes"] == "x" * 60_000


def test_zip_bomb_in_charx_is_refused(client: TestClient, settings_env) -> None:
    settings_env(CARD_MAX_BYTES=str(1024 * 1024))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("card.json", b"{" + b" " * (50 * 1024 * 1024) + b"}")
    assert len(buffer.getvalue()) < 1024 * 1024
    _refused(client, buffer.getvalue(), "application/zip", 413, "card_too_large")


def test_zip_bomb_that_lies_about_its_size_is_refused(client: TestClient, settings_env) -> None:
    """The header says 10 bytes; the data inflates to megabytes."""
    settings_env(CARD_MAX_BYTES=str(512 * 1024))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("card.json", b" " * (4 * 1024 * 1024))
    data = bytearray(buffer.getvalue())
    honest = (4 * 1024 * 1024).to_bytes(4, "little")
    for at in [i for i in range(len(data) - 3) if data[i:i + 4] == honest]:
        data[at:at + 4] = (10).to_bytes(4, "little")
    response = _import(client, bytes(data), "application/zip")
    assert response.status_code in (400, 413), response.text
    assert response.json()["error"]["code"] in ("decompression_bomb", "invalid_charx")
    assert client.get("/api/characters").json()["data"]["items"] == []


def test_charx_without_card_json(client: TestClient) -> None:
    _refused(client, charx(V1, name="other.json"), "application/zip", 400, "no_card_in_charx")


def test_broken_zip(client: TestClient) -> None:
    _refused(client, b"PK\x03\x04 broken", "application/zip", 400, "invalid_charx")


def test_unsupported_content_type_is_a_415(client: TestClient) -> None:
    _refused(client, b"GIF89a", "image/gif", 415, "unsupported_card_type")


def test_empty_body(client: TestClient) -> None:
    _refused(client, b"", "application/json", 400, "empty_card")


def test_multipart_without_a_file_field(client: TestClient) -> None:
    response = client.post("/api/characters/import", files={
        "other": ("a.json", json.dumps(V1).encode(), "application/json")})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "missing_file"


def test_lorebook_v3_file_attaches_to_a_character(client: TestClient) -> None:
    character = _imported(client, json.dumps(V1).encode(), "application/json")
    assert character["character_book"] is None
    url = f"/api/characters/{character['id']}/lorebook"
    attached = client.put(url, content=json.dumps({"spec": "lorebook_v3", "data": BOOK}).encode(),
                          headers={"content-type": "application/json"})
    assert attached.status_code == 200, attached.text
    assert attached.json()["data"]["character_book"]["name"] == "카페 설정"
    fetched = client.get(f"/api/characters/{character['id']}").json()["data"]
    assert [e["id"] for e in fetched["character_book"]["entries"]] == [1, 2, 3]
    bad = client.put(url, content=b'{"spec": "lorebook_v9", "data": {}}',
                     headers={"content-type": "application/json"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "unknown_card_spec"
    not_a_book = client.put(url, content=b'{"entries": "x"}',
                            headers={"content-type": "application/json"})
    assert not_a_book.status_code == 400
    assert not_a_book.json()["error"]["code"] == "invalid_lorebook"
