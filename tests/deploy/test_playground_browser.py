"""The playground page and /docs in a real browser (Debian's Chromium), against Server B
running as its own process with the real llama.cpp (SmolLM2) and eSpeak NG.

`PLAYGROUND_SCREENSHOT=docs/playground.png` saves the page after a Korean turn there.
The memory panel's test talks to the scripted upstream (tests/support/fake_llm.py) instead,
so that a long conversation folds into episodes in seconds and the same ones are recalled.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.staticfiles import StaticFiles

from local_runner.playground import PAGE_DIR
from tests.conftest import RUN_ID
from tests.memory.test_memory_recall import FACT, QUESTION, _filler
from tests.support.browser import chromium, wait_for
from tests.support.fake_llm import FakeLLM
from tests.support.server_process import server_b_process
from tests.support.upstream_server import closed_port_url, serve, silent_socket

pytestmark = pytest.mark.llm
# Whatever the developer's shell holds, the servers under test run with these unset.
UNSET = {name: "" for name in ("TTS_BASE_URL", "TTS_SERVICE", "JWT_SECRET", "JWT_SECRET_ARN",
                                "CHARACTERS_TABLE", "VOICES_FILE", "AUDIO_BUCKET",
                                "SUMMARIZER_FUNCTION", "SPEECH_FUNCTION")}


def _env(redis_url: str, audio_dir: Path, **more: str) -> dict[str, str]:
    return {**UNSET, "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": f"test-{RUN_ID}-browser-{audio_dir.name}:",
            "AUDIO_DIR": str(audio_dir), "LLM_SERVICE": "vllm", **more}


@pytest.fixture(scope="module")
def page_origin() -> Iterator[str]:
    """The playground's files served by a second origin, as a frontend dev server would."""
    with serve(StaticFiles(directory=PAGE_DIR, html=True)) as url:
        yield url


@pytest.fixture(scope="module")
def server(llm_server: Any, redis_url: str, page_origin: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = _env(redis_url, tmp_path_factory.mktemp("audio"), LLM_BASE_URL=llm_server.base_url,
               DEFAULT_MODEL=llm_server.model_alias, CORS_ALLOW_ORIGINS=page_origin)
    with server_b_process(env) as served:
        yield served.base_url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def _open(browser: Any, url: str) -> None:
    browser.get(url)
    wait_for(browser, "document.body.dataset.ready === 'true'", 30)


def _send(browser: Any, text: str) -> dict[str, Any]:
    """Types and sends a message; returns the finished assistant message's figures."""
    from selenium.webdriver.common.by import By

    done_before = browser.execute_script("return document.querySelectorAll('.msg[data-done]').length")
    box = browser.find_element(By.ID, "input")
    box.send_keys(text)
    browser.find_element(By.ID, "send").click()
    wait_for(browser, f"document.querySelectorAll('.msg[data-done]').length > {done_before}"
                      " || !document.querySelector('#error').hidden")
    return browser.execute_script("""
        const item = [...document.querySelectorAll('.msg.assistant')].pop();
        const error = document.querySelector('#error');
        return {text: item?.querySelector('.text').textContent, deltas: Number(item?.dataset.deltas),
                done: item?.dataset.done === 'true', error: error.hidden ? null : error.textContent};""")


def _set(browser: Any, element_id: str, value: str) -> None:
    browser.execute_script("const e = document.getElementById(arguments[0]); e.value = arguments[1];"
                           "e.dispatchEvent(new Event('change'));", element_id, value)


def test_page_loads_with_korean_labels(browser: Any, server: str) -> None:
    _open(browser, server + "/")
    assert "플레이그라운드" in browser.title
    labels = browser.execute_script(
        "return [...document.querySelectorAll('h2, button')].map(e => e.textContent)")
    assert {"캐릭터", "음성", "세션", "보내기", "새 대화"} <= set(labels)


def test_korean_turn_streams_text_and_plays_wav_per_sentence(browser: Any, server: str,
                                                             tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    _open(browser, server + "/")
    browser.find_element(By.CSS_SELECTOR, "#new-character summary").click()
    form = browser.find_element(By.ID, "character-form")
    for name, value in {"name": "민지", "persona": "밝고 명랑한 바리스타",
                        "situation": "비 오는 오후의 카페",
                        "first_message": "어서 오세요! 오늘은 뭘 드릴까요?"}.items():
        form.find_element(By.NAME, name).send_keys(value)
    form.find_element(By.CSS_SELECTOR, "button").click()
    # A new character opens a new conversation with its stored first message, spoken.
    wait_for(browser, "document.querySelector('.msg.assistant[data-done]')")
    assert browser.execute_script(
        "return document.querySelector('#character').selectedOptions[0].text") == "민지"
    _set(browser, "max-tokens", "40")
    _set(browser, "temperature", "0")

    reply = _send(browser, "안녕! 오늘 뭐 했어?")

    assert reply["error"] is None and reply["done"]
    assert reply["deltas"] > 1, "the reply arrived in one piece, not streamed"
    assert reply["text"].strip()
    audio = wait_for(browser, """(() => {
        const all = [...document.querySelectorAll('.msg.assistant')].pop().querySelectorAll('audio');
        const ready = [...all].filter(a => a.readyState >= 1 && a.duration > 0 && !a.error);
        return all.length && ready.length === all.length
            && all.length === [...all].map(a => Number(a.dataset.index)).sort((x, y) => x - y)
               .filter((n, i) => n === i).length
            && {count: all.length, src: all[0].currentSrc, wav: all[0].canPlayType('audio/wav')};
    })()""", 60)
    assert audio["wav"] in {"maybe", "probably"}
    wav = httpx.get(audio["src"])
    assert wav.headers["content-type"].startswith("audio/") and wav.content[8:12] == b"WAVE"
    session = browser.execute_script(
        "return ['session-id', 'model', 'usage', 'tokens', 'watermark']"
        ".map(id => document.getElementById(id).textContent)")
    assert all(text != "—" for text in session), session
    assert "입력" in session[2] and "전체" in session[3]

    shot = Path(os.environ.get("PLAYGROUND_SCREENSHOT") or tmp_path / "playground.png")
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_a_card_imported_in_the_page_opens_with_its_greetings_as_swipes(browser: Any, server: str,
                                                                        tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    from tests.support.card_files import b64_json, png_card, v3_card

    card = tmp_path / "minji.png"
    card.write_bytes(png_card(("ccv3", b64_json(v3_card(name="카드 민지")))))
    _open(browser, server + "/")
    _set(browser, "tts-mode", "off")
    browser.find_element(By.ID, "card-file").send_keys(str(card))
    wait_for(browser, "document.querySelector('.msg.assistant[data-done]')", 30)
    assert browser.execute_script(
        "return document.querySelector('#character').selectedOptions[0].text") == "카드 민지"
    swipes = browser.execute_script("return [...document.querySelectorAll('.swipes button')]"
                                    ".map(b => [b.textContent, b.disabled])")
    assert swipes == [["인사 1", True], ["인사 2", False]]
    browser.find_element(By.CSS_SELECTOR, ".swipes button:not([disabled])").click()
    second = wait_for(browser, "document.querySelector('.swipes button[disabled]')?.textContent", 30)
    assert second == "인사 2"
    greeting = browser.execute_script("return document.querySelector('.msg.assistant .text').textContent")
    assert "민짱" in greeting
    assert browser.execute_script("return document.querySelector('#export-png').href").endswith("format=png")


def _click(browser: Any, item_js: str, label: str) -> None:
    browser.execute_script(f"[...({item_js}).querySelectorAll('.controls button, .swipes button')]"
                           ".find(b => b.textContent === arguments[0]).click()", label)


def test_the_page_regenerates_selects_edits_continues_and_deletes(browser: Any, server: str) -> None:
    _open(browser, server + "/")
    _set(browser, "character", "")
    browser.execute_script("document.querySelector('#new-session').click()")
    _set(browser, "tts-mode", "off")
    _set(browser, "max-tokens", "12")
    first = _send(browser, "Hi! Tell me about the weather.")
    assert first["done"] and first["error"] is None
    last = "[...document.querySelectorAll('.msg.assistant')].pop()"
    original = browser.execute_script(f"return {last}.querySelector('.text').textContent")

    _click(browser, last, "다시 생성")
    versions = wait_for(browser, f"{last}.querySelector('.versions') && "
                                 f"[...{last}.querySelectorAll('.versions button')].map(b => b.textContent)")
    assert versions == ["1/2", "2/2"]
    _click(browser, last, "1/2")
    wait_for(browser, f"{last}.querySelector('.text').textContent === {json.dumps(original)}", 30)

    browser.execute_script("window.prompt = () => 'Edited by hand.'; window.confirm = () => true;")
    _click(browser, last, "수정")
    wait_for(browser, f"{last}.querySelector('.text').textContent === 'Edited by hand.'")
    _click(browser, last, "이어서")
    wait_for(browser, f"{last}.dataset.deltas > 0 && !{last}.classList.contains('streaming')"
                      f" && {last}.querySelector('.text').textContent.startsWith('Edited by hand.')"
                      f" && {last}.querySelector('.text').textContent.length > 15")
    _click(browser, last, "삭제")
    wait_for(browser, "document.querySelectorAll('.msg.assistant').length === 0")
    assert browser.execute_script("return document.querySelector('#error').hidden")


def test_page_from_a_listed_origin_calls_the_api_with_cors(browser: Any, server: str,
                                                           page_origin: str) -> None:
    _open(browser, f"{page_origin}/index.html?api={server}")
    _set(browser, "tts-mode", "off")
    _set(browser, "max-tokens", "12")
    reply = _send(browser, "Hi! How are you?")
    assert reply["error"] is None and reply["done"] and reply["text"].strip()


def test_page_from_an_unlisted_origin_is_refused_by_the_browser(browser: Any, server: str) -> None:
    with serve(StaticFiles(directory=PAGE_DIR, html=True)) as other_origin:
        _open(browser, f"{other_origin}/index.html?api={server}")
        message = wait_for(browser, "!document.querySelector('#error').hidden"
                                    " && document.querySelector('#error').textContent", 30)
    assert "CORS_ALLOW_ORIGINS" in message


def _loaded_from(browser: Any) -> list[str]:
    return browser.execute_script("return performance.getEntriesByType('resource').map(r => r.name)")


def test_docs_render_with_no_network(browser: Any, server: str) -> None:
    browser.get(server + "/docs")
    title = wait_for(browser, "document.querySelector('.swagger-ui .info .title')?.textContent", 30)
    assert "Server B" in title
    assert wait_for(browser, "document.querySelectorAll('.opblock').length", 30) > 5
    resources = _loaded_from(browser)
    assert resources and all(url.startswith(server) for url in resources), resources


def test_upstream_failures_and_the_cap_are_explained(browser: Any, redis_url: str,
                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    from selenium.webdriver.common.by import By

    with silent_socket() as hanging:
        cases = [(closed_port_url(), "502"), (hanging, "504")]
        for upstream, status in cases:
            env = _env(redis_url, tmp_path_factory.mktemp("audio"), LLM_BASE_URL=upstream,
                       LLM_READ_TIMEOUT_S="1", MAX_CONCURRENT_USERS="1",
                       TRUSTED_PROXIES="127.0.0.1/32")
            with server_b_process(env) as served:
                _open(browser, served.base_url + "/")
                _set(browser, "tts-mode", "off")
                assert status in (_send(browser, "안녕?")["error"] or "")
                # A failed first turn holds no place; another client takes the only one.
                other = httpx.post(served.base_url + "/api/tts", json={"text": "안녕"},
                                   headers={"X-Forwarded-For": "203.0.113.9"}, timeout=30)
                assert other.status_code == 200, other.text
                browser.find_element(By.ID, "new-session").click()
                refused = _send(browser, "안녕?")["error"] or ""
                assert "최대 동시 접속자 수(1명)에 도달했습니다" in refused, refused


# tests/memory's small context: a few turns fold into a summary, and its turns into episodes.
MEMORY_ENV = {"MAX_CONTEXT_TOKENS": "1024", "RECENT_TURNS_TO_KEEP": "4", "SUMMARY_RETRY_AFTER_S": "0",
              "MEMORY_TOKENS": "200", "EMBEDDING_MODEL": "", "EMBEDDING_BASE_URL": "",
              "EMBEDDING_SERVICE": ""}


@pytest.fixture(scope="module")
def memory_server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(FakeLLM().app()) as upstream:
        env = _env(redis_url, tmp_path_factory.mktemp("audio"), LLM_BASE_URL=upstream, **MEMORY_ENV)
        with server_b_process(env) as served:
            yield served.base_url


def _console_errors(browser: Any) -> list[str]:
    """The console's errors since the last call (reading the log empties it)."""
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def _panel(browser: Any) -> dict[str, Any]:
    panel: dict[str, Any] = browser.execute_script("""
        const items = [...document.querySelectorAll('#memories li')];
        return {count: document.querySelector('#memory-count').textContent,
                ids: items.map(li => li.dataset.id),
                recalled: items.filter(li => li.dataset.recalled === 'true').map(li => li.dataset.id),
                spans: items.map(li => li.querySelector('.span').textContent),
                whens: items.map(li => li.querySelector('.when').textContent),
                texts: items.map(li => li.querySelector('.text').textContent)};""")
    return panel


def _note(browser: Any) -> dict[str, Any] | None:
    """The recalled-memories note under the last reply, opened."""
    note: dict[str, Any] | None = browser.execute_script("""
        const note = [...document.querySelectorAll('.msg.assistant')].pop()?.querySelector('.recalled-note');
        if (!note) return null;
        note.open = true;
        return {ids: note.dataset.ids.split(' '), summary: note.querySelector('summary').textContent,
                items: [...note.querySelectorAll('li')].map(li => li.textContent)};""")
    return note


def _as_the_page(browser: Any, server: str) -> httpx.Client:
    """A client that is the same anonymous user as the page: its cookie, once this server has
    set it (one from an earlier test's server, on the same host, is not valid here)."""
    browser.execute_async_script("fetch(arguments[0] + '/api/users/me/persona', {credentials: 'include'})"
                                 ".finally(arguments[1])", server)
    cookie = browser.get_cookie("rp_anon")
    assert cookie, "the server set no anonymous cookie"
    return httpx.Client(base_url=server, cookies={"rp_anon": cookie["value"]}, timeout=30)


def _forget_in_page(browser: Any, episode_id: str) -> None:
    browser.execute_script("window.confirm = () => true; document.querySelector("
                           "`#memories li[data-id='${arguments[0]}'] button`).click()", episode_id)


def _settled(browser: Any, api: httpx.Client, sid: str) -> list[str]:
    """Waits until the panel lists what the API does, and that has held for a second (a
    background summary may still be saving episodes); the episode ids."""
    deadline = time.monotonic() + 60
    while True:
        listed = [e["id"] for e in api.get(f"/api/chat/sessions/{sid}/memories").json()["data"]["episodes"]]
        time.sleep(1)
        again = [e["id"] for e in api.get(f"/api/chat/sessions/{sid}/memories").json()["data"]["episodes"]]
        if listed == again == _panel(browser)["ids"]:
            return again
        assert time.monotonic() < deadline, (again, _panel(browser))


def test_the_memory_panel_shows_recalls_and_forgets_episodes(browser: Any, memory_server: str) -> None:
    _open(browser, memory_server + "/")
    _console_errors(browser)  # what earlier tests left in the log
    sid = f"pg-memory-{RUN_ID}"
    # The conversation through the API, as the browser's own client (its cookie): the fact
    # in the second turn, filler until the summary has folded it, then the question.
    with _as_the_page(browser, memory_server) as api:
        def turn(text: str) -> dict[str, Any]:
            response = api.post("/api/chat", json={
                "session_id": sid, "max_tokens": 64, "tts_enabled": False,
                "messages": [{"role": "user", "content": text}]})
            assert response.status_code == 200, response.text
            return dict(response.json()["data"])

        for text in [_filler(0), FACT, *[_filler(n) for n in range(1, 24)]]:
            turn(text)
        deadline = time.monotonic() + 60
        while (view := api.get(f"/api/chat/sessions/{sid}").json()["data"])["summary_upto"] < 3 \
                or not view["episodes"]:  # summaries run after the response, in the background
            assert time.monotonic() < deadline, view
            time.sleep(0.2)
        asked = turn(QUESTION)
        assert asked["memories_recalled"], "the API recalled nothing: no note to show"

        # The page opens the stored conversation: its memory, and the recall of its last turn.
        _open(browser, f"{memory_server}/?session={sid}")
        wait_for(browser, f"document.querySelector('#session-id').textContent === {json.dumps(sid)}"
                          " && document.querySelectorAll('#memories li').length > 0", 30)
        ids = _settled(browser, api, sid)
        panel = _panel(browser)
        assert panel["count"].startswith(f"{len(ids)}개"), panel["count"]
        assert all(span.startswith("메시지 ") for span in panel["spans"]), panel["spans"]
        assert any("나비" in text for text in panel["texts"])
        assert browser.execute_script("return document.querySelectorAll('.msg').length") == 2 * 26
        opened = _note(browser)
        assert opened and opened["ids"] == asked["memories_recalled"], opened
        assert set(panel["recalled"]) == set(asked["memories_recalled"])

        # A streamed turn typed in the page: its note, the panel's markers, the API agree.
        _set(browser, "tts-mode", "off")
        reply = _send(browser, QUESTION + " 정말?")
        assert reply["error"] is None and reply["done"], reply
        note = wait_for(browser, "(() => { const n = [...document.querySelectorAll('.msg.assistant')]"
                                 ".pop().querySelector('.recalled-note');"
                                 " return n && n.dataset.ids; })()", 30)
        ids = _settled(browser, api, sid)
        listing = api.get(f"/api/chat/sessions/{sid}/memories").json()["data"]
        assert note.split(" ") == listing["recalled"], (note, listing["recalled"])
        streamed = _note(browser)
        assert streamed is not None
        assert streamed["summary"] == f"★ 기억 {len(listing['recalled'])}개를 떠올렸어요"
        assert any("나비" in item for item in streamed["items"]), streamed
        panel = _panel(browser)
        assert panel["recalled"] == [i for i in ids if i in listing["recalled"]]
        for episode_id, when in zip(panel["ids"], panel["whens"], strict=True):
            if episode_id in listing["recalled"]:
                assert when.startswith("마지막으로 떠올린 때"), when

        # Forget the episode that holds the fact: gone from the panel and from the API.
        fact = next(e["id"] for e in listing["episodes"] if "나비" in e["text"])
        _forget_in_page(browser, fact)
        wait_for(browser, f"document.querySelectorAll('#memories li').length === {len(ids) - 1}", 30)
        after = [e["id"] for e in api.get(f"/api/chat/sessions/{sid}/memories").json()["data"]["episodes"]]
        assert after == [i for i in ids if i != fact] == _panel(browser)["ids"]
        assert _panel(browser)["count"].startswith(f"{len(ids) - 1}개")
        assert api.get(f"/api/chat/sessions/{sid}").json()["data"]["episodes"] == len(ids) - 1
        assert browser.execute_script("return document.querySelector('#error').hidden")
    assert _console_errors(browser) == []


def test_forgetting_a_memory_already_gone_is_explained(browser: Any, memory_server: str) -> None:
    """Forgotten elsewhere (another tab): the page says so and lists what is kept."""
    _open(browser, memory_server + "/")
    _set(browser, "tts-mode", "off")
    for text in [_filler(0), FACT, *[_filler(n) for n in range(1, 12)]]:
        assert _send(browser, text)["error"] is None
    sid = browser.execute_script("return document.querySelector('#session-id').textContent")
    with _as_the_page(browser, memory_server) as api:
        ids = _settled(browser, api, sid)
        assert ids, "the page followed its turns' summaries into the panel"
        gone = api.delete(f"/api/chat/sessions/{sid}/memories/{ids[0]}")
        assert gone.status_code == 200, gone.text
        _forget_in_page(browser, ids[0])
        message = wait_for(browser, "!document.querySelector('#error').hidden"
                                    " && document.querySelector('#error').textContent", 30)
        assert "404" in message and "memory" in message
        wait_for(browser, f"document.querySelectorAll('#memories li').length === {len(ids) - 1}", 30)
