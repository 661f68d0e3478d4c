"""The built streaming chat (ChatStreamFunction) run as the Lambda Web Adapter runs it:
its `run.sh`, with `python` being Python 3.12 and the layers on PYTHONPATH as on /opt/python."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from infra.sam_build import layer_paths, python312


def _command_env(build: Path, env: dict[str, str], scratch: Path) -> tuple[list[str], dict[str, str]]:
    bin_dir = scratch / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "python").exists():
        (bin_dir / "python").symlink_to(python312())
    folder = build / "ChatStreamFunction"
    layers = ":".join(str(path) for path in layer_paths("chat", build))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    full = {**env, "PATH": f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
            "PYTHONPATH": layers, "LAMBDA_TASK_ROOT": str(folder), "PORT": str(port),
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1"}
    return ["sh", str(folder / "run.sh")], full


@contextmanager
def run_stream_app(build: Path, env: dict[str, str], scratch: Path
                   ) -> Iterator[tuple[str, httpx.Client]]:
    """Starts it; yields its URL and an HTTP client once it answers."""
    command, full = _command_env(build, env, scratch)
    url = f"http://127.0.0.1:{full['PORT']}"
    log = scratch / "stream-app.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=build / "ChatStreamFunction", env=full,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(timeout=10) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    http.get(f"{url}/docs")
                    break
                except httpx.TransportError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"the stream app did not start:\n{log.read_text()}") from None
                    time.sleep(0.2)
            yield url, http
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, 9)


def start_failure(build: Path, env: dict[str, str], scratch: Path) -> str:
    """Starts it expecting it to refuse; answers what it printed."""
    command, full = _command_env(build, env, scratch)
    done = subprocess.run(command, cwd=build / "ChatStreamFunction", env=full,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, done.stdout + done.stderr
    return done.stdout + done.stderr
