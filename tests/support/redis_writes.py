"""What redis-py's connections send, write by write: a pipeline or a script is one write
(one round trip), as it crosses the network once."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection


def record_writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write from now on (until `monkeypatch.undo()`), as the bytes it sent."""
    sent: list[bytes] = []
    send = AbstractConnection.send_packed_command

    async def recording(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        parts = [command] if isinstance(command, bytes | str) else list(command)
        sent.append(b"".join(p.encode() if isinstance(p, str) else bytes(p) for p in parts))
        await send(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", recording)
    return sent


def command_name(write: bytes) -> str:
    """The write's first command (a pipeline's or a script's: `EVALSHA`)."""
    return write.split(b"\r\n")[2].decode()
