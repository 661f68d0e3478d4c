"""Text turns through one checkout's runner app, in this process: what `instructions_bench`
runs under callgrind. Run as a script (`python bench/turn_driver.py TURNS`), so another
checkout's code is driven too: `TREE` names it, and the environment points it at the
bench's Redis and stub upstream.

The runner's app (`local_runner.app.build_app`, every function's middleware and routes)
gets `WARM_TURNS` turns, then `TURNS` more, over `USERS` anonymous cookie users with a
session each, every message different (as the peers bench sends them), through
`httpx.ASGITransport`: no sockets between client and app, so the count is the turn's work
and the client's, not the kernel's.
"""

from __future__ import annotations

import asyncio
import os
import sys

WARM_TURNS = 300
USERS = 50
# The peers bench's persona; any line will do, each turn numbers it.
PERSONA = "밝고 다정한 바리스타 민지. 손님의 이야기를 잘 들어 주고, 비 오는 날을 좋아한다."
LINE = "오늘 비가 와서 그런지 따뜻한 라떼가 생각나. 너는 비 오는 날 뭐 마시고 싶어?"


async def drive(turns: int) -> None:
    import httpx

    from local_runner.app import build_app
    from roleplay.core.settings import get_settings
    from roleplay.web.anonymous_client import signed_cookie

    secret, name = os.environ["ANON_COOKIE_SECRET"].encode(), get_settings().anon_cookie_name
    cookies = [f"{name}={signed_cookie(secret, f'driver{n}')}" for n in range(USERS)]
    transport = httpx.ASGITransport(app=build_app(), client=("127.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://runner") as client:
        for n in range(WARM_TURNS + turns):
            user = n % USERS
            answer = await client.post("/api/chat", headers={"cookie": cookies[user]}, json={
                "session_id": f"driver-{user}", "persona": PERSONA, "max_tokens": 128,
                "tts_enabled": False, "messages": [{"role": "user", "content": f"{n}. {LINE}"}]})
            if answer.status_code != 200:
                raise SystemExit(f"turn {n}: {answer.status_code} {answer.text[:300]}")


if __name__ == "__main__":
    tree = os.environ["TREE"]
    sys.path[:0] = [tree, os.path.join(tree, "layers", "roleplay", "python")]
    asyncio.run(drive(int(sys.argv[1])))
