"""Settings read from a Lambda's environment as pydantic-settings read them (issue 30
dropped that import from every cold start): the variable of a field's name in any case,
aliases in order, constructor values first, JSON and comma lists from the raw text."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from roleplay.core.settings import ConfigurationError, Settings, get_settings


def test_a_variable_is_read_in_any_case(settings_env: Callable[..., None]) -> None:
    settings_env(llm_base_url="http://lower:1", Max_Context_Tokens="5000", LOG_REQUESTS="false")
    settings = get_settings()
    assert settings.llm_base_url == "http://lower:1"
    assert settings.max_context_tokens == 5000
    assert settings.log_requests is False


def test_the_new_name_wins_over_the_old_and_errors_name_both(
        settings_env: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> None:
    settings_env(SESSION_TTL_S="100", ACTIVE_TTL_S="200")
    assert get_settings().active_ttl_s == 200
    monkeypatch.delenv("ACTIVE_TTL_S")
    monkeypatch.delenv("SESSION_TTL_S")
    settings_env(session_ttl_s="120")
    assert get_settings().active_ttl_s == 120
    settings_env(session_ttl_s="-1")
    with pytest.raises(ConfigurationError, match=r"ACTIVE_TTL_S \(or its old name SESSION_TTL_S\)='-1'"):
        get_settings()


def test_constructor_values_win_by_name_or_alias_in_any_case(settings_env: Callable[..., None]) -> None:
    settings_env(MAX_CONTEXT_TOKENS="9999", ACTIVE_TTL_S="300")
    assert Settings(max_context_tokens=4096).max_context_tokens == 4096
    assert Settings(MAX_CONTEXT_TOKENS=5000).max_context_tokens == 5000
    assert Settings().active_ttl_s == 300
    assert Settings(session_ttl_s=100).active_ttl_s == 100
    assert Settings(active_ttl_s=90, not_a_setting=1).active_ttl_s == 90


def test_lists_and_objects_come_as_text(settings_env: Callable[..., None]) -> None:
    settings_env(CORS_ALLOW_ORIGINS="https://a.example, https://b.example/",
                 MODEL_METADATA='{"m": {"context_length": 5}}', ALLOWED_MODELS="a, b,,c")
    settings = get_settings()
    assert settings.cors_allow_origins == ["https://a.example", "https://b.example"]
    assert settings.model_metadata == {"m": {"context_length": 5}}
    assert settings.allowed_model_names == {"a", "b", "c"}
    settings_env(CORS_ALLOW_ORIGINS='["https://c.example"]', MODEL_METADATA="")
    assert get_settings().cors_allow_origins == ["https://c.example"]
    assert get_settings().model_metadata == {}


def test_defaults_are_validated_and_unknown_variables_ignored(settings_env: Callable[..., None]) -> None:
    settings_env(NOT_A_SETTING="x", MODEL_CONFIG="x")
    settings = get_settings()
    assert settings.trusted_proxy_networks == ()
    assert settings.jwt_secret is None
