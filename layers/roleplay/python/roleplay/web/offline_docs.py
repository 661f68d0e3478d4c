"""`/docs` (Swagger UI) from files on this machine, never from a CDN.

There is no ReDoc page: its bundle always loads a logo from its CDN.

The JavaScript and CSS come from the `fastapi-offline` package (the local runner's
`local` extra), found with `find_spec` only when a docs page is asked for: a Lambda
cold start never looks for it, and where it is not installed the pages say so.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from roleplay.core.errors import ApiError

ASSETS_PACKAGE = "fastapi_offline"
ASSETS = {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}
ASSET_PATH = "/docs/assets"


class DocsAssetsMissing(ApiError):
    status_code = 404
    code = "docs_unavailable"


@lru_cache(maxsize=1)
def assets_dir() -> Path:
    spec = importlib.util.find_spec(ASSETS_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(location) / "static"
        if all((folder / name).is_file() for name in ASSETS):
            return folder
    raise DocsAssetsMissing(
        "the API docs' assets are not installed (PyPI: fastapi-offline); the schema is at "
        "/openapi.json")


def add_offline_docs(app: FastAPI) -> None:
    """Adds the page to an app built with `docs_url=None, redoc_url=None`."""

    def page_urls(request: Request) -> tuple[str, str]:
        root = request.scope.get("root_path", "").rstrip("/")
        return f"{root}{app.openapi_url}", f"{root}{ASSET_PATH}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        assets_dir()
        openapi_url, assets = page_urls(request)
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} — API docs",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png")

    @app.get(ASSET_PATH + "/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise DocsAssetsMissing(f"no docs asset {name!r}")
        return FileResponse(assets_dir() / name, headers={"Cache-Control": "public, max-age=86400"})
