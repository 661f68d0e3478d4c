"""The chat API's request and response, as in the design document (4.4, 5.4, 5.5)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from roleplay.characters.model import ID_PATTERN, Persona, Scenario
from roleplay.characters.user_persona import UserPersona
from roleplay.llm.sampling import Sampling, SamplingKnobs

SessionId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]


class MessageIn(BaseModel):
    """A message as a client holds it: other keys its state carries are ignored."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["user", "assistant", "system"]
    content: Annotated[str, StringConstraints(max_length=16000)]
    id: Annotated[str, StringConstraints(max_length=100)] | None = Field(
        default=None, description="The id the server gave this message (matches a re-sent "
        "history exactly); any other id is ignored and the message is matched by content.")
    timestamp: float | str | None = Field(
        default=None, description="Accepted and ignored: the server stamps its own time.")

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


StopText = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class TurnOptions(SamplingKnobs):
    """How a turn generates and speaks: declared once for `/api/chat`, regenerate and
    continue (`control.models.GenerateRequest`), and filled by the OpenAI API's mapping."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.7
    max_tokens: Annotated[int, Field(ge=1, le=8192)] = 512
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stop: Annotated[list[StopText], Field(max_length=16)] | None = Field(
        default=None, description="Strings that end the reply where they appear.")
    stream: bool = False
    tts_enabled: bool = True
    tts_mode: Literal["realtime", "delayed", "on_click"] = "realtime"
    tts_delay_ms: Annotated[int, Field(ge=0, le=60000)] = 0
    """The frontend's own playback delay, accepted and not acted on."""
    tts_streaming_mode: Annotated[int, Field(ge=0, le=3)] = 0

    def sampling(self) -> Sampling:
        """Knobs left unset (None) are not sent: the upstream's defaults apply."""
        return self.sampling_with(temperature=self.temperature, max_tokens=self.max_tokens,
                                  top_p=self.top_p, stop=tuple(self.stop or ()))


class ChatRequest(TurnOptions):
    messages: Annotated[list[MessageIn], Field(max_length=400)] = Field(default_factory=list)
    persona: Persona | None = None
    session_id: SessionId | None = None
    character_id: Annotated[str, StringConstraints(pattern=ID_PATTERN)] | None = None
    scenario: Scenario | None = None
    greeting_index: Annotated[int, Field(ge=0, le=1000)] | None = Field(
        default=None, description="The opening turn (no messages): which of the character's "
        "greetings opens it (0 is `first_message`, then `alternate_greetings`).")
    user_persona: UserPersona | None = Field(
        default=None, description="Who the user plays this turn, instead of their stored persona.")

    @field_validator("character_id", mode="before")
    @classmethod
    def _empty_character_is_none(cls, value: object) -> object:
        return None if value == "" else value


class ChatUsage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    estimated: bool = Field(
        default=False, description="True when the upstream did not report a count and Server B "
        "estimated it (prompt: its own plan; completion: the reply's cl100k tokens).")


class TtsError(BaseModel):
    """Why a reply has no audio; the reply itself stands."""

    code: str
    message: str


class ReplyAlternative(BaseModel):
    """One version of a regenerated reply."""

    index: int
    content: str
    selected: bool


class ChatReply(BaseModel):
    content: str
    usage: ChatUsage
    session_id: str
    model: str
    audio_url: str | None = Field(
        default=None, description="`realtime`: the spoken reply; `delayed`: where it will be "
        "(answers 202 until ready); null for `on_click`, with TTS off, or when speech failed.")
    tts_error: TtsError | None = None
    context_summarized: bool = False
    dropped_messages: int = Field(
        default=0, description="Oldest messages left out of this prompt (never out of the "
        "transcript) because even a summary could not make the conversation fit.")
    summary_scheduled: bool = Field(
        default=False, description="This turn passed the summary threshold and started a "
        "summary in the background; a later turn's prompt will use it.")
    finish_reason: str | None = None
    cut: bool = False
    greetings: list[str] | None = Field(
        default=None, description="The opening turn: every greeting the character has, so a "
        "client can offer them as swipes (`greeting_index` picks one).")
    greeting_index: int | None = None
    message_id: str | None = Field(
        default=None, description="The reply's id in the transcript; null if it was not "
        "stored (the session was deleted while it was generated).")
    user_message_id: str | None = Field(
        default=None, description="The id of the user message this reply answers.")
    replayed: bool = Field(
        default=False, description="A retry of a turn already answered: this is the reply "
        "stored then, not a new generation.")
    alternatives: list[ReplyAlternative] | None = Field(
        default=None, description="`regenerate` and `select`: every version of this reply.")
    memories_recalled: list[str] | None = Field(
        default=None, description="The episodes of this conversation's memory that the "
        "prompt brought back (`GET .../memories` lists them); none: nothing was recalled.")


class SessionTokens(BaseModel):
    """Token figures in local (cl100k) tokens; `ratio` converts them to the model's."""

    transcript: int
    summary: int
    after_watermark: int
    ratio: float
    max_context: int = Field(description="The context a turn is planned in, in the model's tokens: "
                             "MAX_CONTEXT_TOKENS, or less if the upstream runs with less.")


class SessionView(BaseModel):
    session_id: str
    character_id: str | None
    created_at: float | None
    user_turns: int
    message_count: int
    messages: list[dict[str, object]]
    summary: str | None = None
    summary_upto: int = Field(default=-1, description="Index of the last message the summary "
                              "covers; -1 when there is no summary.")
    summary_at: float | None = None
    summary_error: str | None = None
    pins: list[dict[str, str]] = Field(default_factory=list, description="Facts pinned into "
                                       "the system prompt ({id, text}).")
    tokens: SessionTokens
    lorebook: dict[str, object] | None = Field(
        default=None, description="The character's lorebook entries that fired on the last "
        "turn (`fired`), and those the token budget left out (`over_budget`).")
    episodes: int = Field(default=0, description="Episodes kept in the conversation's memory.")
    memories_recalled: list[str] = Field(
        default_factory=list, description="The episodes the last turn's prompt recalled.")


class MemoryView(BaseModel):
    """One episode: a short span of turns that left the window, as the prompt recalls it."""

    id: str
    first: int = Field(description="Transcript index of its first message.")
    last: int = Field(description="Transcript index of its last message.")
    text: str
    tokens: int
    created_at: float
    last_recalled_at: float | None = None
    embedded: bool = Field(description="Whether the embedding model has made its vector.")


class MemoriesView(BaseModel):
    session_id: str
    episodes: list[MemoryView]
    recalled: list[str] = Field(description="The episodes the last turn's prompt recalled.")


class MemoryForgotten(BaseModel):
    session_id: str
    id: str
    forgotten: bool


class ConversationItem(BaseModel):
    session_id: str
    character_id: str | None = None
    title: str = Field(description="Set by PATCH, else drawn from the first user message.")
    preview: str | None = Field(default=None, description="The start of the last message.")
    message_count: int
    created_at: float | None = None
    updated_at: float = Field(description="The last turn, epoch seconds.")
    state: Literal["hot", "cold"] = Field(
        description="hot: in Redis; cold: moved to the cold store, brought back on its next use.")


class ConversationPage(BaseModel):
    items: list[ConversationItem]
    next_cursor: str | None = None


class ConversationPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class ConversationRenamed(BaseModel):
    session_id: str
    title: str


class SessionEnded(BaseModel):
    session_id: str
    ended: bool


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: SessionId | None = None


class SlotReleased(BaseModel):
    released: bool
