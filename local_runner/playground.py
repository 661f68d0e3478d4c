"""The playground page at `/`: plain HTML, CSS and JavaScript from `playground/`, no build
step and nothing from a CDN. It is the reference client for frontend developers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

PAGE_DIR = Path(__file__).resolve().parent / "playground"
FILES = {"index.html", "playground.css", "playground.js", "api.js"}
# Served fresh: a frontend developer reads and edits these while the server runs.
NO_CACHE = {"Cache-Control": "no-cache"}


def add_playground(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE_DIR / "index.html", headers=NO_CACHE)

    for name in sorted(FILES - {"index.html"}):
        app.add_api_route(f"/{name}", _file_endpoint(PAGE_DIR / name), methods=["GET"],
                          include_in_schema=False)


def _file_endpoint(path: Path) -> Callable[[], Awaitable[FileResponse]]:
    media_type = "text/javascript" if path.suffix == ".js" else None

    async def serve() -> FileResponse:
        return FileResponse(path, media_type=media_type, headers=NO_CACHE)

    return serve
