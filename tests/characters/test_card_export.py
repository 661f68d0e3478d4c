"""GET /api/characters/{id}/export: a V3 card as JSON, or a PNG with `chara` (V2) and
`ccv3` (V3) before IEND, that imports back to the same character."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.support.card_files import V1, b64_json, png_card, png_chunks, png_texts, tiny_png_chunks, v3_card

SERVER_FIELDS = {"id", "created_at", "updated_at", "owner"}


def _import(client: TestClient, body: bytes, content_type: str) -> dict:
    response = client.post("/api/characters/import", content=body,
                           headers={"content-type": content_type})
    assert response.status_code == 201, response.text
    return response.json()["data"]


def _same(a: dict, b: dict, *, ignore: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    skip = SERVER_FIELDS | ignore
    assert {k: v for k, v in a.items() if k not in skip} == \
        {k: v for k, v in b.items() if k not in skip}


def test_json_export_is_a_v3_card_with_our_fields_namespaced(client: TestClient) -> None:
    created = client.post("/api/characters", json={
        "name": "민지", "persona": "밝은 바리스타", "voice_id": "minji",
        "scenario": {"opponent": "철수", "situation": "카페", "background": "서울"},
        "extensions": {"other/tool": {"a": 1}}}).json()["data"]
    response = client.get(f"/api/characters/{created['id']}/export", params={"format": "json"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert "attachment" in response.headers["content-disposition"]
    card = response.json()
    assert card["spec"] == "chara_card_v3"
    assert card["spec_version"] == "3.0"
    assert card["data"]["description"] == "밝은 바리스타"
    assert card["data"]["scenario"] == "카페"
    assert card["data"]["extensions"] == {
        "other/tool": {"a": 1},
        "serverb": {"voice_id": "minji", "opponent": "철수", "background": "서울"}}
    again = _import(client, response.content, "application/json")
    _same(created, again)
    assert again["extensions"] == {"other/tool": {"a": 1}}


def test_png_export_without_an_image_is_a_placeholder_with_both_chunks(client: TestClient) -> None:
    created = _import(client, json.dumps(V1).encode(), "application/json")
    response = client.get(f"/api/characters/{created['id']}/export", params={"format": "png"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    chunks = png_chunks(response.content)
    assert chunks[0][0] == b"IHDR"
    assert [kind for kind, _ in chunks][-3:] == [b"tEXt", b"tEXt", b"IEND"]
    texts = png_texts(response.content)
    assert texts["chara"]["spec"] == "chara_card_v2"
    assert texts["chara"]["name"] == "민지", "V1 readers find the fields at the top"
    assert texts["ccv3"]["spec"] == "chara_card_v3"
    _same(created, _import(client, response.content, "image/png"), ignore={"has_image"})


def test_png_export_reuses_the_imported_image_and_replaces_old_card_chunks(
        client: TestClient) -> None:
    original = png_card(("Chara", b64_json({"spec": "chara_card_v2", "data": {**V1, "name": "옛"}})),
                        ("ccv3", b64_json(v3_card())), ("Comment", "keep me"), rgb=(1, 2, 3))
    created = _import(client, original, "image/png")
    exported = client.get(f"/api/characters/{created['id']}/export", params={"format": "png"})
    chunks = png_chunks(exported.content)
    image = [c for c in chunks if c[0] in (b"IHDR", b"IDAT")]
    assert image == [(c[4:8], c[8:-4]) for c in tiny_png_chunks((1, 2, 3))], "the same picture"
    keywords = [body.partition(b"\x00")[0] for kind, body in chunks if kind == b"tEXt"]
    assert keywords == [b"Comment", b"chara", b"ccv3"], "old card chunks are gone"
    assert chunks[-1][0] == b"IEND"
    again = _import(client, exported.content, "image/png")
    _same(created, again)


def test_v3_card_round_trips_through_png_and_json(client: TestClient) -> None:
    first = _import(client, json.dumps(v3_card()).encode(), "application/json")
    png = client.get(f"/api/characters/{first['id']}/export", params={"format": "png"}).content
    second = _import(client, png, "image/png")
    _same(first, second, ignore={"has_image"})
    js = client.get(f"/api/characters/{second['id']}/export").content
    _same(first, _import(client, js, "application/json"), ignore={"has_image"})


def test_export_of_an_unknown_character_or_format(client: TestClient) -> None:
    assert client.get("/api/characters/nope/export").json()["error"]["code"] == \
        "character_not_found"
    created = _import(client, json.dumps(V1).encode(), "application/json")
    bad = client.get(f"/api/characters/{created['id']}/export", params={"format": "gif"})
    assert bad.status_code == 422
    assert bad.json()["success"] is False


def test_deleting_a_character_removes_its_image(client: TestClient, sync_redis, key_prefix) -> None:
    created = _import(client, png_card(("chara", b64_json({"spec": "chara_card_v2",
                                                           "data": V1}))), "image/png")
    key = f"{key_prefix}character:{created['id']}:image"
    assert sync_redis.exists(key)
    client.delete(f"/api/characters/{created['id']}")
    assert not sync_redis.exists(key)


def test_an_independent_png_reader_decodes_the_export(client: TestClient) -> None:
    """Pillow (not our chunk code) reads the picture and both card texts."""
    image_module = __import__("pytest").importorskip("PIL.Image")
    import base64
    import io

    created = _import(client, json.dumps(v3_card()).encode(), "application/json")
    exported = client.get(f"/api/characters/{created['id']}/export", params={"format": "png"})
    with image_module.open(io.BytesIO(exported.content)) as picture:
        picture.load()
        assert picture.size == (256, 256)
        texts = picture.text
    assert json.loads(base64.b64decode(texts["ccv3"]))["data"]["nickname"] == "민짱"
    assert json.loads(base64.b64decode(texts["chara"]))["spec"] == "chara_card_v2"
