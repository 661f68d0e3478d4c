"""Metrics under one set of names: Prometheus locally, CloudWatch Embedded Metric Format on Lambda.

Code anywhere calls `observe`, `inc` or `set_gauge`. In the local runner they land in
prometheus-client's registry, which `GET /metrics` exposes. On Lambda a scrape cannot
reach the function, so the same names are written as EMF lines (a JSON log line with
an `_aws` block that CloudWatch turns into metrics), one line per request. Plain EMF
rather than Powertools: it is forty lines here, where Powertools would add a package
and its import time to every cold start for the same JSON. `METRICS_ENABLED=0` turns
both off (the bench measures what they cost).
"""

from __future__ import annotations

import json
import os
import sys
import time
from functools import lru_cache
from typing import Any, Protocol

from roleplay.core import request_context
from roleplay.core.settings import get_settings

NAMESPACE = "ServerB"
PREFIX = "serverb_"

# name -> (help, label names, unit for EMF)
HISTOGRAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "turn_seconds": ("A chat turn, from request to the reply stored", ()),
    "upstream_seconds": ("One call to Server A (the LLM or speech)", ("upstream",)),
    "ttft_seconds": ("Time to the first token of a streamed reply", ()),
    "first_audio_seconds": ("Time to the first audio of a spoken reply", ()),
    "summary_seconds": ("One summary job", ()),
    "redis_seconds": ("One Redis script round trip", ()),
}
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "requests_total": ("HTTP requests answered", ("route", "status")),
    "turns_total": ("Chat turns answered", ()),
    "errors_total": ("Error answers, by error code", ("code",)),
    "admissions_total": ("Concurrent-user admissions, admitted or refused", ("result",)),
    "summaries_total": ("Summary jobs, by outcome", ("outcome",)),
    "dropped_messages_total": ("Messages left out of a prompt because even a summary could not fit it", ()),
    "speech_failures_total": ("Replies or sentences whose speech failed", ()),
    "memory_recalls_total": ("Turns whose prompt recalled episodes from memory, by ranker",
                             ("ranked_by",)),
    "memory_embedding_failures_total": ("Embedding calls for memory that failed (ranked "
                                        "lexically, or left without a vector)", ()),
}
GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "active_users": ("Users holding a place under the concurrent-user cap", ()),
}
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class _Backend(Protocol):
    def observe(self, name: str, value: float, labels: dict[str, str]) -> None: ...

    def inc(self, name: str, amount: float, labels: dict[str, str]) -> None: ...

    def set_gauge(self, name: str, value: float) -> None: ...


class _Off:
    def observe(self, name: str, value: float, labels: dict[str, str]) -> None:
        return None

    def inc(self, name: str, amount: float, labels: dict[str, str]) -> None:
        return None

    def set_gauge(self, name: str, value: float) -> None:
        return None


class _Prometheus:
    def __init__(self) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        def made(kind: Any, name: str, help_text: str, labels: tuple[str, ...], **extra: Any) -> Any:
            existing = REGISTRY._names_to_collectors.get(PREFIX + name)  # re-created settings
            return existing or kind(PREFIX + name, help_text, labels, **extra)

        self.metrics: dict[str, Any] = {}
        for name, (help_text, labels) in HISTOGRAMS.items():
            self.metrics[name] = made(Histogram, name, help_text, labels, buckets=BUCKETS)
        for name, (help_text, labels) in COUNTERS.items():
            self.metrics[name] = made(Counter, name.removesuffix("_total"), help_text, labels)
        for name, (help_text, labels) in GAUGES.items():
            self.metrics[name] = made(Gauge, name, help_text, labels)

    def _child(self, name: str, labels: dict[str, str]) -> Any:
        metric = self.metrics[name]
        return metric.labels(**labels) if labels else metric

    def observe(self, name: str, value: float, labels: dict[str, str]) -> None:
        self._child(name, labels).observe(value)

    def inc(self, name: str, amount: float, labels: dict[str, str]) -> None:
        self._child(name, labels).inc(amount)

    def set_gauge(self, name: str, value: float) -> None:
        self.metrics[name].set(value)


class _EmbeddedMetricFormat:
    """Collects a request's metrics and writes them as one EMF line when it ends."""

    def observe(self, name: str, value: float, labels: dict[str, str]) -> None:
        self._add(name, value, "Seconds", labels)

    def inc(self, name: str, amount: float, labels: dict[str, str]) -> None:
        self._add(name, amount, "Count", labels)

    def set_gauge(self, name: str, value: float) -> None:
        self._add(name, value, "Count", {})

    def _add(self, name: str, value: float, unit: str, labels: dict[str, str]) -> None:
        record = request_context.current()
        entry = (name, value, unit, labels)
        if record is None:
            write_emf([entry])
        else:
            record.metrics.append(entry)


def write_emf(entries: list[tuple[str, float, str, dict[str, str]]]) -> None:
    """One EMF document per set of dimensions; values of one name become a list."""
    if not entries:
        return
    function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "local")
    groups: dict[tuple[tuple[str, str], ...], dict[str, tuple[str, list[float]]]] = {}
    for name, value, unit, labels in entries:
        metrics = groups.setdefault(tuple(sorted(labels.items())), {})
        metrics.setdefault(PREFIX + name, (unit, []))[1].append(value)
    for dimension_pairs, metrics in groups.items():
        dimensions = ["function", *(key for key, _ in dimension_pairs)]
        document: dict[str, Any] = {
            "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [{
                "Namespace": NAMESPACE, "Dimensions": [dimensions],
                "Metrics": [{"Name": name, "Unit": unit} for name, (unit, _) in metrics.items()]}]},
            "function": function, **dict(dimension_pairs),
            **{name: values if len(values) > 1 else values[0] for name, (_, values) in metrics.items()}}
        sys.stdout.write(json.dumps(document, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def on_lambda() -> bool:
    return "AWS_LAMBDA_FUNCTION_NAME" in os.environ


@lru_cache(maxsize=2)
def _backend_for(enabled: bool, lambda_: bool) -> _Backend:
    if not enabled:
        return _Off()
    if lambda_:
        return _EmbeddedMetricFormat()
    try:
        return _Prometheus()
    except ImportError:  # a deploy without prometheus-client: nothing to expose anyway
        return _Off()


def _backend() -> _Backend:
    return _backend_for(get_settings().metrics_enabled, on_lambda())


def observe(name: str, seconds: float, **labels: str) -> None:
    _backend().observe(name, seconds, labels)


def inc(name: str, amount: float = 1, **labels: str) -> None:
    _backend().inc(name, amount, labels)


def set_gauge(name: str, value: float) -> None:
    _backend().set_gauge(name, value)


def exposition() -> tuple[bytes, str]:
    """The Prometheus text format of every metric, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    _backend()  # make sure every metric exists, even before its first use
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
