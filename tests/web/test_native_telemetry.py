"""FastAPI's own OpenTelemetry is decided once, when a function's app is built: off while
no provider is set (FastAPI would ask the providers on every request), FastAPI's defaults
as soon as one is, or when FastAPI is told to configure exporters itself."""

from __future__ import annotations

import pytest
from opentelemetry import trace

from roleplay.web.function_app import native_telemetry

OFF = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def test_without_a_provider_fastapis_telemetry_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASTAPI_OTEL_AUTO_CONFIGURE", raising=False)
    assert native_telemetry() == OFF


def test_a_provider_set_before_the_app_keeps_fastapis_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASTAPI_OTEL_AUTO_CONFIGURE", raising=False)
    monkeypatch.setattr(trace, "get_tracer_provider", trace.NoOpTracerProvider)
    assert native_telemetry() == {}


def test_fastapis_auto_configuration_keeps_its_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_OTEL_AUTO_CONFIGURE", "true")
    assert native_telemetry() == {}
