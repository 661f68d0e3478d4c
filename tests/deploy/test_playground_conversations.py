"""The playground's conversation list (issue 31) in a real browser (Debian's Chromium),
against Server B running as its own process over the scripted upstream
(tests/support/fake_llm.py): conversations made through the API are listed, open with
their messages and go on, are renamed and deleted; a cold one (moved out of Redis by a
sweep run here, on the server's Redis prefix and DATA_DIR) is listed with its badge and
opens; and a list that cannot be read leaves the chat working.

Each test is a browser of its own (a fresh anonymous cookie), so its list holds its own
conversations only.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import httpx
import pytest

from roleplay.sessions import conversation_archive
from tests.conftest import RUN_ID
from tests.deploy.test_playground_browser import _as_the_page, _env, _open, _send, _set
from tests.support.browser import chromium, wait_for
from tests.support.fake_llm import FakeLLM
from tests.support.server_process import server_b_process
from tests.support.upstream_server import serve

REPLY = "응, 듣고 있어."  # what the scripted upstream answers
PAGE_SIZE = 20  # playground.js's


class Server(NamedTuple):
    url: str
    settings: dict[str, str]
    """What this process must set to see the server's conversations: Redis prefix, DATA_DIR."""


@pytest.fixture(scope="module")
def server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # The runner's own sweep never runs here: the tests move conversations out themselves.
    # Each test's fresh cookie counts against ANON_COOKIES_PER_ADDRESS (all are 127.0.0.1).
    env = _env(redis_url, tmp_path_factory.mktemp("audio"), DATA_DIR=str(tmp_path_factory.mktemp("data")),
               CONVERSATION_BUCKET="", SESSION_HOT_TTL_S="86400", CONVERSATION_RETENTION_DAYS="90",
               ARCHIVE_EVERY_S="86400", ANON_COOKIES_PER_ADDRESS="1000")
    with serve(FakeLLM(reply=REPLY).app()) as upstream, \
            server_b_process({**env, "LLM_BASE_URL": upstream}) as served:
        yield Server(served.base_url, {name: env[name] for name in (
            "REDIS_KEY_PREFIX", "DATA_DIR", "SESSION_HOT_TTL_S", "CONVERSATION_RETENTION_DAYS")})


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


@pytest.fixture
def api(browser: Any, server: Server) -> Iterator[httpx.Client]:
    """A new anonymous user: the page with no cookie, and a client holding the cookie the
    server then gave it (what it makes through the API is the page's)."""
    browser.get(server.url + "/api/health")
    browser.delete_all_cookies()
    _open(browser, server.url + "/")
    with _as_the_page(browser, server.url) as client:
        yield client


def _sid(name: str) -> str:
    return f"pg-list-{RUN_ID}-{name}"


def _talk(api: httpx.Client, sid: str, *texts: str, character_id: str | None = None) -> None:
    for text in texts:
        body: dict[str, Any] = {"session_id": sid, "max_tokens": 32, "tts_enabled": False,
                                "messages": [{"role": "user", "content": text}]}
        if character_id:
            body["character_id"] = character_id
        response = api.post("/api/chat", json=body)
        assert response.status_code == 200, response.text


def _api_list(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = api.get("/api/chat/sessions", params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["data"]["items"]
    return items


def _listed(browser: Any) -> list[dict[str, Any]]:
    """The conversation panel, item by item."""
    listed: list[dict[str, Any]] = browser.execute_script("""
        return [...document.querySelectorAll('#conversation-list li')].map(li => ({
            id: li.dataset.id, state: li.dataset.state, current: li.classList.contains('current'),
            title: li.querySelector('.title').textContent,
            preview: li.querySelector('.preview').textContent,
            meta: li.querySelector('.meta').textContent,
            badge: li.querySelector('.badge')?.textContent ?? null,
        }));""")
    return listed


def _wait_listed(browser: Any, check: Callable[[list[dict[str, Any]]], bool],
                 timeout_s: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while not check(listed := _listed(browser)):
        assert time.monotonic() < deadline, listed
        time.sleep(0.1)
    return listed


def _ids(sids: list[str]) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda listed: [item["id"] for item in listed] == sids


def _item(sid: str) -> str:
    return f"#conversation-list li[data-id={json.dumps(sid)}]"


def _click_open(browser: Any, sid: str) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, f"{_item(sid)} .open").click()


def _click_action(browser: Any, sid: str, label: str) -> None:
    from selenium.webdriver.common.by import By

    buttons = browser.find_elements(By.CSS_SELECTOR, f"{_item(sid)} .actions button")
    next(button for button in buttons if button.text == label).click()


def _chat(browser: Any) -> dict[str, Any]:
    """The chat view: its session id and its messages."""
    chat: dict[str, Any] = browser.execute_script("""
        return {session: document.querySelector('#session-id').textContent,
                messages: [...document.querySelectorAll('.msg')].map(m => [
                    m.classList.contains('user') ? 'user' : 'assistant',
                    m.querySelector('.text').textContent])};""")
    return chat


def _wait_opened(browser: Any, sid: str, messages: int) -> dict[str, Any]:
    wait_for(browser, f"document.querySelector('#session-id').textContent === {json.dumps(sid)}"
                      f" && document.querySelectorAll('.msg').length === {messages}", 30)
    return _chat(browser)


def _panel_lines(browser: Any) -> dict[str, Any]:
    lines: dict[str, Any] = browser.execute_script("""
        const text = (id) => {
            const e = document.getElementById(id);
            return e.hidden ? null : e.textContent;
        };
        return {error: text('conversations-error'), empty: text('conversations-empty'),
                more: text('conversations-more'), chat_error: text('error')};""")
    return lines


def test_the_list_shows_the_conversations_made_through_the_api(browser: Any, api: httpx.Client,
                                                               server: Server) -> None:
    assert wait_for(browser, "!document.querySelector('#conversations-empty').hidden", 30)
    created = api.post("/api/characters", json={"name": "민지", "persona": "밝은 바리스타"})
    assert created.status_code in (200, 201), created.text
    character = created.json()["data"]["id"]
    _talk(api, _sid("rain"), "비 오는 날 이야기 해줘", "우산은 챙겼어?")
    _talk(api, _sid("cafe"), "카페에 가자", character_id=character)

    _open(browser, server.url + "/")
    listed = _wait_listed(browser, _ids([_sid("cafe"), _sid("rain")]))

    cafe, rain = listed
    assert (cafe["title"], rain["title"]) == ("카페에 가자", "비 오는 날 이야기 해줘")
    assert cafe["preview"] == rain["preview"] == REPLY
    assert cafe["meta"].startswith("민지 · "), cafe["meta"]
    assert "메시지 4개" in rain["meta"] and rain["meta"].endswith("방금"), rain["meta"]
    from_api = {item["session_id"]: item for item in _api_list(api)}
    assert f"메시지 {from_api[_sid('cafe')]['message_count']}개" in cafe["meta"]
    assert [item["state"] for item in listed] == ["hot", "hot"]
    assert [item["badge"] for item in listed] == [None, None]
    assert not any(item["current"] for item in listed)
    assert _panel_lines(browser) == {"error": None, "empty": None, "more": None, "chat_error": None}


def test_a_listed_conversation_opens_with_its_messages_and_goes_on(browser: Any, api: httpx.Client,
                                                                   server: Server) -> None:
    said = ["첫째 이야기", "둘째 이야기", "셋째 이야기"]
    _talk(api, _sid("long"), *said)
    _talk(api, _sid("other"), "다른 대화")
    _open(browser, server.url + "/")
    _wait_listed(browser, _ids([_sid("other"), _sid("long")]))

    _click_open(browser, _sid("long"))

    chat = _wait_opened(browser, _sid("long"), 2 * len(said))
    assert chat["messages"] == [message for text in said
                                for message in (["user", text], ["assistant", REPLY])]
    assert [item["current"] for item in _wait_listed(browser, lambda listed: listed[1]["current"])] \
        == [False, True]
    _set(browser, "tts-mode", "off")
    reply = _send(browser, "넷째 이야기")
    assert reply["done"] and reply["error"] is None and reply["text"] == REPLY
    assert _chat(browser)["session"] == _sid("long")
    view = api.get(f"/api/chat/sessions/{_sid('long')}").json()["data"]
    assert [m["content"] for m in view["messages"] if m["role"] == "user"] == [*said, "넷째 이야기"]
    # The turn moved it to the top, with its new length.
    top = _wait_listed(browser, lambda listed: listed[0]["id"] == _sid("long"))[0]
    assert top["current"] and "메시지 8개" in top["meta"], top


def test_rename_and_delete_from_the_list(browser: Any, api: httpx.Client, server: Server) -> None:
    _talk(api, _sid("keep"), "남길 대화")
    _talk(api, _sid("rename"), "이름을 바꿀 대화")
    _talk(api, _sid("drop"), "지울 대화")
    _open(browser, server.url + "/")
    _wait_listed(browser, _ids([_sid("drop"), _sid("rename"), _sid("keep")]))

    browser.execute_script("window.prompt = (_, current) =>"
                           " current === '이름을 바꿀 대화' ? '  카페   이야기 ' : null;")
    _click_action(browser, _sid("rename"), "이름 바꾸기")
    _wait_listed(browser, lambda listed: listed[1]["title"] == "카페 이야기")
    assert {i["session_id"]: i["title"] for i in _api_list(api)}[_sid("rename")] == "카페 이야기"
    _open(browser, server.url + "/")
    assert _wait_listed(browser, lambda listed: len(listed) == 3)[1]["title"] == "카페 이야기"

    # Declined: nothing changes. Confirmed: the open conversation is gone, and the chat is new.
    _click_open(browser, _sid("drop"))
    _wait_opened(browser, _sid("drop"), 2)
    browser.execute_script("window.confirm = () => false;")
    _click_action(browser, _sid("drop"), "삭제")
    time.sleep(0.5)
    assert len(_listed(browser)) == 3 and _chat(browser)["session"] == _sid("drop")
    browser.execute_script("window.confirm = (question) => question.includes('지울 대화');")
    _click_action(browser, _sid("drop"), "삭제")
    _wait_listed(browser, _ids([_sid("rename"), _sid("keep")]))
    assert _chat(browser) == {"session": "—", "messages": []}
    assert [i["session_id"] for i in _api_list(api)] == [_sid("rename"), _sid("keep")]
    assert api.get(f"/api/chat/sessions/{_sid('drop')}").status_code == 404
    # A new chat after it: its first turn is a conversation of its own, listed on top.
    _set(browser, "tts-mode", "off")
    assert _send(browser, "새로 시작")["error"] is None
    new = _chat(browser)["session"]
    assert new not in {_sid("drop"), _sid("rename"), _sid("keep")}
    _wait_listed(browser, _ids([new, _sid("rename"), _sid("keep")]))
    assert _panel_lines(browser)["chat_error"] is None


def test_more_pages_load_and_a_refresh_keeps_them(browser: Any, api: httpx.Client, server: Server) -> None:
    sids = [_sid(f"page{n:02}") for n in range(PAGE_SIZE + 3)]
    for n, sid in enumerate(sids):
        _talk(api, sid, f"{n}번째 대화")
    newest_first = sids[::-1]
    _open(browser, server.url + "/")
    _wait_listed(browser, _ids(newest_first[:PAGE_SIZE]))
    assert _panel_lines(browser)["more"] == "더 보기"

    browser.find_element("id", "conversations-more").click()

    _wait_listed(browser, _ids(newest_first))
    assert _panel_lines(browser)["more"] is None
    assert [i["session_id"] for i in _api_list(api)] == newest_first
    # A turn refreshes the list, as long as it was.
    _click_open(browser, sids[0])
    _wait_opened(browser, sids[0], 2)
    _set(browser, "tts-mode", "off")
    assert _send(browser, "다시 왔어")["error"] is None
    _wait_listed(browser, _ids([sids[0], *newest_first[:-1]]))


def _sweep_everything_idle(server: Server, settings_env: Callable[..., None]) -> dict[str, int]:
    """The archive, run in this process on the server's Redis prefix and DATA_DIR, as if a
    million seconds had passed: every conversation of the server moves out of Redis."""
    settings_env(**server.settings)
    return asyncio.run(conversation_archive.sweep_idle(time.time() + 10**6))


def test_a_cold_conversation_is_listed_with_its_badge_and_opens(
        browser: Any, api: httpx.Client, server: Server, settings_env: Callable[..., None]) -> None:
    _talk(api, _sid("cold-a"), "오래된 대화", "기억나?")
    _talk(api, _sid("cold-b"), "또 다른 오래된 대화")
    assert _sweep_everything_idle(server, settings_env)["archived"] >= 2
    assert [i["state"] for i in _api_list(api)] == ["cold", "cold"]

    _open(browser, server.url + "/")
    listed = _wait_listed(browser, _ids([_sid("cold-b"), _sid("cold-a")]))
    assert [(i["state"], i["badge"]) for i in listed] == [("cold", "보관됨")] * 2
    assert "메시지 4개" in listed[1]["meta"] and listed[1]["preview"] == REPLY

    _click_open(browser, _sid("cold-a"))

    chat = _wait_opened(browser, _sid("cold-a"), 4)
    assert [text for role, text in chat["messages"] if role == "user"] == ["오래된 대화", "기억나?"]
    # Opening it brought it back: hot, the other still cold.
    _wait_listed(browser, lambda listed: [(i["id"], i["badge"]) for i in listed]
                 == [(_sid("cold-b"), "보관됨"), (_sid("cold-a"), None)])
    _set(browser, "tts-mode", "off")
    reply = _send(browser, "이어서 이야기하자")
    assert reply["done"] and reply["error"] is None
    top = _wait_listed(browser, lambda listed: listed[0]["id"] == _sid("cold-a"))[0]
    assert top["state"] == "hot" and "메시지 6개" in top["meta"], top
    assert _panel_lines(browser)["chat_error"] is None


def test_a_list_that_cannot_be_read_is_one_line_and_the_chat_goes_on(
        browser: Any, api: httpx.Client, server: Server) -> None:
    _talk(api, _sid("there"), "목록에 있어야 할 대화")
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/api/chat/sessions?*"]})
    try:
        _open(browser, server.url + "/")
        line = wait_for(browser, "!document.querySelector('#conversations-error').hidden"
                                 " && document.querySelector('#conversations-error').textContent", 30)
        assert line.startswith("대화 목록을 불러오지 못했어요."), line
        assert _listed(browser) == []
        _set(browser, "tts-mode", "off")
        reply = _send(browser, "목록 없이도 대화해요")
        assert reply["done"] and reply["error"] is None and reply["text"] == REPLY
        assert _panel_lines(browser)["chat_error"] is None
        assert _panel_lines(browser)["error"]
    finally:
        browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
    browser.find_element("id", "new-session").click()
    listed = _wait_listed(browser, lambda listed: len(listed) == 2)
    assert _sid("there") in {i["id"] for i in listed}
    assert _panel_lines(browser)["error"] is None


def test_the_list_is_named_in_korean(browser: Any, api: httpx.Client, server: Server) -> None:
    _talk(api, _sid("label"), "안녕")
    _open(browser, server.url + "/")
    _wait_listed(browser, _ids([_sid("label")]))
    labels = browser.execute_script(
        "return [...document.querySelectorAll('#conversations h2, #conversations .actions button')]"
        ".map(e => e.textContent)")
    assert labels == ["대화 목록", "이름 바꾸기", "삭제"]
