"""Characters through HTTP, against real Redis."""

from fastapi.testclient import TestClient

MINJI = {
    "name": "민지",
    "persona": "밝고 명랑한 10대 소녀",
    "scenario": {"opponent": "철수", "situation": "방과 후 교실", "background": "고등학교"},
    "sample_dialogue": "민지: 안녕!",
    "first_message": "안녕! 오늘 뭐 했어?",
    "voice_id": "default",
    "tags": ["school", "friend"],
}


def test_character_lifecycle_create_read_update_list_delete(client: TestClient) -> None:
    created = client.post("/api/characters", json=MINJI)
    assert created.status_code == 201
    character = created.json()["data"]
    assert created.json()["success"] is True
    assert character["owner"] == "anonymous"
    assert character["scenario"]["situation"] == "방과 후 교실"

    fetched = client.get(f"/api/characters/{character['id']}").json()["data"]
    assert fetched == character

    patched = client.patch(f"/api/characters/{character['id']}", json={"persona": "차분한 소녀"})
    assert patched.status_code == 200
    assert patched.json()["data"]["persona"] == "차분한 소녀"
    assert patched.json()["data"]["name"] == "민지"
    assert patched.json()["data"]["updated_at"] > character["updated_at"]

    listed = client.get("/api/characters").json()["data"]
    assert [c["id"] for c in listed["items"]] == [character["id"]]

    deleted = client.delete(f"/api/characters/{character['id']}")
    assert deleted.json() == {"success": True, "data": {"id": character["id"], "deleted": True}}
    assert client.get(f"/api/characters/{character['id']}").status_code == 404


def test_characters_list_pages_in_creation_order(client: TestClient) -> None:
    ids = [client.post("/api/characters", json={"name": f"c{n}"}).json()["data"]["id"]
           for n in range(5)]
    first = client.get("/api/characters", params={"limit": 2}).json()["data"]
    second = client.get("/api/characters",
                        params={"limit": 2, "cursor": first["next_cursor"]}).json()["data"]
    third = client.get("/api/characters",
                       params={"limit": 2, "cursor": second["next_cursor"]}).json()["data"]
    got = [c["id"] for page in (first, second, third) for c in page["items"]]
    assert got == ids
    assert third["next_cursor"] is None


def test_nulls_in_a_patch_leave_those_fields_and_the_character_readable(
    client: TestClient,
) -> None:
    character = client.post("/api/characters", json={
        "name": "민지", "persona": "밝은 바리스타", "tags": ["cafe"],
        "scenario": {"situation": "카페"}}).json()["data"]
    url = f"/api/characters/{character['id']}"
    patched = client.patch(url, json={"name": None, "persona": None, "tags": None,
                                      "voice_id": None, "scenario": None, "first_message": "안녕!"})
    assert patched.status_code == 200, patched.text
    read = client.get(url)
    assert read.status_code == 200, read.text
    for data in (patched.json()["data"], read.json()["data"]):
        assert (data["name"], data["persona"], data["tags"], data["voice_id"]) == (
            "민지", "밝은 바리스타", ["cafe"], "default")
        assert data["scenario"]["situation"] == "카페" and data["first_message"] == "안녕!"


def _assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body


def test_missing_name_is_a_422_in_the_envelope(client: TestClient) -> None:
    body = _assert_error(client.post("/api/characters", json={"persona": "x"}), 422,
                         "validation_error")
    assert "name" in body["error"]["message"]


def test_blank_name_is_refused(client: TestClient) -> None:
    _assert_error(client.post("/api/characters", json={"name": "   "}), 422, "validation_error")


def test_100kb_persona_is_refused(client: TestClient) -> None:
    body = _assert_error(client.post("/api/characters", json={"name": "a", "persona": "x" * 100_000}),
                         422, "validation_error")
    assert "persona" in body["error"]["message"]


def test_body_over_the_size_limit_is_a_413(client: TestClient) -> None:
    _assert_error(client.post("/api/characters", json={"name": "a", "persona": "x" * 400_000}),
                  413, "payload_too_large")


def test_unknown_fields_are_refused(client: TestClient) -> None:
    _assert_error(client.post("/api/characters", json={"name": "a", "owner": "mallory"}), 422,
                  "validation_error")
    _assert_error(client.post("/api/characters", json={"name": "a", "scenario": {"mood": "x"}}),
                  422, "validation_error")


def test_malformed_json_is_a_422(client: TestClient) -> None:
    response = client.post("/api/characters", content=b"{not json",
                           headers={"content-type": "application/json"})
    _assert_error(response, 422, "validation_error")


def test_bad_ids_are_4xx_never_500(client: TestClient) -> None:
    _assert_error(client.get("/api/characters/" + "x" * 65), 422, "validation_error")
    _assert_error(client.get("/api/characters/bad%20id"), 422, "validation_error")
    _assert_error(client.get("/api/characters/..%2F..%2Fetc"), 404, "not_found")
    _assert_error(client.get("/api/characters/unknown"), 404, "character_not_found")
    _assert_error(client.patch("/api/characters/unknown", json={"name": "b"}), 404,
                  "character_not_found")
    _assert_error(client.delete("/api/characters/unknown"), 404, "character_not_found")


def test_bad_paging_parameters_are_4xx(client: TestClient) -> None:
    _assert_error(client.get("/api/characters", params={"limit": 0}), 422, "validation_error")
    _assert_error(client.get("/api/characters", params={"limit": "ten"}), 422, "validation_error")
    _assert_error(client.get("/api/characters", params={"cursor": "garbage"}), 400,
                  "invalid_cursor")


def test_unknown_route_and_wrong_method_use_the_envelope(client: TestClient) -> None:
    _assert_error(client.get("/api/nothing-here"), 404, "not_found")
    _assert_error(client.put("/api/characters"), 405, "method_not_allowed")


def test_wrong_method_lists_every_method_of_the_path_in_allow(client: TestClient) -> None:
    assert client.put("/api/characters").headers["allow"] == "GET, HEAD, POST"
    assert client.post("/api/characters/abc").headers["allow"] == "DELETE, GET, HEAD, PATCH"
    assert client.put("/api/chat/sessions/abc").headers["allow"] == "DELETE, GET, HEAD, PATCH"


def test_list_and_get_answer_the_card_fields(client: TestClient) -> None:
    created = client.post("/api/characters", json={
        **MINJI, "alternate_greetings": ["또 왔네!"], "system_prompt": "{{original}}",
        "post_history_instructions": "짧게", "creator_notes": "메모", "creator": "나",
        "character_version": "2", "nickname": "민짱", "group_only_greetings": ["다들 안녕"],
        "extensions": {"x/y": [1, 2.5]},
        "character_book": {"entries": [{"keys": ["사과"], "content": "사과 파이"}]}})
    assert created.status_code == 201, created.text
    character = created.json()["data"]
    listed = client.get("/api/characters").json()["data"]["items"]
    fetched = client.get(f"/api/characters/{character['id']}").json()["data"]
    for view in (listed[0], fetched):
        assert view["alternate_greetings"] == ["또 왔네!"]
        assert view["nickname"] == "민짱"
        assert view["extensions"] == {"x/y": [1, 2.5]}
        assert view["character_book"]["entries"][0]["content"] == "사과 파이"
        assert view["has_image"] is False
    patched = client.patch(f"/api/characters/{character['id']}",
                           json={"alternate_greetings": [], "nickname": "민"}).json()["data"]
    assert patched["alternate_greetings"] == []
    assert patched["nickname"] == "민"


def test_imported_cards_live_in_dynamodb_when_configured(characters_table: str,
                                                        client: TestClient) -> None:
    import json

    from tests.support.card_files import b64_json, png_card, v3_card

    response = client.post("/api/characters/import", content=png_card(("ccv3", b64_json(v3_card()))),
                           headers={"content-type": "image/png"})
    assert response.status_code == 201, response.text
    character = response.json()["data"]
    assert client.get(f"/api/characters/{character['id']}").json()["data"] == character
    assert client.get("/api/characters").json()["data"]["items"] == [character]
    exported = client.get(f"/api/characters/{character['id']}/export").json()
    assert exported["data"]["character_book"]["extensions"] == {"st/x": 1}
    assert json.loads(json.dumps(exported))["data"]["nickname"] == "민짱"
