"""A function's cold start: the cyclic garbage collector paused while its handler is imported.

Importing a handler builds 70,000-120,000 objects the collector tracks (modules, classes,
pydantic validators, routes), nearly all of them for the life of the process, and the
collector walks them again and again while they are built: generation 0 some 130 times,
generation 1 a dozen, a full collection once, 40-60 ms of a 300-450 ms cold start on the
bench's machine (issue 30), for under a thousand objects of garbage.

CPython's pattern for a heap that lives as long as its process (`gc.freeze`'s
documentation): disable the collector early, freeze, enable. A handler's module imports
this module before anything else, which pauses the collector, and calls
`handler_imported()` last, which moves everything the import built to the permanent
generation (no later collection walks it, as `roleplay.ops.heap` does once the first
request is answered) and resumes collecting. The import's few cycles of garbage stay,
a one-time few kilobytes.

FastAPI asks of every route's models whether they subclass pydantic v1's `BaseModel`,
importing `pydantic.v1` to ask (14 ms of a cold start, the first route's). No model here
is a v1 model, and FastAPI answers "no" at once where `pydantic.v1` cannot be imported
(its own path for Pythons without it), so this module marks it absent (`sys.modules`'s
None, the import system's own mark) unless something imported it already.

httpx imports its command line (`httpx._main`) to offer `httpx.main`, and with it click
(7 ms), which the layer holds for uvicorn; the import then fails on rich, which it does
not hold, and httpx falls back to a `main` that says to install `httpx[cli]`. This
module marks `httpx._main` absent the same way, so httpx takes that fallback at once.

FastAPI's OpenAPI models (`fastapi.openapi.models`, 70-120 ms) are built on first use, not
while FastAPI is imported: `deferred_openapi_models`.

Only the first import of this module pauses, and only its `handler_imported()` resumes:
in the local runner or a test run, which import several handlers, the later ones find
the collector running and leave it so. A handler whose import raises leaves it paused;
Lambda then starts the process again.
"""

from __future__ import annotations

import gc
import sys

from roleplay.web import deferred_openapi_models

_paused: list[bool] = [gc.isenabled()]
"""[True] while this module holds the collector paused."""
if _paused[0]:
    gc.disable()
for _unused in ("pydantic.v1", "httpx._main"):
    sys.modules.setdefault(_unused, None)  # type: ignore[arg-type]
deferred_openapi_models.install()


def handler_imported() -> None:
    """Freezes what the handler's import built and resumes the collector, if this module
    paused it; nothing otherwise."""
    deferred_openapi_models.uninstall()
    if _paused[0]:
        _paused[0] = False
        gc.freeze()
        gc.enable()


def paused() -> bool:
    """Whether the collector is paused for a handler's import now."""
    return _paused[0]
