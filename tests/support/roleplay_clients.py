"""What SillyTavern, RisuAI and Open WebUI send to `POST /v1/chat/completions`, built as
they build it, so the tests replay the requests real clients make, not ones we imagine.

Each builder keeps the client's own view of the chat (its `chat` list: what it shows and
re-sends) and turns an action (send, swipe, regenerate, continue, impersonate, a quiet
prompt) into the exact body and headers of its request (`ClientCall`). Sources read:

- SillyTavern 1.12.6 (github.com/SillyTavern/SillyTavern at ba6f7b7, 2024-09-28):
  `public/scripts/openai.js` (`prepareOpenAIMessages`, `populateChatCompletion`,
  `populateChatHistory`, `populateDialogueExamples`, `parseExampleIntoIndividual`,
  `sendOpenAIRequest`, the defaults in `default_settings`), `public/scripts/PromptManager.js`
  (`promptManagerDefaultPromptOrder`), `public/script.js` (`Generate`, `generateRaw`,
  `cleanUpMessage`), `public/scripts/extensions/memory/index.js` (the summarize
  extension), `public/scripts/sse-stream.js` (`EventSourceStream`) and
  `src/endpoints/backends/chat-completions.js` (its server's `custom` source, which makes
  the actual HTTP request, and `makeRequest`'s 429 retries).
- RisuAI at 460ecae (github.com/kwaroran/RisuAI, 2025-12-31): `src/ts/process/index.svelte.ts`
  (`sendChat`: the prompt, `pushPrompts`, continue), `src/ts/process/request/openAI.ts`
  (`requestOpenAI`: body and headers), `src/ts/process/request/request.ts`
  (`requestChatDataMain`, `applyParameters`), `src/ts/storage/database.svelte.ts` (defaults)
  and `src/lib/ChatScreens/DefaultChatScreen.svelte` (`sendMain`, `reroll`).
- Open WebUI (github.com/open-webui/open-webui): `src/lib/components/chat/Chat.svelte`
  (`regenerateResponse` → `sendPrompt(userPrompt, userMessage.id)`: the history from the
  root down to the answered user message, sent again).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import Any, Literal

import httpx

Role = Literal["system", "user", "assistant"]
Kind = Literal["normal", "swipe", "regenerate", "continue", "impersonate", "quiet"]

CHAT_COMPLETIONS = "/v1/chat/completions"

# --- SillyTavern's default prompt strings (public/scripts/openai.js, `default_*`) ----------
SILLYTAVERN_MAIN_PROMPT = ("Write {{char}}'s next reply in a fictional chat between "
                           "{{charIfNotGroup}} and {{user}}.")
"""`default_main_prompt` (also `chatCompletionDefaultPrompts`' `main` in PromptManager.js)."""
SILLYTAVERN_NEW_CHAT_PROMPT = "[Start a new Chat]"
"""`default_new_chat_prompt`: a system message right before the chat history."""
SILLYTAVERN_NEW_EXAMPLE_CHAT_PROMPT = "[Example Chat]"
"""`default_new_example_chat_prompt`: a system message before each example dialogue."""
SILLYTAVERN_CONTINUE_NUDGE_PROMPT = (
    "[Continue the following message. Do not include ANY parts of the original message. "
    "Use capitalization and punctuation as if your reply is a part of the original message: "
    "{{lastChatMessage}}]")
"""`default_continue_nudge_prompt`, `{{lastChatMessage}}` being the partial reply, trimmed."""
SILLYTAVERN_IMPERSONATION_PROMPT = (
    "[Write your next reply from the point of view of {{user}}, using the chat history so far "
    "as a guideline for the writing style of {{user}}. Don't write as {{char}} or system. "
    "Don't describe actions of {{char}}.]")
"""`default_impersonation_prompt`."""
SILLYTAVERN_PERSONALITY_FORMAT = "[{{char}}'s personality: {{personality}}]"
SILLYTAVERN_SCENARIO_FORMAT = "[Circumstances and context of the dialogue: {{scenario}}]"
SILLYTAVERN_SUMMARY_PROMPT = (
    "Ignore previous instructions. Summarize the most important facts and events in the story "
    "so far. If a summary already exists in your memory, use that as a base and expand with "
    "new facts. Limit the summary to {{words}} words or less. Your response should include "
    "nothing but the summary.")
"""The summarize extension's `defaultPrompt` (extensions/memory/index.js), `{{words}}` 200."""
SILLYTAVERN_SUMMARY_WORDS = 200
SILLYTAVERN_429_RETRIES = 5
"""`makeRequest(config, response, request, retries = 5, timeout = 5000)`."""
SILLYTAVERN_429_FIRST_DELAY_S = 5.0
"""…then `timeout *= 2` before each further retry: 5, 10, 20, 40, 80 s."""

# --- RisuAI -------------------------------------------------------------------------------
RISU_CONTINUE_PROMPT = "[Continue the last response]"
"""`sendChat`: pushed to `postEverything` when continuing on gpt/claude/openrouter/reverse_proxy."""
RISU_SAYS_NOTHING = "*says nothing*"
"""`sendMain` (DefaultChatScreen.svelte): sent as the user's message when the input is empty
and the last message is not the user's, with `useSayNothing` (on by default); Continue
sends with an empty input, so by default it adds this message too."""


@dataclass(frozen=True)
class Line:
    """One message of a client's own chat."""

    role: Role
    content: str


@dataclass(frozen=True)
class ClientCall:
    """One HTTP request a client makes: its path under the server, headers and JSON body."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.body["messages"]
        return messages

    def content(self) -> bytes:
        """The body as `JSON.stringify` writes it (compact, keys in insertion order), so a
        re-send is the same bytes."""
        return json.dumps(self.body, separators=(",", ":"), ensure_ascii=False).encode()


def _macros(text: str, values: dict[str, str]) -> str:
    """SillyTavern's `substituteParams` for the macros used here ({{char}}, {{user}}, …)."""
    for name, value in values.items():
        literal = value.replace("\\", "\\\\")  # a replacement template, taken literally
        text = re.sub(r"\{\{" + re.escape(name) + r"\}\}", literal, text, flags=re.IGNORECASE)
    return text


def _example_dialogue(block: str, user: str, char: str) -> list[dict[str, str]]:
    """`parseExampleIntoIndividual` (openai.js) of one block: lines from `{user}:` on are
    the user's, from `{char}:` on the character's; the name is cut once and the text
    trimmed; the first line (the block's heading) is skipped."""
    dialogue: list[dict[str, str]] = []
    current: list[str] = []
    speaker: str | None = None

    def add(name: str, system_name: str) -> None:
        content = "\n".join(current).replace(name + ":", "", 1).strip()
        dialogue.append({"role": "system", "content": content, "name": system_name})
        current.clear()

    for line in block.split("\n")[1:]:
        if line.startswith(user + ":"):
            if speaker == "char":
                add(char, "example_assistant")
            speaker = "user"
        elif line.startswith(char + ":"):
            if speaker == "user":
                add(user, "example_user")
            speaker = "char"
        current.append(line)
    if speaker == "user":
        add(user, "example_user")
    elif speaker == "char":
        add(char, "example_assistant")
    return dialogue


@dataclass
class SillyTavern:
    """SillyTavern's Chat Completion source "Custom (OpenAI-compatible)" with default settings.

    The prompt is `prepareOpenAIMessages` (public/scripts/openai.js) in the prompt manager's
    default order (PromptManager.js `promptManagerDefaultPromptOrder`): main, world info
    (before), persona description, character description, personality, scenario, auxiliary
    (`nsfw`, empty), world info (after), example dialogues (`[Example Chat]` then system
    messages named `example_user` / `example_assistant`), `[Start a new Chat]` and the chat
    history (no names: `names_behavior` DEFAULT), post-history instructions (`jailbreak`,
    empty), then the control prompts (impersonation, quiet prompt). Empty messages are
    dropped (`ChatCompletion.getChat`); "squash system messages" is off by default.
    The body is what `src/endpoints/backends/chat-completions.js` forwards for the `custom`
    source; `stream_openai` is off by default.
    """

    model: str
    char_name: str = "Mia"
    user_name: str = "User"
    api_key: str | None = None
    """The Custom API key; without one its server sends `Bearer undefined`."""
    stream: bool = False
    max_tokens: int = 300
    temperature: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    top_p: float = 1.0
    seed: int = -1
    custom_stop: list[str] = field(default_factory=list)
    description: str = ""
    personality: str = ""
    scenario: str = ""
    persona_description: str = ""
    examples: str = ""
    """The card's `mes_example` (`<START>` blocks of `{{user}}: …` / `{{char}}: …` lines)."""
    greeting: str = ""
    """The card's `first_mes`: the chat's first message, the character's."""
    continue_prefill: bool = False
    """Continue by sending the partial reply as the last (assistant) message instead of the
    nudge (`oai_settings.continue_prefill`, off by default)."""
    chat: list[Line] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.greeting and not self.chat:
            self.chat.append(Line("assistant", self._sub(self.greeting)))

    def _sub(self, text: str, **extra: str) -> str:
        return _macros(text, {"char": self.char_name, "charIfNotGroup": self.char_name,
                              "user": self.user_name, **extra})

    # --- the prompt ---------------------------------------------------------------------

    def example_dialogues(self) -> list[list[dict[str, str]]]:
        """`parseMesExamples` (script.js) then `parseExampleIntoIndividual` (openai.js): each
        `<START>` block becomes messages named `example_user` / `example_assistant`; the
        block's first line (the heading) is skipped."""
        text = self._sub(self.examples)
        if not text or text == "<START>":
            return []
        if not text.startswith("<START>"):
            text = "<START>\n" + text.strip()
        return [_example_dialogue(f"{{Example Dialogue:}}\n{block.strip()}\n".replace("\r", ""),
                                  self.user_name, self.char_name)
                for block in re.split(r"<START>", text, flags=re.IGNORECASE)[1:]]

    def prompt(self, kind: Kind = "normal", *, quiet_prompt: str = "") -> list[dict[str, str]]:
        """The `messages` of a generation of type `kind` (`Generate(type)` in script.js)."""
        messages: list[dict[str, str]] = []

        def add(role: Role, content: str, name: str | None = None) -> None:
            if content:  # ChatCompletion.getChat skips empty messages
                messages.append({"role": role, "content": content, **({"name": name} if name else {})})

        add("system", self._sub(SILLYTAVERN_MAIN_PROMPT))
        add("system", self._sub(self.persona_description))
        add("system", self._sub(self.description))
        if self.personality:
            add("system", self._sub(SILLYTAVERN_PERSONALITY_FORMAT,
                                    personality=self._sub(self.personality)))
        if self.scenario:
            add("system", self._sub(SILLYTAVERN_SCENARIO_FORMAT, scenario=self._sub(self.scenario)))
        for dialogue in self.example_dialogues():
            add("system", self._sub(SILLYTAVERN_NEW_EXAMPLE_CHAT_PROMPT))
            for example in dialogue:
                add("system", example["content"], example["name"])
        history = list(self.chat)
        prefill = history.pop() if kind == "continue" and self.continue_prefill else None
        add("system", self._sub(SILLYTAVERN_NEW_CHAT_PROMPT))
        for line in history:
            add(line.role, line.content)
        if kind == "continue" and prefill is None:
            # cyclePrompt is the partial reply plus `continue_postfix` (a space), trimmed here
            add("system", self._sub(SILLYTAVERN_CONTINUE_NUDGE_PROMPT,
                                    lastChatMessage=self.chat[-1].content.strip()))
        if prefill is not None:  # the `continuePrefill` collection, added last (position -1)
            add("assistant", prefill.content)
        if kind == "impersonate":
            add("system", self._sub(SILLYTAVERN_IMPERSONATION_PROMPT))
        if quiet_prompt:
            add("system", self._sub(quiet_prompt))
        return messages

    def call(self, messages: list[dict[str, str]], *, kind: Kind = "normal") -> ClientCall:
        """`sendOpenAIRequest` then its server's `custom` branch: the body it forwards, in its
        key order, `undefined` fields left out as `JSON.stringify` does."""
        body: dict[str, Any] = {
            "messages": messages, "model": self.model, "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stream": self.stream and kind != "quiet",  # quiet generations never stream
            "presence_penalty": self.presence_penalty, "frequency_penalty": self.frequency_penalty,
            "top_p": self.top_p}
        if self.custom_stop:
            body["stop"] = list(self.custom_stop)
        body["logit_bias"] = {}  # always sent: the default bias preset is empty
        if self.seed >= 0:
            body["seed"] = self.seed
        return ClientCall(CHAT_COMPLETIONS, {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.api_key if self.api_key is not None else 'undefined'}"},
            body)

    # --- actions ------------------------------------------------------------------------

    def send(self, text: str) -> ClientCall:
        """The user sends a message: it joins the chat, then a `normal` generation."""
        self.chat.append(Line("user", text))
        return self.call(self.prompt("normal"))

    def receive(self, reply: str) -> None:
        """The reply joins the chat, after `cleanUpMessage` (see `clean`)."""
        self.chat.append(Line("assistant", self.clean(reply)))

    def swipe(self) -> ClientCall:
        """Swipe right past the last alternative: the last reply leaves the prompt (its swipe
        is being generated) and the request is the previous one again."""
        assert self.chat and self.chat[-1].role == "assistant", "a swipe needs a reply"
        self.chat.pop()
        return self.call(self.prompt("swipe"), kind="swipe")

    def regenerate(self) -> ClientCall:
        """Regenerate: the last reply is deleted, then the same request as the swipe."""
        assert self.chat and self.chat[-1].role == "assistant", "regenerate needs a reply"
        self.chat.pop()
        return self.call(self.prompt("regenerate"), kind="regenerate")

    def continue_(self) -> ClientCall:
        """Continue the last reply: the nudge after it, or (`continue_prefill`) the reply as
        the prompt's last message."""
        assert self.chat and self.chat[-1].role == "assistant", "continue needs a reply"
        return self.call(self.prompt("continue"), kind="continue")

    def continued(self, new_text: str) -> None:
        """What the client shows after a continue: the old text, `continue_postfix` (a space)
        unless it already ends with one, then the new text (`Generate`'s `continue_mag`)."""
        old = self.chat[-1].content
        self.chat[-1] = Line("assistant", old + ("" if old.endswith(" ") else " ")
                             + self.clean(new_text))

    def impersonate(self) -> ClientCall:
        """Impersonate: the user's next line is written into the input box, not the chat."""
        return self.call(self.prompt("impersonate"), kind="impersonate")

    def summarize_quiet(self) -> ClientCall:
        """The summarize extension on "Main API" with its default prompt builder:
        `generateQuietPrompt(prompt)`, a `quiet` generation whose last message is the
        summary prompt as a system message; never streamed."""
        prompt = _macros(SILLYTAVERN_SUMMARY_PROMPT, {"words": str(SILLYTAVERN_SUMMARY_WORDS)})
        return self.call(self.prompt("quiet", quiet_prompt=prompt), kind="quiet")

    def summarize_raw(self) -> ClientCall:
        """The summarize extension with the "raw" prompt builders: `generateRaw(rawPrompt,
        '', false, false, prompt)` sends `[system: prompt, user: the chat as "Name:\\ntext"
        blocks]`, the last message left out (`getRawSummaryPrompt`); never streamed."""
        names = {"user": self.user_name, "assistant": self.char_name}
        buffer = "\n\n".join(f"{names[line.role]}:\n{line.content}" for line in self.chat[:-1]
                             if line.role != "system" and line.content)
        prompt = _macros(SILLYTAVERN_SUMMARY_PROMPT, {"words": str(SILLYTAVERN_SUMMARY_WORDS)})
        raw = self._sub(buffer.strip()) + "\n"
        return self.call([{"role": "system", "content": self._sub(prompt).strip()},
                          {"role": "user", "content": raw.strip()}], kind="quiet")

    def clean(self, reply: str) -> str:
        """`cleanUpMessage`'s default steps that touch a chat completion: trailing spaces of
        each line dropped, cut at the user's name speaking (`\\n{user}:`), and the
        character's own `{char}:` prefixes removed."""
        text = re.sub(r"[^\S\r\n]+$", "", reply, flags=re.MULTILINE)
        if text.startswith(f"{self.user_name}:"):
            text = ""
        if f"\n{self.user_name}:" in text:
            text = text[:text.index(f"\n{self.user_name}:")]
        return re.sub(rf"(^|\n){re.escape(self.char_name)}:\s*", r"\1", text)


@dataclass
class RisuAI:
    """RisuAI's "Custom API" model (`reverse_proxy`, OpenAI-compatible format) with default
    settings.

    The prompt (`sendChat` in src/ts/process/index.svelte.ts, `formatingOrder` main,
    description, personaPrompt, chats, lastChat, jailbreak, lorebook, globalNote,
    authorNote): system parts, the chat, then `postEverything`. `pushPrompts` merges a system
    message into the previous one when both are system with the same `memo` and `name`
    (blank line between); chat messages carry their own `memo`, so only the system parts
    merge. The body is `requestOpenAI` (src/ts/process/request/openAI.ts): model,
    messages, max_tokens, stream, then `applyParameters` (request.ts) with the model's
    parameters at the database defaults; an empty `logit_bias` is removed.
    """

    model: str
    api_key: str = ""
    stream: bool = False
    """`useStreaming`. Off by default; a browser refuses it for localhost URLs anyway."""
    max_tokens: int = 500
    main_prompt: str = ""
    description: str = ""
    personality: str = ""
    scenario: str = ""
    persona_prompt: str = ""
    char_name: str = "Mia"
    use_say_nothing: bool = True
    """`useSayNothing`, on by default (database.svelte.ts)."""
    temperature: int = 80
    top_p: float = 1
    frequency_penalty: int = 70
    presence_penalty: int = 70
    repetition_penalty: float = 1
    min_p: float = 0
    top_a: float = 0
    top_k: int = 0
    chat: list[Line] = field(default_factory=list)

    def prompt(self, *, continuing: bool = False) -> list[dict[str, str]]:
        """`sendChat`'s `formated` for this chat; `continuing` adds `[Continue the last
        response]` last."""
        description = self.description
        if self.personality:
            description += f"\n\nDescription of {self.char_name}: {self.personality}"
        if self.scenario:
            description += f"\n\nCircumstances and context of the dialogue: {self.scenario}"
        parts: list[tuple[Role, str, bool]] = [
            ("system", self.main_prompt, True), ("system", description, True),
            ("system", self.persona_prompt, True),
            *((line.role, line.content, False) for line in self.chat)]
        if continuing:
            parts.append(("system", RISU_CONTINUE_PROMPT, True))
        formatted: list[dict[str, str]] = []
        mergeable = False
        for role, content, no_memo in parts:
            if not content.strip():
                continue
            if role == "system" and no_memo and mergeable and formatted[-1]["role"] == "system":
                formatted[-1]["content"] += "\n\n" + content
            else:
                formatted.append({"role": role, "content": content})
            mergeable = no_memo
        return formatted

    def call(self, messages: list[dict[str, str]]) -> ClientCall:
        body: dict[str, Any] = {"model": self.model, "messages": messages,
                                "max_tokens": self.max_tokens, "stream": self.stream,
                                "temperature": self.temperature / 100, "top_p": self.top_p,
                                "frequency_penalty": self.frequency_penalty / 100,
                                "presence_penalty": self.presence_penalty / 100,
                                "repetition_penalty": self.repetition_penalty,
                                "min_p": self.min_p, "top_a": self.top_a, "top_k": self.top_k}
        return ClientCall(CHAT_COMPLETIONS, {"Authorization": f"Bearer {self.api_key}",
                                             "Content-Type": "application/json"}, body)

    def send(self, text: str) -> ClientCall:
        self.chat.append(Line("user", text))
        return self.call(self.prompt())

    def receive(self, reply: str) -> None:
        self.chat.append(Line("assistant", reply))

    def reroll(self) -> ClientCall:
        """`reroll` (DefaultChatScreen.svelte): the character's trailing messages are popped
        back to the last user message, and the chat is sent again."""
        while self.chat and self.chat[-1].role != "user":
            self.chat.pop()
        return self.call(self.prompt())

    def continue_(self) -> ClientCall:
        """Continue (`sendMain(true)` with an empty input): with `useSayNothing`, the user's
        `*says nothing*` joins the chat first; then `[Continue the last response]`."""
        assert self.chat and self.chat[-1].role == "assistant", "continue needs a reply"
        if self.use_say_nothing:
            self.chat.append(Line("user", RISU_SAYS_NOTHING))
        return self.call(self.prompt(continuing=True))

    def continued(self, new_text: str) -> None:
        """The result is added to the last message's text with nothing between (`prefix +
        result` streamed, `beforeChat.data + mess` not): the reply's, or, with
        `useSayNothing`, the `*says nothing*` message's, which then becomes the
        character's (as RisuAI itself does)."""
        last = self.chat[-1]
        self.chat[-1] = Line("assistant", last.content + new_text)


@dataclass
class OpenWebUI:
    """Open WebUI with an OpenAI connection: the browser's `sendPrompt` (Chat.svelte) posts
    the history from the root to the message answered, streamed by default, and its
    backend forwards it with the connection's key as `Authorization: Bearer`. Only the
    fields every version sends are built (`stream`, `model`, `messages`, plus `max_tokens`
    when the model sets it): the backend's own payload shaping
    (`backend/open_webui/routers/openai.py`) was not read for this."""

    model: str
    api_key: str = ""
    stream: bool = True
    system: str = ""
    max_tokens: int | None = None
    """The model's "Max Tokens" advanced parameter: sent only when set (unset by default)."""
    chat: list[Line] = field(default_factory=list)

    def call(self) -> ClientCall:
        messages = ([{"role": "system", "content": self.system}] if self.system else [])
        messages += [{"role": line.role, "content": line.content} for line in self.chat]
        body: dict[str, Any] = {"stream": self.stream, "model": self.model, "messages": messages}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return ClientCall(CHAT_COMPLETIONS, {"Authorization": f"Bearer {self.api_key}",
                                             "Content-Type": "application/json"}, body)

    def send(self, text: str) -> ClientCall:
        self.chat.append(Line("user", text))
        return self.call()

    def receive(self, reply: str) -> None:
        self.chat.append(Line("assistant", reply))

    def regenerate(self) -> ClientCall:
        """`regenerateResponse`: `sendPrompt(userPrompt, userMessage.id)`, the history ending
        with the answered user message (the old reply stays a sibling, not in the prompt)."""
        while self.chat and self.chat[-1].role != "user":
            self.chat.pop()
        return self.call()


# --- reading answers as the clients do -----------------------------------------------------


class StreamReadError(AssertionError):
    """The stream breaks a rule the client's parser relies on."""


@dataclass
class StreamRead:
    text: str
    events: list[str]
    """Every event's data, `[DONE]` included."""
    leftover: str
    """What followed the last blank line: a client never reads it."""
    done: bool


def read_stream_as_sillytavern(raw: str) -> StreamRead:
    """`EventSourceStream` (public/scripts/sse-stream.js) and `sendOpenAIRequest`'s
    `streamData`: events split on blank lines (an unterminated last one is never read),
    `data:` lines joined, empty events skipped; `[DONE]` ends it; every other payload must
    be JSON (`JSON.parse`), a payload with `error` or `message` is an error
    (`tryParseStreamingError`), and `choices[0]` must be readable, so `choices` must be an
    array; the text is `choices[0].delta.content` (or `message.content`, `text`)."""
    blocks = re.split(r"\r\n\r\n|\r\r|\n\n", raw)
    leftover = blocks.pop()
    read = StreamRead(text="", events=[], leftover=leftover, done=False)
    for block in blocks:
        data_lines = []
        for line in re.split(r"\n|\r|\r\n", block):
            match = re.match(r"([^:]+)(?:: ?(.*))?", line)
            if match and match.group(1) == "data":
                data_lines.append(match.group(2) or "")
        if not data_lines:
            continue
        data = "\n".join(data_lines)
        read.events.append(data)
        if data == "[DONE]":
            read.done = True
            return read
        try:
            parsed = json.loads(data)
        except json.JSONDecodeError as error:
            raise StreamReadError(f"not JSON: {data!r}") from error
        if isinstance(parsed, dict) and (parsed.get("error") or parsed.get("message")):
            raise StreamReadError(f"an error event: {data!r}")
        choices = parsed.get("choices") if isinstance(parsed, dict) else None
        if not isinstance(choices, list):
            raise StreamReadError(f"an event without a choices array: {data!r}")
        if choices:
            choice = choices[0]
            read.text += ((choice.get("delta") or {}).get("content")
                          or (choice.get("message") or {}).get("content") or choice.get("text") or "")
    return read


@dataclass
class Answer:
    """What a client got back from one action."""

    status: int
    headers: httpx.Headers
    text: str
    """The reply's text as the client reads it ("" when it is an error)."""
    body: Any = None
    """The JSON of a non-streamed answer, or the stream as read."""
    statuses: list[int] = field(default_factory=list)
    """Every attempt's status (SillyTavern retries 429s)."""

    @property
    def session_id(self) -> str | None:
        session_id: str | None = self.headers.get("x-session-id")
        return session_id


def client_http(base_url: str, *, timeout_s: float = 120) -> httpx.Client:
    """An HTTP client that keeps no cookies, as the clients' own do not (SillyTavern's
    server fetches with node-fetch, RisuAI with `fetch` to another origin, Open WebUI with an
    aiohttp session per request): a signed-out caller stays the one anonymous client its
    address makes it, never the cookie's."""
    http = httpx.Client(base_url=base_url, timeout=timeout_s)
    http.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return http


def post(http: httpx.Client, call: ClientCall) -> Answer:
    """One attempt of `call`, read as SillyTavern's parser reads it (its rules are the
    strictest of the three: every client that reads OpenAI's stream reads what it reads)."""
    if call.stream:
        with http.stream("POST", call.path, headers=call.headers, content=call.content()) as response:
            raw = response.read().decode()
        if response.status_code != 200:
            return Answer(response.status_code, response.headers, "", _json(raw), [response.status_code])
        read = read_stream_as_sillytavern(raw)
        return Answer(response.status_code, response.headers, read.text, read, [response.status_code])
    response = http.post(call.path, headers=call.headers, content=call.content())
    body = _json(response.text)
    text = ""
    if response.status_code == 200 and isinstance(body, dict) and body.get("choices"):
        text = body["choices"][0]["message"]["content"] or ""
    return Answer(response.status_code, response.headers, text, body, [response.status_code])


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def sillytavern_post(http: httpx.Client, call: ClientCall, *,
                     first_delay_s: float = SILLYTAVERN_429_FIRST_DELAY_S,
                     before_retry: Callable[[int], None] | None = None) -> Answer:
    """SillyTavern's server making `call` (`makeRequest` in chat-completions.js): a
    non-streamed request answered 429 is sent again, identically, up to 5 times, waiting
    `first_delay_s` and doubling; a streamed one is never retried. `before_retry(n)` runs
    before retry n (1-based), after the wait."""
    answer = post(http, call)
    statuses = list(answer.statuses)
    delay = first_delay_s
    retries = SILLYTAVERN_429_RETRIES
    while not call.stream and answer.status == 429 and retries > 0:
        time.sleep(delay)
        delay *= 2
        if before_retry is not None:
            before_retry(SILLYTAVERN_429_RETRIES - retries + 1)
        retries -= 1
        answer = post(http, call)
        statuses += answer.statuses
    answer.statuses = statuses
    return answer
