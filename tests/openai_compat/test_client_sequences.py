"""Role-play clients' own request sequences against `/v1` (issue 27): SillyTavern, RisuAI
and Open WebUI send what their source says they send (tests/support/roleplay_clients.py),
to Server B in its own uvicorn process (tests/openai_compat/conftest.py).

The contract: a re-sent history ending with a user message already answered, after that
answer was delivered, is a new generation stored as another alternative of that reply (at
most 10, the newest selected); while the first is still generating, or when it was cut
before delivery, it is a retry (that reply, never a second generation). Continue in every
form extends the last stored reply (the answer is only the new text, the nudge is never
stored); impersonate answers the user's line and stores nothing; quiet prompts write
nothing and create no session. `/api/chat` follows the same rule for re-sent histories,
its Idempotency-Key still wins and a lone message keeps its retry window.

Sequences run on the real llama.cpp (`llm`); where upstream calls must be counted, on the
scripted LLM, which records every prompt.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import redis

from roleplay.core.redis_keys import RedisKeys
from tests.openai_compat.conftest import FAKE_USER_RPM, Caller, ServerB
from tests.support.fake_llm import FakeLLM
from tests.support.roleplay_clients import (
    RISU_CONTINUE_PROMPT,
    RISU_SAYS_NOTHING,
    SILLYTAVERN_CONTINUE_NUDGE_PROMPT,
    SILLYTAVERN_IMPERSONATION_PROMPT,
    SILLYTAVERN_SUMMARY_PROMPT,
    Answer,
    ClientCall,
    Line,
    OpenWebUI,
    RisuAI,
    SillyTavern,
    client_http,
    post,
    read_stream_as_sillytavern,
    sillytavern_post,
)

REAL_MAX_TOKENS = 12
"""SmolLM2 on 2 cores: short replies keep each sequence to seconds."""
STREAMS = pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
NUDGE_HEAD = SILLYTAVERN_CONTINUE_NUDGE_PROMPT.split(":")[0]
IMPERSONATION_HEAD = SILLYTAVERN_IMPERSONATION_PROMPT.split(",")[0]
SUMMARY_HEAD = SILLYTAVERN_SUMMARY_PROMPT.split(".")[0]


# --- helpers --------------------------------------------------------------------------------


@contextmanager
def _http(server: ServerB) -> Iterator[httpx.Client]:
    with client_http(server.base_url) as http:
        yield http


def _auth(call: ClientCall) -> dict[str, str]:
    """The call's credentials, to read the session as the same caller."""
    return {"Authorization": call.headers["Authorization"]}


def _ok(answer: Answer) -> Answer:
    assert answer.status == 200, f"{answer.statuses}: {answer.body}"
    return answer


def _view(http: httpx.Client, session_id: str | None, headers: dict[str, str]) -> dict[str, Any]:
    assert session_id, "a session turn answers its X-Session-Id"
    response = http.get(f"/api/chat/sessions/{session_id}", headers=headers)
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()["data"]
    return view


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _transcript(view: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], _norm(m["content"])) for m in view["messages"]]


def _lines(chat: list[Line]) -> list[tuple[str, str]]:
    return [(line.role, _norm(line.content)) for line in chat]


def _alternatives(message: dict[str, Any]) -> list[str]:
    return [_norm(text) for text in message.get("alternatives") or [message["content"]]]


def _assert_newest_selected(message: dict[str, Any], newest: str) -> None:
    alternatives = message.get("alternatives") or []
    selected = message.get("selected")
    assert _norm(message["content"]) == _norm(newest), "the newest version is the reply"
    assert selected is not None and _norm(alternatives[selected]) == _norm(newest), (
        f"the newest version is the selected one: {message}")


def _joins(old: str, new: str) -> set[str]:
    """The stored forms of a continued reply: old and new text as one message (a space
    between them or not)."""
    return {_norm(old + new), _norm(old + " " + new)}


def _unchanged(view: dict[str, Any]) -> tuple[Any, ...]:
    """What a request that writes nothing leaves exactly as it was."""
    return (view["messages"], view["user_turns"], view["message_count"], view.get("summary"))


def _session_keys(sync_redis: redis.Redis | redis.RedisCluster, server: ServerB) -> set[str]:
    return set(sync_redis.scan_iter(f"{server.key_prefix}session:*", count=1000))


def _no_nudge_stored(view: dict[str, Any]) -> None:
    for message in view["messages"]:
        for text in (message["content"], *(message.get("alternatives") or [])):
            assert NUDGE_HEAD not in text and RISU_CONTINUE_PROMPT not in text, message
            assert RISU_SAYS_NOTHING not in text and IMPERSONATION_HEAD not in text, message
            assert SUMMARY_HEAD not in text, message


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _sillytavern(server: ServerB, caller: Caller, **settings: Any) -> SillyTavern:
    return SillyTavern(server.model, char_name="Mia", user_name="Ann", api_key=caller.token,
                       max_tokens=16, **settings)


# --- the builders mirror their sources --------------------------------------------------------


def test_sillytavern_builds_its_default_prompt_order_and_custom_source_body() -> None:
    st = SillyTavern("character/c1", char_name="Mia", user_name="Ann",
                     description="{{char}} runs a cafe.", personality="cheerful",
                     scenario="A rainy morning", persona_description="{{user}} is a student.",
                     examples="<START>\n{{user}}: Hi\n{{char}}: Welcome in!", greeting="Hello, {{user}}!")
    call = st.send("One latte, please.")
    assert call.messages == [
        {"role": "system", "content": "Write Mia's next reply in a fictional chat between Mia and Ann."},
        {"role": "system", "content": "Ann is a student."},
        {"role": "system", "content": "Mia runs a cafe."},
        {"role": "system", "content": "[Mia's personality: cheerful]"},
        {"role": "system", "content": "[Circumstances and context of the dialogue: A rainy morning]"},
        {"role": "system", "content": "[Example Chat]"},
        {"role": "system", "content": "Hi", "name": "example_user"},
        {"role": "system", "content": "Welcome in!", "name": "example_assistant"},
        {"role": "system", "content": "[Start a new Chat]"},
        {"role": "assistant", "content": "Hello, Ann!"},
        {"role": "user", "content": "One latte, please."}]
    assert list(call.body) == ["messages", "model", "temperature", "max_tokens", "stream",
                               "presence_penalty", "frequency_penalty", "top_p", "logit_bias"]
    assert call.body["logit_bias"] == {} and call.body["stream"] is False
    assert call.headers["Authorization"] == "Bearer undefined"
    seeded = SillyTavern("m", api_key="sk-1", seed=7, custom_stop=["\nAnn:"]).send("x")
    assert list(seeded.body)[-3:] == ["stop", "logit_bias", "seed"]
    assert seeded.headers["Authorization"] == "Bearer sk-1"

    st.receive("Coming right up.  ")
    nudge = st.continue_().messages[-1]
    assert nudge == {"role": "system", "content": (
        "[Continue the following message. Do not include ANY parts of the original message. Use "
        "capitalization and punctuation as if your reply is a part of the original message: "
        "Coming right up.]")}
    st.continue_prefill = True
    assert st.continue_().messages[-2:] == [{"role": "user", "content": "One latte, please."},
                                            {"role": "assistant", "content": "Coming right up."}]
    assert st.impersonate().messages[-1]["content"] == (
        "[Write your next reply from the point of view of Ann, using the chat history so far as a "
        "guideline for the writing style of Ann. Don't write as Mia or system. Don't describe "
        "actions of Mia.]")
    st.stream = True
    quiet = st.summarize_quiet()
    assert quiet.stream is False and quiet.messages[-1]["role"] == "system"
    assert "Limit the summary to 200 words or less." in quiet.messages[-1]["content"]
    raw = st.summarize_raw().messages
    assert [m["role"] for m in raw] == ["system", "user"]
    assert raw[1]["content"] == "Mia:\nHello, Ann!\n\nAnn:\nOne latte, please."


def test_risuai_merges_its_system_parts_and_sends_its_default_parameters() -> None:
    risu = RisuAI("character/c1", api_key="sk-risu", main_prompt="Main.", description="Desc.",
                  personality="kind", scenario="a cafe", persona_prompt="Persona.")
    call = risu.send("Hi")
    assert call.messages == [
        {"role": "system", "content": "Main.\n\nDesc.\n\nDescription of Mia: kind\n\n"
                                      "Circumstances and context of the dialogue: a cafe\n\nPersona."},
        {"role": "user", "content": "Hi"}]
    assert list(call.body) == ["model", "messages", "max_tokens", "stream", "temperature", "top_p",
                               "frequency_penalty", "presence_penalty", "repetition_penalty",
                               "min_p", "top_a", "top_k"]
    assert (call.body["temperature"], call.body["frequency_penalty"]) == (0.8, 0.7)
    risu.receive("Hello")
    assert risu.continue_().messages[-3:] == [
        {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "*says nothing*"},
        {"role": "system", "content": "[Continue the last response]"}]
    owui = OpenWebUI("character/c1", api_key="sk-owui")
    owui.send("Hi")
    owui.receive("Hello")
    owui.send("More?")
    owui.receive("Sure")
    assert owui.regenerate().messages[-1] == {"role": "user", "content": "More?"}


# --- swipes and regenerations: new alternatives (scripted LLM) ----------------------------------


@STREAMS
def test_sillytavern_swipes_after_delivery_are_new_alternatives_of_the_last_reply(
        server_on_script: ServerB, scripted_llm: FakeLLM, caller: Caller, stream: bool) -> None:
    st = _sillytavern(server_on_script, caller, stream=stream)
    with _http(server_on_script) as http:
        scripted_llm.reply = "Hi, I'm Mia."
        first = _ok(post(http, st.send("Hello!")))
        st.receive(first.text)
        scripted_llm.reply = "We sell coffee."
        st.receive(_ok(post(http, st.send("What do you sell?"))).text)
        swiped = []
        for take in ("We sell tea.", "We sell cake."):
            scripted_llm.reply = take
            answer = _ok(post(http, st.swipe()))
            assert answer.text == take, "a swipe is a new generation, not the stored reply"
            st.receive(answer.text)
            swiped.append(answer)
        view = _view(http, first.session_id, caller.headers)
    assert len(scripted_llm.chat_prompts) == 4, "each swipe asked the upstream once"
    swipe_prompt = scripted_llm.chat_prompts[-1]
    assert swipe_prompt[-1] == {"role": "user", "content": "What do you sell?"}
    assert not any("We sell" in m["content"] for m in swipe_prompt), "no version in its own prompt"
    assert {a.session_id for a in swiped} == {first.session_id}
    assert [role for role, _ in _transcript(view)] == ["user", "assistant", "user", "assistant"]
    reply = view["messages"][-1]
    assert _alternatives(reply) == ["We sell coffee.", "We sell tea.", "We sell cake."]
    _assert_newest_selected(reply, "We sell cake.")


def test_a_swipe_of_the_first_exchange_is_a_new_alternative(
        server_on_script: ServerB, scripted_llm: FakeLLM, caller: Caller) -> None:
    """SillyTavern re-sends the whole history, so a first exchange re-sent (history = the one
    user message) is a swipe too."""
    st = _sillytavern(server_on_script, caller)
    with _http(server_on_script) as http:
        scripted_llm.reply = "Welcome!"
        first = _ok(post(http, st.send("Hi there!")))
        st.receive(first.text)
        scripted_llm.reply = "Good morning!"
        again = _ok(post(http, st.swipe()))
        view = _view(http, first.session_id, caller.headers)
    assert again.text == "Good morning!" and len(scripted_llm.chat_prompts) == 2
    assert [role for role, _ in _transcript(view)] == ["user", "assistant"]
    assert _alternatives(view["messages"][1]) == ["Welcome!", "Good morning!"]
    _assert_newest_selected(view["messages"][1], "Good morning!")


def test_a_reply_keeps_at_most_ten_alternatives_with_the_newest_selected(
        server_on_script: ServerB, scripted_llm: FakeLLM, caller: Caller) -> None:
    st = _sillytavern(server_on_script, caller)
    with _http(server_on_script) as http:
        scripted_llm.reply = "take 1"
        first = _ok(post(http, st.send("Tell me a joke.")))
        st.receive(first.text)
        for n in range(2, 13):
            scripted_llm.reply = f"take {n}"
            st.receive(_ok(post(http, st.swipe())).text)
        view = _view(http, first.session_id, caller.headers)
    assert len(scripted_llm.chat_prompts) == 12
    reply = view["messages"][-1]
    assert len(view["messages"]) == 2
    assert len(reply["alternatives"]) == 10 and "take 1" not in reply["alternatives"]
    _assert_newest_selected(reply, "take 12")


def test_risuai_reroll_is_a_new_alternative_of_the_last_reply(
        server_on_script: ServerB, scripted_llm: FakeLLM, caller: Caller) -> None:
    risu = RisuAI(server_on_script.model, api_key=caller.token, max_tokens=16,
                  main_prompt="Write Mia's next reply in a fictional chat.")
    with _http(server_on_script) as http:
        scripted_llm.reply = "Hello!"
        first = _ok(post(http, risu.send("Hi Mia.")))
        risu.receive(first.text)
        scripted_llm.reply = "Latte art."
        risu.receive(_ok(post(http, risu.send("What do you like?"))).text)
        scripted_llm.reply = "Rainy days."
        rerolled = _ok(post(http, risu.reroll()))
        view = _view(http, first.session_id, caller.headers)
    assert rerolled.text == "Rainy days." and len(scripted_llm.chat_prompts) == 3
    assert len(view["messages"]) == 4
    assert _alternatives(view["messages"][-1]) == ["Latte art.", "Rainy days."]
    _assert_newest_selected(view["messages"][-1], "Rainy days.")


@STREAMS
def test_open_webui_regenerate_is_a_new_alternative_of_the_last_reply(
        server_on_script: ServerB, scripted_llm: FakeLLM, caller: Caller, stream: bool) -> None:
    owui = OpenWebUI(server_on_script.model, api_key=caller.token, stream=stream)
    with _http(server_on_script) as http:
        scripted_llm.reply = "Hello!"
        first = _ok(post(http, owui.send("Hi Mia.")))
        owui.receive(first.text)
        scripted_llm.reply = "Espresso."
        owui.receive(_ok(post(http, owui.send("Your favourite drink?"))).text)
        scripted_llm.reply = "Green tea."
        regenerated = _ok(post(http, owui.regenerate()))
        owui.receive(regenerated.text)
        scripted_llm.reply = "Bye!"
        _ok(post(http, owui.send("Thanks.")))
        view = _view(http, first.session_id, caller.headers)
    assert regenerated.text == "Green tea." and len(scripted_llm.chat_prompts) == 4
    assert _transcript(view) == [("user", "Hi Mia."), ("assistant", "Hello!"),
                                 ("user", "Your favourite drink?"), ("assistant", "Green tea."),
                                 ("user", "Thanks."), ("assistant", "Bye!")]
    assert _alternatives(view["messages"][3]) == ["Espresso.", "Green tea."]


# --- retries: one generation (scripted LLM) -----------------------------------------------------


@STREAMS
def test_a_resend_while_the_first_is_still_generating_gets_that_reply(
        server_on_script: ServerB, scripted_llm: FakeLLM, caller: Caller, stream: bool) -> None:
    scripted_llm.reply = "one two three four five"
    scripted_llm.reply_delay_s = 0 if stream else 1.5
    scripted_llm.token_delay_s = 0.3 if stream else 0
    st = _sillytavern(server_on_script, caller, stream=stream)
    call = st.send("Count to five, please.")

    def send() -> Answer:
        with _http(server_on_script) as http:
            return post(http, call)

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(send)
        _wait_for(lambda: len(scripted_llm.chat_prompts) == 1, "the first generation to start")
        second = pool.submit(send)
        answers = [first.result(), second.result()]
    with _http(server_on_script) as http:
        view = _view(http, answers[0].session_id, caller.headers)
    assert [a.status for a in answers] == [200, 200]
    assert [_norm(a.text) for a in answers] == ["one two three four five"] * 2
    assert len(scripted_llm.chat_prompts) == 1, "the re-send was a retry, not a second generation"
    assert _transcript(view) == [("user", "Count to five, please."),
                                 ("assistant", "one two three four five")]
    assert not view["messages"][1].get("alternatives")


def test_a_resend_after_a_stream_cut_before_delivery_gets_the_cut_reply(
        server_on_script: ServerB, scripted_llm: FakeLLM, caller: Caller) -> None:
    scripted_llm.reply = "one two three four five six"
    gate = threading.Event()
    scripted_llm.stream_gate, scripted_llm.stream_hold_after_words = gate, 2
    st = _sillytavern(server_on_script, caller, stream=True)
    call = st.send("Tell me a long story.")
    try:
        with _http(server_on_script) as http:
            with http.stream("POST", call.path, headers=call.headers, content=call.content()) as cut:
                session_id = cut.headers["x-session-id"]
                seen = ""
                for line in cut.iter_lines():
                    if line.startswith("data: {"):
                        seen += read_stream_as_sillytavern(line + "\n\n").text
                    if "two" in seen:
                        break  # the user stops it: the connection closes before the last event

            def stored_cut() -> bool:
                messages = _view(http, session_id, caller.headers)["messages"]
                return len(messages) == 2 and bool(messages[1].get("cut"))

            _wait_for(stored_cut, "the cut reply to be stored")
    finally:
        gate.set()
    with _http(server_on_script) as http:
        again = _ok(post(http, call))
        view = _view(http, session_id, caller.headers)
    assert len(scripted_llm.chat_prompts) == 1, "a reply cut before delivery is retried, not redone"
    assert _norm(again.text) == "one two"
    assert _transcript(view) == [("user", "Tell me a long story."), ("assistant", "one two")]


def test_sillytavern_retries_a_429_five_times_and_each_turn_is_generated_once(
        server_on_script: ServerB, scripted_llm: FakeLLM, caller: Caller,
        sync_redis: redis.Redis | redis.RedisCluster) -> None:
    """Server B answers 429 while the user's minute is used up (`USER_RPM`); SillyTavern's
    server sends the identical request again up to 5 times. However many times the same
    turn arrives refused, it is generated once when it gets through, and a refused swipe is
    one new alternative, not one per attempt."""
    now = time.time()
    minute_keys = [RedisKeys(server_on_script.key_prefix).quotas(caller.user_id, minute, 0)[0]
                   for minute in (int(now // 60), int(now // 60) + 1)]

    def fill_the_minute() -> None:
        for key in minute_keys:
            sync_redis.set(key, FAKE_USER_RPM, ex=120)

    def minute_passes_before(retry: int) -> Callable[[int], None]:
        def maybe(n: int) -> None:
            if n == retry:
                for key in minute_keys:  # one by one: on a cluster they are in different slots
                    sync_redis.delete(key)
        return maybe

    st = _sillytavern(server_on_script, caller)
    scripted_llm.reply = "Hello, Ann!"
    fill_the_minute()
    with _http(server_on_script) as http:
        turn = sillytavern_post(http, st.send("Hello!"), first_delay_s=0.02,
                                before_retry=minute_passes_before(5))
        assert turn.statuses == [429] * 5 + [200]
        assert turn.text == "Hello, Ann!" and len(scripted_llm.chat_prompts) == 1
        st.receive(turn.text)
        scripted_llm.reply = "Hi again!"
        fill_the_minute()
        swipe = sillytavern_post(http, st.swipe(), first_delay_s=0.02,
                                 before_retry=minute_passes_before(2))
        view = _view(http, turn.session_id, caller.headers)
    assert swipe.statuses == [429, 429, 200] and swipe.text == "Hi again!"
    assert len(scripted_llm.chat_prompts) == 2
    assert _transcript(view) == [("user", "Hello!"), ("assistant", "Hi again!")]
    assert _alternatives(view["messages"][1]) == ["Hello, Ann!", "Hi again!"]


def test_sillytavern_reads_every_stream_we_send_by_its_own_rules(
        server_on_script: ServerB, scripted_llm: FakeLLM, caller: Caller) -> None:
    """A turn, a swipe and a retry's answer, streamed: SillyTavern splits events on blank
    lines (an unterminated last event is lost), parses each `data:` as JSON with a `choices`
    array, and stops at `[DONE]`."""
    st = _sillytavern(server_on_script, caller, stream=True)

    def read(call: ClientCall) -> str:
        with (_http(server_on_script) as http,
              http.stream("POST", call.path, headers=call.headers, content=call.content()) as answer):
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/event-stream")
            return answer.read().decode()

    scripted_llm.reply = "one two three"
    raw = [read(st.send("Count to three."))]
    st.receive("one two three")
    scripted_llm.reply, scripted_llm.token_delay_s = "three two one", 0.3
    swipe = st.swipe()
    with ThreadPoolExecutor(2) as pool:
        swiped = pool.submit(read, swipe)
        _wait_for(lambda: len(scripted_llm.chat_prompts) == 2, "the swipe to start")
        retried = pool.submit(read, swipe)
        raw += [swiped.result(), retried.result()]
    assert len(scripted_llm.chat_prompts) == 2
    for text in raw:
        stream = read_stream_as_sillytavern(text)
        assert stream.leftover == "", "the last event is terminated by a blank line"
        assert stream.done and stream.events[-1] == "[DONE]"
        assert all(event.startswith("{") for event in stream.events[:-1])
    assert [read_stream_as_sillytavern(text).text for text in raw] == [
        "one two three", "three two one", "three two one"]


# --- continue: one message, old + new (scripted LLM) ----------------------------------------------


@STREAMS
@pytest.mark.parametrize("prefill", [False, True], ids=["nudge", "prefill"])
def test_sillytavern_continue_extends_the_stored_reply_as_one_message(
        server_on_script: ServerB, scripted_llm: FakeLLM, caller: Caller, stream: bool,
        prefill: bool) -> None:
    st = _sillytavern(server_on_script, caller, stream=stream, continue_prefill=prefill)
    with _http(server_on_script) as http:
        scripted_llm.reply = "Welcome to the cafe."
        first = _ok(post(http, st.send("Hi!")))
        st.receive(first.text)
        scripted_llm.reply = "What can I get you?"
        more = _ok(post(http, st.continue_()))
        view = _view(http, first.session_id, caller.headers)
        st.continued(more.text)
        scripted_llm.reply = "Coming right up."
        st.receive(_ok(post(http, st.send("A latte, please."))).text)
        after = _view(http, first.session_id, caller.headers)
    assert more.text == "What can I get you?", "the answer is only the new text"
    assert len(scripted_llm.chat_prompts) == 3
    assert [role for role, _ in _transcript(view)] == ["user", "assistant"], "no second reply"
    assert _norm(view["messages"][1]["content"]) in _joins("Welcome to the cafe.", "What can I get you?")
    _no_nudge_stored(view)
    assert _transcript(after) == _lines(st.chat), "the next turn finds the continued reply stored"


@STREAMS
@pytest.mark.parametrize("says_nothing", [False, True], ids=["plain", "says-nothing"])
def test_risuai_continue_extends_the_stored_reply_as_one_message(
        server_on_script: ServerB, scripted_llm: FakeLLM, caller: Caller, stream: bool,
        says_nothing: bool) -> None:
    """With `useSayNothing` (RisuAI's default) its Continue sends `*says nothing*` as the
    user's message before `[Continue the last response]`: still a continue of the stored
    reply, and neither is stored."""
    risu = RisuAI(server_on_script.model, api_key=caller.token, max_tokens=16, stream=stream,
                  main_prompt="Write Mia's next reply in a fictional chat.",
                  use_say_nothing=says_nothing)
    with _http(server_on_script) as http:
        scripted_llm.reply = "Welcome to the cafe."
        first = _ok(post(http, risu.send("Hi!")))
        risu.receive(first.text)
        scripted_llm.reply = "What can I get you?"
        more = _ok(post(http, risu.continue_()))
        view = _view(http, first.session_id, caller.headers)
    assert more.text == "What can I get you?" and len(scripted_llm.chat_prompts) == 2
    assert [role for role, _ in _transcript(view)] == ["user", "assistant"]
    assert _norm(view["messages"][1]["content"]) in _joins("Welcome to the cafe.", "What can I get you?")
    _no_nudge_stored(view)


# --- impersonate and quiet prompts: nothing stored (scripted LLM) ---------------------------------


@STREAMS
def test_sillytavern_impersonate_answers_the_users_line_and_stores_nothing(
        server_on_script: ServerB, scripted_llm: FakeLLM, caller: Caller, stream: bool) -> None:
    st = _sillytavern(server_on_script, caller, stream=stream)
    with _http(server_on_script) as http:
        scripted_llm.reply = "What would you like?"
        first = _ok(post(http, st.send("Good morning!")))
        st.receive(first.text)
        before = _view(http, first.session_id, caller.headers)
        scripted_llm.reply = "A latte with oat milk, please."
        line = _ok(post(http, st.impersonate()))
        during = _view(http, first.session_id, caller.headers)
        scripted_llm.reply = "Coming right up!"
        _ok(post(http, st.send(line.text)))  # the user sends the line written for them
        after = _view(http, first.session_id, caller.headers)
    assert line.text == "A latte with oat milk, please." and len(scripted_llm.chat_prompts) == 3
    assert _unchanged(during) == _unchanged(before), "impersonate writes nothing to the session"
    assert _transcript(after) == [("user", "Good morning!"), ("assistant", "What would you like?"),
                                  ("user", "A latte with oat milk, please."),
                                  ("assistant", "Coming right up!")]


def test_sillytavern_quiet_summary_prompt_leaves_the_session_as_it_was(
        server_on_script: ServerB, scripted_llm: FakeLLM, caller: Caller,
        sync_redis: redis.Redis | redis.RedisCluster) -> None:
    """The summarize extension's `generateQuietPrompt`: the whole chat, then the summary
    instruction as the last (system) message, `stream: false`, even with streaming on."""
    st = _sillytavern(server_on_script, caller, stream=True)
    with _http(server_on_script) as http:
        scripted_llm.reply = "Hello!"
        first = _ok(post(http, st.send("Hi, I'm Ann.")))
        st.receive(first.text)
        scripted_llm.reply = "Nice to meet you."
        st.receive(_ok(post(http, st.send("I study here."))).text)
        before = _view(http, first.session_id, caller.headers)
        keys = _session_keys(sync_redis, server_on_script)
        scripted_llm.reply = "Ann, a student, met Mia."
        quiet = st.summarize_quiet()
        summary = _ok(post(http, quiet))
        after = _view(http, first.session_id, caller.headers)
    assert quiet.stream is False and summary.text == "Ann, a student, met Mia."
    assert len(scripted_llm.chat_prompts) == 3, "the upstream was asked"
    assert _unchanged(after) == _unchanged(before), "a quiet prompt writes nothing"
    assert _session_keys(sync_redis, server_on_script) == keys


def test_sillytavern_raw_summary_prompt_creates_no_session(
        server_on_script: ServerB, scripted_llm: FakeLLM, caller: Caller,
        sync_redis: redis.Redis | redis.RedisCluster) -> None:
    """`generateRaw`: only `[system: the summary prompt, user: the chat as text]`, a pair
    unlike the session's history."""
    st = _sillytavern(server_on_script, caller)
    with _http(server_on_script) as http:
        scripted_llm.reply = "Hello!"
        first = _ok(post(http, st.send("Hi, I'm Ann.")))
        st.receive(first.text)
        scripted_llm.reply = "Nice to meet you."
        st.receive(_ok(post(http, st.send("I study here."))).text)
        before = _view(http, first.session_id, caller.headers)
        keys = _session_keys(sync_redis, server_on_script)
        scripted_llm.reply = "Ann, a student, met Mia."
        summary = _ok(post(http, st.summarize_raw()))
        if summary.session_id is not None:
            assert http.get(f"/api/chat/sessions/{summary.session_id}",
                            headers=caller.headers).status_code == 404
        after = _view(http, first.session_id, caller.headers)
    assert summary.text == "Ann, a student, met Mia." and len(scripted_llm.chat_prompts) == 3
    assert _session_keys(sync_redis, server_on_script) == keys, "no session was created"
    assert _unchanged(after) == _unchanged(before)


# --- /api/chat: the same rule, its own regenerate (scripted LLM) -----------------------------------


def test_api_chat_regenerate_still_adds_an_alternative_also_to_a_v1_session(
        server_on_script: ServerB, scripted_llm: FakeLLM, caller: Caller) -> None:
    with _http(server_on_script) as http:
        scripted_llm.reply = "first"
        said = http.post("/api/chat", headers=caller.headers, json={
            "session_id": "playground", "tts_enabled": False, "max_tokens": 16,
            "messages": [{"role": "user", "content": "Hi!"}]})
        assert said.status_code == 200, said.text
        scripted_llm.reply = "second"
        again = http.post("/api/chat/sessions/playground/regenerate", headers=caller.headers,
                          json={"tts_enabled": False, "max_tokens": 16})
        assert again.status_code == 200, again.text
        assert [a["content"] for a in again.json()["data"]["alternatives"]] == ["first", "second"]

        st = _sillytavern(server_on_script, caller)
        scripted_llm.reply = "v1 first"
        turn = _ok(post(http, st.send("Hello from SillyTavern!")))
        st.receive(turn.text)
        scripted_llm.reply = "v1 swipe"
        _ok(post(http, st.swipe()))
        scripted_llm.reply = "v1 regenerated"
        regenerated = http.post(f"/api/chat/sessions/{turn.session_id}/regenerate",
                                headers=caller.headers, json={"tts_enabled": False, "max_tokens": 16})
        assert regenerated.status_code == 200, regenerated.text
        view = _view(http, turn.session_id, caller.headers)
    assert len(scripted_llm.chat_prompts) == 5
    assert _alternatives(view["messages"][1]) == ["v1 first", "v1 swipe", "v1 regenerated"]
    _assert_newest_selected(view["messages"][1], "v1 regenerated")


def test_api_chat_follows_the_same_rule_and_its_idempotency_key_still_wins(
        server_on_script: ServerB, scripted_llm: FakeLLM, caller: Caller) -> None:
    def say(http: httpx.Client, messages: list[tuple[str, str]], key: str | None = None) -> dict[str, Any]:
        response = http.post("/api/chat", headers={**caller.headers, **(
            {"Idempotency-Key": key} if key else {})}, json={
            "session_id": "resent", "tts_enabled": False, "max_tokens": 16,
            "messages": [{"role": role, "content": content} for role, content in messages]})
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    u1, u2, u3 = ("user", "Hi!"), ("user", "What's good here?"), ("user", "Great.")
    with _http(server_on_script) as http:
        scripted_llm.reply = "r1"
        say(http, [u1])
        scripted_llm.reply = "r2"
        say(http, [u1, ("assistant", "r1"), u2])
        scripted_llm.reply = "r3"
        swiped = say(http, [u1, ("assistant", "r1"), u2])
        assert (swiped["content"], swiped["replayed"]) == ("r3", False), "a re-sent history: a swipe"
        scripted_llm.reply = "r4"
        history = [u1, ("assistant", "r1"), u2, ("assistant", "r3"), u3]
        say(http, history, key="turn-4")
        scripted_llm.reply = "not asked"
        keyed = say(http, history, key="turn-4")
        assert (keyed["content"], keyed["replayed"]) == ("r4", True), "the same key: a retry"
        scripted_llm.reply = "r5"
        say(http, [("user", "ok")])
        lone = say(http, [("user", "ok")])
        assert (lone["content"], lone["replayed"]) == ("r5", True), "a lone message: its retry window"
        view = _view(http, "resent", caller.headers)
    assert len(scripted_llm.chat_prompts) == 5
    assert [content for _, content in _transcript(view)] == [
        "Hi!", "r1", "What's good here?", "r3", "Great.", "r4", "ok", "r5"]
    assert _alternatives(view["messages"][3]) == ["r2", "r3"]


# --- whole sequences on the real model (llama.cpp, SmolLM2) ---------------------------------------


@pytest.mark.llm
@STREAMS
def test_sillytavern_conversation_on_the_real_model(
        server_on_llama: ServerB, sync_redis: redis.Redis | redis.RedisCluster, stream: bool) -> None:
    """SillyTavern with default settings and no API key (`Bearer undefined`): two turns, two
    swipes, continue (nudge, then prefill), impersonate, the summarize extension's quiet
    prompt, a turn, then its raw summary prompt."""
    st = SillyTavern(server_on_llama.model, char_name="Mia", user_name="Ann", stream=stream,
                     max_tokens=REAL_MAX_TOKENS)
    opening = "Good morning! What is your name?" if stream else "Hi! What is your name?"
    with _http(server_on_llama) as http:
        first = _ok(post(http, st.send(opening)))
        session_id, auth = first.session_id, _auth(st.call([]))
        st.receive(first.text)
        st.receive(_ok(post(http, st.send("What do you sell here?"))).text)
        versions = [_view(http, session_id, auth)["messages"][-1]["content"]]
        for _ in range(2):
            swipe = _ok(post(http, st.swipe()))
            assert swipe.session_id == session_id
            versions.append(swipe.text)
            st.receive(swipe.text)
        view = _view(http, session_id, auth)
        assert [role for role, _ in _transcript(view)] == ["user", "assistant"] * 2
        assert _alternatives(view["messages"][-1]) == [_norm(v) for v in versions]
        _assert_newest_selected(view["messages"][-1], versions[-1])

        for prefill in (False, True):
            st.continue_prefill = prefill
            stored = _view(http, session_id, auth)["messages"][-1]["content"]
            shown = st.chat[-1].content  # differs if SillyTavern's clean-up changed the reply
            more = _ok(post(http, st.continue_()))
            view = _view(http, session_id, auth)
            assert [role for role, _ in _transcript(view)] == ["user", "assistant"] * 2
            assert _norm(view["messages"][-1]["content"]) in (
                _joins(stored, more.text) | _joins(shown, more.text))
            st.continued(more.text)
        _no_nudge_stored(view)

        before = _view(http, session_id, auth)
        _ok(post(http, st.impersonate()))
        assert _unchanged(_view(http, session_id, auth)) == _unchanged(before), "impersonate"
        _ok(post(http, st.summarize_quiet()))
        assert _unchanged(_view(http, session_id, auth)) == _unchanged(before), "a quiet prompt"

        st.receive(_ok(post(http, st.send("Thanks, see you!"))).text)
        view = _view(http, session_id, auth)
        assert _transcript(view) == _lines(st.chat), "the stored conversation is SillyTavern's"

        keys = _session_keys(sync_redis, server_on_llama)
        _ok(post(http, st.summarize_raw()))
        assert _unchanged(_view(http, session_id, auth)) == _unchanged(view), "a raw quiet prompt"
    assert _session_keys(sync_redis, server_on_llama) == keys, "a raw quiet prompt creates no session"


@pytest.mark.llm
@STREAMS
def test_risuai_conversation_on_the_real_model(server_on_llama: ServerB, stream: bool) -> None:
    risu = RisuAI(server_on_llama.model, api_key="sk-risu", stream=stream, max_tokens=REAL_MAX_TOKENS,
                  main_prompt="Write Mia's next reply in a fictional chat.", use_say_nothing=False)
    with _http(server_on_llama) as http:
        first = _ok(post(http, risu.send("Hello Mia! Busy day?" if stream else "Hello Mia! Is it busy?")))
        session_id, auth = first.session_id, _auth(risu.call([]))
        risu.receive(first.text)
        second = _ok(post(http, risu.send("What is your best drink?")))
        risu.receive(second.text)
        rerolled = _ok(post(http, risu.reroll()))
        risu.receive(rerolled.text)
        view = _view(http, session_id, auth)
        assert _alternatives(view["messages"][-1]) == [_norm(second.text), _norm(rerolled.text)]
        more = _ok(post(http, risu.continue_()))
        view = _view(http, session_id, auth)
    assert [role for role, _ in _transcript(view)] == ["user", "assistant"] * 2
    assert _norm(view["messages"][-1]["content"]) in _joins(rerolled.text, more.text)
    _no_nudge_stored(view)


@pytest.mark.llm
@STREAMS
def test_open_webui_conversation_on_the_real_model(server_on_llama: ServerB, stream: bool) -> None:
    owui = OpenWebUI(server_on_llama.model, api_key="sk-owui", stream=stream, max_tokens=REAL_MAX_TOKENS)
    with _http(server_on_llama) as http:
        first = _ok(post(http, owui.send("Hey! Do you like rain?" if stream else "Hey! Do you like coffee?")))
        session_id, auth = first.session_id, _auth(owui.call())
        owui.receive(first.text)
        second = _ok(post(http, owui.send("Why?")))
        owui.receive(second.text)
        regenerated = _ok(post(http, owui.regenerate()))
        owui.receive(regenerated.text)
        owui.receive(_ok(post(http, owui.send("Nice. Bye!"))).text)
        view = _view(http, session_id, auth)
    assert _transcript(view) == _lines(owui.chat)
    assert _alternatives(view["messages"][3]) == [_norm(second.text), _norm(regenerated.text)]
