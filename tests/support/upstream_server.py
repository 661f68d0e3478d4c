"""A small real HTTP server in a thread, standing in for Server A in unit tests.

Error paths (an upstream that answers 500, garbage, or nothing at all) are hard to
get from a real model server on demand; this serves any ASGI app on a free port.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(app: Any, **config: Any) -> Iterator[str]:
    """Serves `app` until the block ends; yields its base URL. `config`: more of uvicorn's
    settings (`timeout_keep_alive`, ...)."""
    port = free_port()
    # proxy_headers off, as in the local runner: TRUSTED_PROXIES decides whom to believe
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                          lifespan="off", proxy_headers=False, **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test upstream did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)


@contextmanager
def silent_socket() -> Iterator[str]:
    """A port that accepts connections and never answers: an upstream that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def closed_port_url() -> str:
    """A URL nothing listens on: an upstream that is down."""
    return f"http://127.0.0.1:{free_port()}"
