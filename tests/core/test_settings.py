import pytest

from roleplay.core.settings import ConfigurationError, Settings, get_settings


def test_defaults_follow_the_design_document(settings_env) -> None:
    settings = get_settings()
    assert settings.llm_service == "vllm"
    assert settings.max_concurrent_users == 20
    assert settings.active_ttl_s == 3600
    assert settings.max_context_tokens == 4096
    assert settings.recent_turns_to_keep == 18
    assert settings.summary_threshold == 0.8
    assert settings.default_model == "gemma-3-27b-it"


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MAX_CONCURRENT_USERS", "many"), ("LLM_SERVICE", "openai"), ("SUMMARY_THRESHOLD", "1.5"),
     ("SESSION_TTL_S", "-1"), ("ACTIVE_TTL_S", "10"), ("MODEL_METADATA", "{gemma: 8192}")],
)
def test_bad_value_fails_with_the_variable_named(settings_env, variable: str, value: str) -> None:
    settings_env(**{variable: value})
    with pytest.raises(ConfigurationError) as failure:
        get_settings()
    assert variable in str(failure.value)
    assert repr(value) in str(failure.value)


def test_blank_url_counts_as_unset(settings_env) -> None:
    settings_env(LLM_BASE_URL="  ")
    assert get_settings().llm_base_url is None


def test_redis_falls_back_to_the_design_default_when_unset() -> None:
    assert Settings(redis_url=None).effective_redis_url == "redis://localhost:6379/0"


def test_blank_choice_counts_as_unset(settings_env) -> None:
    settings_env(TTS_SERVICE="", SUMMARIZER_FUNCTION=" ")
    assert get_settings().tts_service is None
    assert get_settings().summarizer_function is None


def test_blank_model_metadata_is_none(settings_env) -> None:
    settings_env(MODEL_METADATA="")
    assert get_settings().model_metadata == {}
