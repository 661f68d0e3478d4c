"""What a role-play client means by a request to `/v1/chat/completions`.

SillyTavern, RisuAI and Open WebUI re-send the whole conversation every time and mark
nothing; what they want is written into the messages. Read from their source:

- Continue: SillyTavern (`public/scripts/openai.js`, `continue_nudge_prompt`) ends the
  history with the partial reply and a system message `[Continue the following message.
  Do not include ANY parts of the original message. ...: <the partial reply>]`; with its
  `continue_prefill` option the partial reply is the last message. RisuAI
  (`src/ts/process/index.svelte.ts`) appends a system `[Continue the last response]`.
- Impersonate: SillyTavern's `impersonation_prompt`, a last system message `[Write your
  next reply from the point of view of <user>, ...]`: the answer is the user's line.
- Quiet prompts (its summarize extension, `generateQuietPrompt` / `generateRaw`): not
  streamed, the chat with a last system instruction, or just `[system, user prompt]`.

A prompt a user rewrote in the client's settings is not recognised: it is a turn.
"""

from __future__ import annotations

from typing import Literal

from roleplay.openai_compat.models import ChatCompletionRequest, InputMessage

Intent = Literal["turn", "continue", "impersonate", "quiet"]

CONTINUE_NUDGES = ("[Continue the following message.", "[Continue the last response]")
IMPERSONATE_NUDGE = "[Write your next reply from the point of view of "
NEW_CHAT_MARKER = "[Start a new Chat]"
"""SillyTavern's system message before the history of every chat request it builds."""


def _nudge(message: InputMessage) -> Intent | None:
    if message.plain_role != "system":
        return None
    text = message.text.strip()
    if any(nudge in text for nudge in CONTINUE_NUDGES):
        return "continue"
    if text.startswith(IMPERSONATE_NUDGE):
        return "impersonate"
    return None


def intent_of(body: ChatCompletionRequest) -> Intent:
    """The request's intent from its messages alone (a bare `[system, user]` prompt, which
    may also open a chat, is `quiet_pair` and decided against the session)."""
    last = body.messages[-1]
    nudge = _nudge(last)
    if nudge is not None:
        return nudge
    if last.plain_role == "assistant":
        return "continue"
    if last.plain_role == "system" and not body.stream:
        return "quiet"
    return "turn"


def is_quiet_pair(body: ChatCompletionRequest) -> bool:
    """`[system, user]` not streamed, without the marker SillyTavern puts before a chat's
    history. Any client's first turn may look so too; it is a quiet prompt when it names
    a session with another history (`chat_completions` reads it), or, naming none, when
    SillyTavern sent it (`sent_by_sillytavern`)."""
    roles = [m.plain_role for m in body.messages]
    return (not body.stream and roles == ["system", "user"]
            and NEW_CHAT_MARKER not in body.messages[0].text)


def sent_by_sillytavern(body: ChatCompletionRequest) -> bool:
    """SillyTavern's server forwards `logit_bias` on every request of the Custom source,
    `{}` when empty (`src/endpoints/backends/chat-completions.js`), which OpenAI's SDKs,
    Open WebUI and RisuAI (it drops an empty one) do not: so its raw prompts
    (`generateRaw`) are told from a first turn."""
    return "logit_bias" in body.model_fields_set


def without_nudge(body: ChatCompletionRequest) -> list[InputMessage]:
    """The messages before a trailing nudge (Continue's, impersonate's)."""
    if _nudge(body.messages[-1]) is not None:
        return list(body.messages[:-1])
    return list(body.messages)
