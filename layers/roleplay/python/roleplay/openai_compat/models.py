"""OpenAI's request and response bodies, as far as Server B honours them.

Requests take every field SillyTavern, RisuAI and Open WebUI send: the sampling knobs
go to the upstream where it has them (`llm.sampling`, `llm.dialect`), a knob out of its
range is a 400 (never an upstream's error), and fields we do not use (`tools`,
`logprobs`, `name` on messages, anything unknown) are accepted and ignored, so a client
written for OpenAI is never refused for a knob it always sends. Limits are those of
`/api/chat`, so the same prompt cannot be bigger here than there.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from roleplay.llm.sampling import Sampling, SamplingKnobs

Content = Annotated[str, StringConstraints(max_length=16000)]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: Content


class InputMessage(BaseModel):
    """One message of the caller's history; `developer` is OpenAI's newer `system`."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: Content | Annotated[list[TextPart], Field(max_length=64)] | None = None
    name: Annotated[str, StringConstraints(max_length=256)] | None = None
    """Accepted and not used: SillyTavern names its example messages (`example_user`) and,
    with "names in completion", every message by its speaker."""

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""

    @property
    def plain_role(self) -> Literal["system", "user", "assistant"]:
        return "system" if self.role == "developer" else self.role


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(SamplingKnobs):
    model_config = ConfigDict(extra="ignore")

    model: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    messages: Annotated[list[InputMessage], Field(min_length=1, max_length=400)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1, le=8192)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=8192)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stop: (Annotated[str, StringConstraints(max_length=200)]
           | Annotated[list[Annotated[str, StringConstraints(max_length=200)]],
                       Field(max_length=16)] | None) = None
    n: int | None = None
    user: Annotated[str, StringConstraints(max_length=256)] | dict[str, Any] | None = None
    """OpenAI's end-user id; some UIs send an object here, whose `id` is used."""
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    """Accepted and ignored: answers carry `logprobs: null`, which SillyTavern reads as no
    token probabilities to show. (A character's reply comes out of Server B's turn, which
    keeps none; asking vLLM for them would only be half of it.)"""

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("only n=1 is supported: one reply per turn keeps one transcript")
        return value

    @property
    def end_user(self) -> str | None:
        if isinstance(self.user, dict):
            found = self.user.get("id") or self.user.get("email") or self.user.get("name")
            return str(found)[:256] if found else None
        return self.user or None

    @property
    def reply_tokens(self) -> int | None:
        """`max_completion_tokens` (OpenAI's current name) wins over `max_tokens`."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def stops(self) -> tuple[str, ...]:
        """The stop strings, empty ones left out (OpenAI allows four; SillyTavern sends more)."""
        given = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return tuple(stop for stop in given if stop)

    @property
    def wants_usage_chunk(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling(self) -> Sampling:
        """Everything a pass-through asks of the upstream; without `temperature` or a
        reply length, `/api/chat`'s defaults (`Sampling`'s)."""
        defaults = Sampling()
        return self.sampling_with(
            temperature=defaults.temperature if self.temperature is None else self.temperature,
            max_tokens=self.reply_tokens or defaults.max_tokens, top_p=self.top_p,
            stop=self.stops)


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt: int, completion: int) -> CompletionUsage:
        return cls(prompt_tokens=prompt, completion_tokens=completion,
                   total_tokens=prompt + completion)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    system_fingerprint: None = None


class ModelCard(BaseModel):
    """`GET /v1/models` entry; `name` and `metadata` are extras that UIs show."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    name: str | None = None
    metadata: dict[str, Any] | None = None


class ModelCardList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Annotated[str, StringConstraints(max_length=200)] = "tts-1"
    input: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    voice: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    response_format: str | None = Field(
        default=None, description="wav (also when omitted: it is what our engines make) or "
        "pcm (16-bit little-endian mono, the engine's sample rate in X-Sample-Rate).")
    speed: Annotated[float, Field(ge=0.25, le=4.0)] = 1.0


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    error: OpenAIErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIErrorBody}
    for status in (400, 401, 403, 404, 409, 413, 502, 503, 504)
}
