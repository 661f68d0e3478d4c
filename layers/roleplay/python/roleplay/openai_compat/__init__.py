"""OpenAI's API over our characters, sessions and voices (`/v1/...`, issue 19).

Any OpenAI client (SDKs, SillyTavern, Open WebUI) talks to Server B with only a base
URL change: `character/<id>` models get the character's persona and the session's
memory through the same turn as `/api/chat`; plain model names pass through to the
upstream; `/v1/audio/speech` speaks with our voices.
"""
