"""Server B configuration, read once from the environment.

Defaults follow the design document. A bad value stops the process at start with a
message naming the environment variable, instead of surfacing later as a 500.

Read as pydantic-settings read it (`BaseSettings`, case-insensitive names, no .env file,
no value decoded as JSON before validation), by `_environment` below: importing
pydantic-settings cost every function's cold start ~14 ms (issue 30), for a reading
this small. tests/deploy/test_settings_environment.py holds what it reads.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from functools import cached_property, lru_cache
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


def _comma_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class ConfigurationError(RuntimeError):
    """The environment holds a value Server B cannot run with."""


class Settings(BaseModel):
    """Every field is read from the environment variable of its name in capitals (any
    case), or of its `validation_alias`es in order; values given to the constructor win."""

    model_config = ConfigDict(extra="ignore", validate_default=True)

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**_environment(), **_given(values)})

    redis_url: str | None = Field(
        default=None,
        description="Redis for all session state. Unset: the local runner embeds one; "
        f"a handler falls back to {DEFAULT_REDIS_URL}.",
    )
    redis_key_prefix: str = Field(default="rp:", min_length=1, max_length=32,
                                  pattern=r"^[^{}]+$")
    redis_cluster: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Whether REDIS_URL is a Redis Cluster (ElastiCache Serverless is one): "
        "`auto` asks the server once per process (INFO cluster); `on`/`off` skip the probe.")
    redis_max_connections: int = Field(default=64, ge=1, le=10_000)
    redis_pool_timeout_s: float = Field(
        default=5.0, gt=0, description="How long a request waits for a free pooled connection.")

    llm_service: Literal["vllm", "ollama"] = "vllm"
    llm_base_url: str | None = None
    llm_connect_timeout_s: float = Field(default=3.0, gt=0)
    llm_read_timeout_s: float = Field(default=120.0, gt=0)
    default_model: str = Field(default="gemma-3-27b-it", min_length=1)
    model_metadata: dict[str, dict[str, object]] = Field(default_factory=dict)

    @field_validator("model_metadata", mode="before")
    @classmethod
    def _metadata_object(cls, value: object) -> object:
        """A JSON object; blank is none (a template's empty parameter)."""
        if not isinstance(value, str):
            return value
        if not value.strip():
            return {}
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError('not JSON: give an object such as {"gemma-3-27b-it": '
                             '{"context_length": 131072}}') from None

    tts_base_url: str | None = None
    voices_file: str | None = None

    max_concurrent_users: int = Field(default=20, ge=1)
    active_ttl_s: int = Field(
        default=3600, ge=60, validation_alias=AliasChoices("ACTIVE_TTL_S", "SESSION_TTL_S"),
        description="A user holds a place under MAX_CONCURRENT_USERS until this passes without a "
        "request from them (SESSION_TTL_S, its old name, is still read). Conversations are kept "
        "by CONVERSATION_RETENTION_DAYS, not by this.")
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

    # --- memory: past scenes recalled by relevance (issue 28) ---
    memory_tokens: int = Field(
        default=300, ge=0, le=4096, description="The prompt's room for recalled episodes, "
        "after the summary; 0 turns memory off (no episodes are kept).")
    max_episodes: int = Field(
        default=400, ge=1, le=10_000, description="Episodes kept per conversation; past "
        "this the oldest are dropped first.")
    episode_messages: int = Field(
        default=4, ge=1, le=32, description="Messages per episode: the span one recall brings "
        "back.")
    embedding_model: str | None = Field(
        default=None, description="Unset: episodes are ranked lexically (BM25).")
    embedding_base_url: str | None = Field(
        default=None, description="Unset: the LLM's base URL (LLM_BASE_URL).")
    embedding_service: Literal["vllm", "ollama"] | None = Field(
        default=None, description="Unset: LLM_SERVICE. vllm is /v1/embeddings, ollama /api/embed.")
    embedding_timeout_s: float = Field(
        default=2.0, gt=0, le=60, description="A turn waits this long for its message's "
        "embedding, then ranks lexically.")
    # --- end of the memory settings ---

    # --- conversations that last: retention, hot and cold, the user's list (issue 31) ---
    conversation_retention_days: int = Field(
        default=90, ge=0, le=36_500, description="A conversation is kept this long after its "
        "last turn, hot or cold; 0 keeps it until deleted.")
    session_hot_ttl_s: int = Field(
        default=86400, ge=60, description="A conversation idle this long leaves Redis for the "
        "cold store (CONVERSATION_BUCKET, else files under DATA_DIR) and comes back on its next use.")
    conversation_bucket: str | None = Field(
        default=None, description="S3 bucket for cold conversations. Unset: files under "
        "DATA_DIR/conversations.")
    data_dir: str = Field(
        default="data", min_length=1, description="Local state: cold conversations live in "
        "DATA_DIR/conversations when CONVERSATION_BUCKET is unset.")
    archive_every_s: float = Field(
        default=300.0, gt=0, description="How often the local runner moves idle conversations "
        "out of Redis (deployed, a schedule invokes the summarizer function).")
    max_conversations: int = Field(
        default=1000, ge=1, le=100_000, description="Conversations one user may keep; a new one "
        "past this is 409 too_many_conversations.")

    @property
    def conversation_ttl_s(self) -> int:
        """How long a conversation's keys live after their last use: the retention, or (0)
        a century, which is until deleted."""
        days = self.conversation_retention_days or 36_500
        return days * 86_400
    # --- end of the conversation settings ---

    # --- one turn at a time per session, and retries (sessions, issue 13) ---
    turn_wait_s: float = Field(
        default=10, ge=0, le=60, description="How long a turn waits for another turn on its "
        "session to finish before answering 409 turn_in_progress.")
    turn_lease_s: int = Field(
        default=10, ge=2, description="A turn's hold on its session, renewed every "
        "third of it while the turn lives (waiting on the upstream or streaming); a turn whose "
        "process died, or whose lease a Redis restart kept, frees its session within this.")
    turn_retry_window_s: int = Field(
        default=60, ge=0, description="A lone message equal to the last answered one, sent "
        "within this, is a retry of that turn (its stored reply is returned).")
    # --- end of the session turn settings ---

    # --- conversation control: pins (issue 18) ---
    max_pins: int = Field(default=5, ge=0, le=20, description="Facts a session may pin into "
                          "its system prompt.")
    pin_max_chars: int = Field(default=200, ge=10, le=2000)
    # --- end of the conversation control settings ---

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

    # one GPU, several models (issue 21)
    gpu_modes: str | None = Field(
        default=None, description="Path of a YAML/JSON file, or inline JSON: the GPU's modes and "
        "how each service is loaded and released. Unset: coresident, nothing switches.")
    gpu_min_residency_s: float = Field(
        default=15.0, ge=0, description="A mode stays at least this long before another replaces it.")
    gpu_switch_drain_s: float = Field(
        default=30.0, gt=0, description="How long a switch waits for the old mode's requests to end.")
    gpu_switch_wait_s: float = Field(
        default=60.0, gt=0, description="How long a request waits for its model; then 503 gpu_busy.")
    gpu_action_timeout_s: float = Field(default=120.0, gt=0)
    gpu_lease_ttl_s: float = Field(
        default=900.0, ge=10, description="A request's hold on its mode expires after this (a crashed "
        "holder cannot pin a mode).")

    # operating it (issue 20)
    log_requests: bool = Field(default=True, description="One JSON line per request on stdout.")
    log_content: bool = Field(default=False, description="Put message text in the request log lines.")
    metrics_enabled: bool = Field(
        default=True, description="Prometheus metrics (runner: GET /metrics), EMF lines on Lambda.")
    metrics_token: SecretStr | None = Field(
        default=None, description="Bearer token for GET /metrics; needed when sign-in is on.")
    user_rpm: int = Field(
        default=0, ge=0, description="Requests that generate or speak (turns of every kind, "
        "/v1 completions, speech) per user per minute; 0 = off.")
    user_tokens_per_day: int = Field(
        default=0, ge=0, description="Prompt + completion tokens per user per UTC day; 0 = off.")
    user_tts_seconds_per_day: float = Field(
        default=0, ge=0, description="Seconds of speech per user per UTC day; 0 = off.")
    llm_base_urls: str | None = Field(
        default=None, description="Comma-separated LLM upstreams, tried in order (failover); "
        "unset: LLM_BASE_URL alone.")
    tts_base_urls: str | None = Field(
        default=None, description="Comma-separated GPT-SoVITS upstreams, tried in order.")
    breaker_failures: int = Field(
        default=5, ge=1, description="Failures in a row that open an upstream's circuit breaker.")
    breaker_cooloff_s: float = Field(default=30.0, gt=0, description="How long an open breaker stays open.")
    breaker_min_users: int = Field(
        default=2, ge=1, description="Distinct users among the failures in a row that open a "
        "breaker on timeouts: one user's slow requests never open it for everyone.")

    # browsers (issue 15)
    cors_allow_origins: list[str] = Field(
        default_factory=list,
        description="Origins (`https://app.example.com`) whose pages may call the API, with "
        "cookies; comma-separated or a JSON list. Empty: same origin only.",
    )

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _origin_list(cls, value: object) -> object:
        """A JSON list or comma-separated; an origin has no path, so a trailing `/` goes."""
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else text.split(",")
        if not isinstance(value, list):
            return value
        origins = [o.strip().rstrip("/") for o in value if isinstance(o, str) and o.strip()]
        for origin in origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], or *)")
        return origins

    # character cards (issue 17)
    card_max_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024,
        description="Largest card file (PNG, JSON, CHARX) or lorebook that import accepts, and "
        "the most a CHARX's card.json may inflate to.")
    card_max_depth: int = Field(
        default=32, ge=4, le=256, description="Deepest nesting of objects and lists a card "
        "(or lorebook) may hold; deeper is refused at import with 400.")
    max_characters_per_user: int = Field(
        default=500, ge=0, description="Characters one user may own; 0 = no bound.")
    max_card_bytes_per_user: int = Field(
        default=64 * 1024 * 1024, ge=0, description="Stored character bytes (cards and their "
        "images) one user may own; 0 = no bound.")
    multipart_max_parts: int = Field(
        default=16, ge=1, le=1000, description="Most parts an upload's multipart body may hold.")

    # SillyTavern chat files (issue 27)
    sillytavern_import_max_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024,
        description="Largest SillyTavern chat file (JSONL) that session import accepts.")
    sillytavern_import_max_messages: int = Field(
        default=20_000, ge=1, description="Most messages one imported chat file may hold.")
    sillytavern_import_max_line_bytes: int = Field(
        default=1024 * 1024, ge=1024,
        description="Longest line (one message with all its swipes) of an imported chat file.")

    # OpenAI-compatible API under /v1 (issue 19)
    api_keys_file: str | None = Field(
        default=None, description="JSON or YAML object mapping the SHA-256 hex digest of each "
        "static API key to the user id it signs in as (for tools that cannot hold a JWT)."
    )
    api_keys_arn: str | None = Field(
        default=None, description="The same mapping as a Secrets Manager secret or SSM "
        "SecureString (the deployed stack); read on first use."
    )

    # anonymous identity, bounded model names, speech per user (issue 13)
    anon_cookie_name: str = Field(
        default="rp_anon", pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="The signed cookie naming an anonymous client (sign-in off).")
    anon_cookie_secret: SecretStr | None = Field(
        default=None, description="HMAC key of that cookie. Unset: derived from JWT_SECRET, "
        "else a random key made once and kept in Redis, so every instance agrees.")
    trusted_proxies: str = Field(
        default="", description="Comma-separated CIDRs whose X-Forwarded-For is believed "
        "(a reverse proxy in front of the runner); unset: the peer address is the client.")
    allowed_models: str = Field(
        default="", description="Comma-separated model names accepted besides those the LLM "
        "upstream lists and DEFAULT_MODEL / SUMMARY_MODEL, also while its list cannot be read.")
    tts_max_concurrent_per_user: int = Field(
        default=2, ge=1, description="Speech syntheses one user may run at once, across instances.")
    tts_busy_wait_s: float = Field(
        default=2.0, ge=0, le=60, description="How long a call past that bound waits for a "
        "free place before it is 429 `tts_busy`.")
    anon_cookies_per_address: int = Field(
        default=4, ge=1, description="Anonymous cookies one address may use per SESSION_TTL_S; "
        "past it, a new cookie from that address is refused: its requests count as the "
        "address itself (its place, quota and sessions).")
    audio_link_ttl_s: int = Field(
        default=3600, ge=60, description="How long a signed audio URL (local audio store) "
        "stays valid.")

    @field_validator("anon_cookie_secret")
    @classmethod
    def _blank_cookie_secret_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: str) -> str:
        for item in _comma_list(value):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
        return value

    @cached_property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(item, strict=False)
                     for item in _comma_list(self.trusted_proxies))

    @cached_property
    def allowed_model_names(self) -> frozenset[str]:
        return frozenset(_comma_list(self.allowed_models))
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
                     "jwt_audience", "jwt_issuer", "jwt_secret_arn", "tts_service", "api_keys_file",
                     "api_keys_arn", "llm_base_urls", "tts_base_urls", "metrics_token", "gpu_modes",
                     "embedding_model", "embedding_base_url", "embedding_service", "conversation_bucket",
                     mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """`NAME=` (as templates and .env files write an unset value) means unset."""
        return (value.strip() or None) if isinstance(value, str) else value

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or DEFAULT_REDIS_URL


@lru_cache(maxsize=1)
def _names() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Per field: the key validation takes it by (its first alias, else its name) and the
    names, lower-case, it is read by, in order of preference."""
    names = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = [str(choice) for choice in alias.choices] if isinstance(alias, AliasChoices) else []
        read_as = tuple(dict.fromkeys(choice.lower() for choice in [*choices, name]))
        names.append((choices[0] if choices else name, read_as))
    return tuple(names)


def _environment() -> dict[str, str]:
    """{key: value} of the fields the environment sets (a variable's name in any case)."""
    found = {name.lower(): value for name, value in os.environ.items()}
    values: dict[str, str] = {}
    for key, read_as in _names():
        name = next((name for name in read_as if name in found), None)
        if name is not None:
            values[key] = found[name]
    return values


def _given(values: dict[str, Any]) -> dict[str, Any]:
    """Values given to the constructor under their fields' keys (a name in any case)."""
    keys = {name: key for key, read_as in _names() for name in read_as}
    return {keys.get(name.lower(), name): value for name, value in values.items()}


_OLD_NAMES = {"ACTIVE_TTL_S": "ACTIVE_TTL_S (or its old name SESSION_TTL_S)"}


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        variable = "_".join(str(part) for part in item["loc"]).upper()
        variable = _OLD_NAMES.get(variable, variable)
        lines.append(f"{variable}={item.get('input')!r}: {item['msg']}")
    return "invalid environment: " + "; ".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; `get_settings.cache_clear()` re-reads the environment."""
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigurationError(_describe(error)) from None
