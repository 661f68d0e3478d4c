"""Server B configuration, read once from the environment.

Defaults follow the design document. A bad value stops the process at start with a
message naming the environment variable, instead of surfacing later as a 500.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, ValidationError, field_validator
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

    characters_table: str | None = None
    health_timeout_s: float = Field(default=1.0, gt=0, le=10)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)

    @field_validator("llm_base_url", "tts_base_url", "redis_url", "characters_table", "voices_file")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

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
