"""/docs loads every script and style from this server, never a CDN."""

import re

from fastapi.testclient import TestClient


def test_docs_pages_reference_only_local_assets(client: TestClient) -> None:
    html = client.get("/docs").text
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", html)
    for url in re.findall(r"(?:src|href)=['\"]([^'\"]+)['\"]", html):
        assert client.get(url).status_code == 200, url
    assert client.get("/redoc").status_code == 404  # ReDoc's bundle loads a logo from its CDN


def test_docs_assets_are_served_and_others_are_not(client: TestClient) -> None:
    js = client.get("/docs/assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    missing = client.get("/docs/assets/..%2Fcore.py")
    assert missing.status_code == 404 and missing.json()["error"]["code"] in {"docs_unavailable",
                                                                              "not_found"}


def test_a_function_app_finds_no_docs_assets_until_a_page_is_asked_for() -> None:
    import subprocess
    import sys

    code = ("import sys; import functions.chat.app; "
            "print('fastapi_offline' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": ".:layers/roleplay/python", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "False"
