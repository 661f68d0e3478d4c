"""Reads a Server-Sent Events body into (event, data) pairs."""

from __future__ import annotations

import json
from typing import Any


def sse_events(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events
