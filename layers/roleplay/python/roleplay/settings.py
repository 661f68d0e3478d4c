"""Server B configuration, read once from the environment.

Defaults follow the design document. A bad value stops the process at start with a
message naming the environment variable, instead of surfacing later as a 500.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


class ConfigurationError(RuntimeError):
    """The environment holds a value Server B cannot run with."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    redis_url: str | None = Field(
        default=None,
        description="Redis for all session state. Unset: the local runner embeds one; "
        f"a handler falls back to {DEFAULT_REDIS_URL}.",
    )
    redis_key_prefix: str = Field(default="rp:", min_length=1, max_length=32)
    redis_max_connections: int = Field(default=64, ge=1, le=10_000)
    redis_pool_timeout_s: float = Field(
        default=5.0, gt=0, description="How long a request waits for a free pooled connection.")

    llm_service: Literal["vllm", "ollama"] = "vllm"
    llm_base_url: str | None = None
    llm_connect_timeout_s: float = Field(default=3.0, gt=0)
    llm_read_timeout_s: float = Field(default=120.0, gt=0)
    default_model: str = Field(default="gemma-3-27b-it", min_length=1)
    model_metadata: dict[str, dict[str, object]] = Field(default_factory=dict)

    tts_base_url: str | None = None
    voices_file: str | None = None

    max_concurrent_users: int = Field(default=20, ge=1)
    session_ttl_s: int = Field(default=3600, ge=60)
    max_context_tokens: int = Field(default=4096, ge=256)
    recent_turns_to_keep: int = Field(default=18, ge=2)
    summary_threshold: float = Field(default=0.8, gt=0, le=1)
    max_turns: int = Field(default=0, ge=0)
    persona_language: Literal["ko", "en"] = "ko"

    summary_model: str | None = Field(default=None, description="Unset: the chat's model.")
    summary_language: Literal["ko", "en"] = "ko"
    summary_max_tokens: int = Field(default=400, ge=32, le=4096)
    summary_input_tokens: int = Field(
        default=1536, ge=128, description="At most this much transcript is folded per pass."
    )
    summary_lock_ttl_s: int = Field(default=180, ge=5)
    summary_retry_after_s: int = Field(default=30, ge=0)
    summarizer_function: str | None = Field(
        default=None, description="Lambda to invoke asynchronously; unset: a background task."
    )
    speech_function: str | None = Field(
        default=None, description="Lambda (the TTS function) that speaks `delayed` TTS replies "
        "asynchronously; unset: a background task."
    )

    characters_table: str | None = None
    health_timeout_s: float = Field(default=1.0, gt=0, le=10)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)

    # users and auth (issue 5)
    jwt_secret: SecretStr | None = Field(
        default=None, description="HS256 key of the app's login tokens. Unset: everyone is anonymous."
    )
    jwt_secret_arn: str | None = Field(
        default=None, description="Secrets Manager secret or SSM SecureString holding the key "
        "(the deployed stack); read on first use."
    )
    jwt_cookie_name: str = Field(default="access_token", min_length=1)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None

    @field_validator("jwt_secret")
    @classmethod
    def _blank_secret_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        # Kept byte for byte otherwise: stripping would change the key.
        return value if value is not None and value.get_secret_value().strip() else None

    # speech (issue 6)
    tts_service: Literal["gpt_sovits", "espeak"] | None = Field(
        default=None,
        description="Unset: GPT-SoVITS when TTS_BASE_URL is set, else the embedded eSpeak NG.",
    )
    tts_connect_timeout_s: float = Field(default=3.0, gt=0)
    tts_read_timeout_s: float = Field(default=60.0, gt=0)
    tts_lock_timeout_s: float = Field(default=60.0, gt=0)
    tts_max_chars: int = Field(default=1000, ge=1)
    tts_strip_directions: bool = Field(
        default=True, description="Leave role-play stage directions (*waves*, (smiles)) unspoken."
    )
    audio_dir: str = Field(default="data/audio", min_length=1)
    audio_bucket: str | None = None
    audio_ttl_s: int = Field(default=86400, ge=1)

    # upstream limits and probes (issue 16)
    llm_context_length: int | None = Field(
        default=None, ge=256, description="The context the LLM server runs with, for a server "
        "that cannot say (llama-cpp-python's; the local runner sets it to its --n_ctx). Unset: "
        "read from the upstream (vLLM /v1/models, llama.cpp /props, Ollama /api/show).")
    exact_count_margin: float = Field(
        default=0.1, ge=0, le=0.5, description="A prompt estimated within this fraction of its "
        "budget is counted by the upstream's own tokenizer before it is sent.")
    ollama_keep_alive: str = Field(
        default="30m", min_length=1, description="How long Ollama keeps the model loaded after "
        "a request (its keep_alive: a duration such as 30m, or -1 for ever).")
    ollama_safety_margin: float = Field(
        default=0.05, ge=0, le=0.5, description="Ollama has no tokenizer endpoint: prompts are "
        "planned this fraction below num_ctx.")

    @field_validator("llm_context_length", mode="before")
    @classmethod
    def _blank_length_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


    @field_validator("llm_base_url", "tts_base_url", "redis_url", "characters_table", "voices_file",
                     "audio_bucket", "summary_model", "summarizer_function", "speech_function",
                     "jwt_audience", "jwt_issuer", "jwt_secret_arn", "tts_service", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """`NAME=` (as templates and .env files write an unset value) means unset."""
        return (value.strip() or None) if isinstance(value, str) else value

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or DEFAULT_REDIS_URL


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        variable = "_".join(str(part) for part in item["loc"]).upper()
        lines.append(f"{variable}={item.get('input')!r}: {item['msg']}")
    return "invalid environment: " + "; ".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; `get_settings.cache_clear()` re-reads the environment."""
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigurationError(_describe(error)) from None
